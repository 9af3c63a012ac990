package agent

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/vnsnap/vnsnap/cluster/clusterpb"
	"github.com/vnsnap/vnsnap/core"
	"github.com/vnsnap/vnsnap/internal/durable"
	"github.com/vnsnap/vnsnap/realbackend/hv"
)

// TestLeaseExpiryResumesVMs: a snapshot whose coordinator stops renewing
// its lease ends on the agent's clock alone: the save held at its snapshot
// point is cancelled, its partial directory removed, every VM put on the
// snapshot's epoch and resumed. Renewals keep it alive until then.
func TestLeaseExpiryResumesVMs(t *testing.T) {
	ctx := testCtx(t)
	clk := newManualClock()
	expired := make(chan error, 1)
	a := newAgent(t, "h1", fakeHV{}, clk)
	a.cfg.OnLeaseExpired = func(snap string, err error) { expired <- err }
	setupFake(t, ctx, a)
	dir := testCerts(t, "h1")
	c := client(t, serve(t, a, dir, "h1"), "h1", load(t, dir, "coordinator"))

	if _, err := c.BeginSnapshot(ctx, &clusterpb.LeaseRequest{Call: call("begin", 1), Snapshot: "s1", TtlMillis: 1000}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.PauseVM(ctx, &clusterpb.VMRequest{Call: call("pause-b", 1), Vm: 1}); err != nil {
		t.Fatal(err)
	}
	stream, err := c.SaveVM(ctx, &clusterpb.SaveVMRequest{Call: call("save-a", 1), Vm: 0, Snapshot: "s1", Live: true, ColourEpoch: 1, Hold: true})
	if err != nil {
		t.Fatal(err)
	}
	var passes []int32
	for {
		ev, err := stream.Recv()
		if err != nil {
			t.Fatalf("save stream before the snapshot point: %v", err)
		}
		if p := ev.GetPass(); p != nil {
			passes = append(passes, p.N)
		}
		if sp := ev.GetSnapshotPoint(); sp != nil {
			if sp.Epoch != 1 {
				t.Errorf("snapshot point epoch = %d, want 1", sp.Epoch)
			}
			break
		}
	}
	if len(passes) != 2 || passes[0] != 1 || passes[1] != 2 {
		t.Errorf("passes = %v, want [1 2]", passes)
	}
	if run, _, _ := fakeOf(a, 0).state(); run {
		t.Fatal("vm a runs at its snapshot point")
	}

	clk.Advance(600 * time.Millisecond)
	if _, err := c.RenewLease(ctx, &clusterpb.LeaseRequest{Call: call("renew-1", 1), Snapshot: "s1", TtlMillis: 1000}); err != nil {
		t.Fatal(err)
	}
	clk.Advance(600 * time.Millisecond) // 1.2 s after the start, 0.6 s after the renewal
	select {
	case err := <-expired:
		t.Fatalf("lease expired 0.6 s after a renewal of 1 s: %v", err)
	default:
	}
	if _, err := os.Stat(a.snapshotDir("s1")); err != nil {
		t.Fatalf("snapshot directory during the lease: %v", err)
	}

	clk.Advance(500 * time.Millisecond) // 1.1 s after the renewal: Advance runs the expiry
	select {
	case err := <-expired:
		if err != ErrLeaseExpired {
			t.Errorf("expiry err = %v, want ErrLeaseExpired alone", err)
		}
	default:
		t.Fatal("lease did not expire 1.1 s after its last renewal")
	}
	for vm := int32(0); vm < 2; vm++ {
		if run, _, _ := fakeOf(a, vm).state(); !run {
			t.Errorf("vm %d paused after the lease expired", vm)
		}
		if e, _ := a.Switch().Epoch(core.VMID(vm)); e != 1 {
			t.Errorf("vm %d on epoch %d after expiry, want the snapshot's epoch 1", vm, e)
		}
	}
	if _, err := stream.Recv(); status.Code(err) != codes.Canceled {
		t.Errorf("held save after expiry: err = %v, want Canceled", err)
	}
	if _, err := os.Stat(a.snapshotDir("s1")); !os.IsNotExist(err) {
		t.Errorf("partial snapshot directory after expiry: stat err = %v, want not exist", err)
	}
	if _, err := c.RenewLease(ctx, &clusterpb.LeaseRequest{Call: call("renew-2", 1), Snapshot: "s1", TtlMillis: 1000}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("renewal after expiry: err = %v, want FailedPrecondition", err)
	}

	// The next snapshot succeeds.
	if _, err := c.BeginSnapshot(ctx, &clusterpb.LeaseRequest{Call: call("begin-2", 2), Snapshot: "s2", TtlMillis: 1000}); err != nil {
		t.Fatal(err)
	}
	saved := saveAll(t, c, &clusterpb.SaveVMRequest{Call: call("save-a2", 2), Vm: 0, Snapshot: "s2", Live: true, ColourEpoch: 2})
	if _, err := c.EndSnapshot(ctx, &clusterpb.EndSnapshotRequest{Call: call("end-2", 2), Snapshot: "s2", Commit: true}); err != nil {
		t.Fatal(err)
	}
	st, err := c.ImageStatus(ctx, &clusterpb.ImageRef{Snapshot: "s2", Vm: "a"})
	if err != nil || !st.Complete || st.Sha256 != saved.Sha256 || st.Size != saved.Bytes {
		t.Errorf("image of the committed snapshot: %v, %v; want complete, sha %s, %d bytes", st, err, saved.Sha256, saved.Bytes)
	}
	clk.Advance(time.Hour) // the committed snapshot's lease has ended: nothing expires
	select {
	case err := <-expired:
		t.Errorf("a committed snapshot's lease expired: %v", err)
	default:
	}
	if _, err := os.Stat(filepath.Join(a.snapshotDir("s2"), "a.img")); err != nil {
		t.Error(err)
	}
}

// saveAll runs a save to its end and returns its Saved event.
func saveAll(t *testing.T, c clusterpb.AgentClient, r *clusterpb.SaveVMRequest) *clusterpb.Saved {
	t.Helper()
	stream, err := c.SaveVM(testCtx(t), r)
	if err != nil {
		t.Fatal(err)
	}
	for {
		ev, err := stream.Recv()
		if err != nil {
			t.Fatalf("save of vm %d: %v", r.Vm, err)
		}
		if s := ev.GetSaved(); s != nil {
			return s
		}
	}
}

// TestRestartCleansPartialSnapshots: an agent started on the state of one
// that crashed removes the snapshot directories it provably made and never
// committed (its marker naming them, or nothing but what a crash while
// making one leaves) and keeps everything else: committed snapshots,
// received images, and directories it cannot prove are its own.
func TestRestartCleansPartialSnapshots(t *testing.T) {
	state := shortTemp(t)
	mk := func(p, data string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	snap := func(name string) string { return filepath.Join(state, "snapshots", name) }
	mk(filepath.Join(snap("crashed"), "a.img.part"), "half")
	mk(filepath.Join(snap("crashed"), ownerMarker), ownerLine("crashed"))
	mk(filepath.Join(snap("crashed-too"), "a.img"), "whole but never committed")
	mk(filepath.Join(snap("crashed-too"), ownerMarker), ownerLine("crashed-too"))
	mk(filepath.Join(snap("marker-cut"), ownerMarker), ownerLine("marker-cut")[:9]) // crashed while writing it
	if err := os.MkdirAll(snap("empty"), 0o700); err != nil {                       // crashed before the marker
		t.Fatal(err)
	}
	mk(filepath.Join(snap("kept"), "a.img"), "whole")
	mk(filepath.Join(snap("kept"), ownerMarker), ownerLine("kept"))
	mk(filepath.Join(snap("kept"), completeMarker), "")
	mk(filepath.Join(snap("unmarked"), "a.img"), "someone's data, no marker")
	mk(filepath.Join(snap("other-name"), "a.img.part"), "a marker naming another snapshot")
	mk(filepath.Join(snap("other-name"), ownerMarker), ownerLine("crashed"))
	mk(filepath.Join(snap("cut-not-alone"), "notes.txt"), "a marker cut short beside other files")
	mk(filepath.Join(snap("cut-not-alone"), ownerMarker), ownerLine("cut-not-alone")[:5])
	mk(filepath.Join(snap("marker-dir"), ownerMarker, "x"), "a directory named like the marker")
	if err := os.Symlink(filepath.Join(snap("crashed"), ownerMarker), filepath.Join(state, "link-target")); err != nil {
		t.Fatal(err)
	}
	mk(filepath.Join(snap("marker-link"), "a.img.part"), "a marker that is a symbolic link")
	if err := os.Symlink(filepath.Join(state, "link-target"), filepath.Join(snap("marker-link"), ownerMarker)); err != nil {
		t.Fatal(err)
	}
	mk(filepath.Join(state, "images", "moved", "a.img.part"), "resumable")
	_, removed, err := New(Config{Host: "h1", State: state, Hypervisor: fakeHV{}})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{snap("crashed"), snap("crashed-too"), snap("empty"), snap("marker-cut")}
	if diff := cmp.Diff(want, removed); diff != "" {
		t.Errorf("removed (-want +got):\n%s", diff)
	}
	for p, want := range map[string]bool{
		"snapshots/crashed": false, "snapshots/crashed-too": false, "snapshots/empty": false, "snapshots/marker-cut": false,
		"snapshots/kept/a.img": true, "snapshots/unmarked/a.img": true, "snapshots/other-name/a.img.part": true,
		"snapshots/cut-not-alone/notes.txt": true, "snapshots/marker-dir/AGENT/x": true,
		"snapshots/marker-link/a.img.part": true, "images/moved/a.img.part": true,
	} {
		_, err := os.Stat(filepath.Join(state, p))
		if got := err == nil; got != want {
			t.Errorf("%s exists = %v, want %v", p, got, want)
		}
	}
}

// TestBeginSnapshotKeepsForeignDirectory: BeginSnapshot replaces the
// debris of an aborted attempt of its own, but refuses a directory of the
// snapshot's name it did not make, leaving it whole.
func TestBeginSnapshotKeepsForeignDirectory(t *testing.T) {
	ctx := testCtx(t)
	a := newAgent(t, "h1", fakeHV{}, newManualClock())
	foreign := filepath.Join(a.snapshotDir("s1"), "data")
	if err := os.MkdirAll(filepath.Dir(foreign), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(foreign, []byte("not the agent's"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := a.BeginSnapshot(ctx, &clusterpb.LeaseRequest{Call: call("begin-1", 1), Snapshot: "s1", TtlMillis: 1000})
	if status.Code(err) != codes.FailedPrecondition {
		t.Errorf("BeginSnapshot over a foreign directory: %v, want FailedPrecondition", err)
	}
	if b, err := os.ReadFile(foreign); err != nil || string(b) != "not the agent's" {
		t.Errorf("the foreign directory's file after BeginSnapshot: %q, %v", b, err)
	}

	// Its own aborted attempt's debris (a discard that could not remove
	// it) is replaced.
	debris := filepath.Join(a.snapshotDir("s2"), "a.img.part")
	if err := os.MkdirAll(filepath.Dir(debris), 0o700); err != nil {
		t.Fatal(err)
	}
	for p, data := range map[string]string{debris: "half", filepath.Join(a.snapshotDir("s2"), ownerMarker): ownerLine("s2")} {
		if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := a.BeginSnapshot(ctx, &clusterpb.LeaseRequest{Call: call("begin-2", 1), Snapshot: "s2", TtlMillis: 1000}); err != nil {
		t.Fatalf("BeginSnapshot over its own debris: %v", err)
	}
	if _, err := os.Stat(debris); !os.IsNotExist(err) {
		t.Errorf("debris of the aborted attempt: stat err %v, want not exist", err)
	}
}

// TestCommitIsDurable: every step that a reply reports done is followed by
// an fsync of the directory that holds it: the snapshot directory's
// creation (in snapshots/), the image's rename, and the COMPLETE marker's
// rename at commit, each seen by the sync that comes after it.
func TestCommitIsDurable(t *testing.T) {
	ctx := testCtx(t)
	a := newAgent(t, "h1", fakeHV{}, newManualClock())
	setupFake(t, ctx, a)
	type synced struct {
		dir                 string
		snap, image, commit bool // what existed when dir was synced
	}
	var mu sync.Mutex
	var syncs []synced
	exists := func(p string) bool { _, err := os.Lstat(p); return err == nil }
	dir := a.snapshotDir("s1")
	a.syncDir = func(d string) error {
		mu.Lock()
		syncs = append(syncs, synced{d, exists(dir), exists(filepath.Join(dir, "a.img")), exists(filepath.Join(dir, completeMarker))})
		mu.Unlock()
		return durable.SyncDir(d)
	}
	certs := testCerts(t, "h1")
	c := client(t, serve(t, a, certs, "h1"), "h1", load(t, certs, "coordinator"))
	if _, err := c.BeginSnapshot(ctx, &clusterpb.LeaseRequest{Call: call("begin", 1), Snapshot: "s1", TtlMillis: 60_000}); err != nil {
		t.Fatal(err)
	}
	saveAll(t, c, &clusterpb.SaveVMRequest{Call: call("save-a", 1), Vm: 0, Snapshot: "s1", Live: true, ColourEpoch: 1})
	if _, err := c.EndSnapshot(ctx, &clusterpb.EndSnapshotRequest{Call: call("end", 1), Snapshot: "s1", Commit: true}); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	var made, imaged, committed bool
	for _, s := range syncs {
		made = made || s.dir == snapshotsDir(a.cfg.State) && s.snap
		imaged = imaged || s.dir == dir && s.image
		committed = committed || s.dir == dir && s.commit
	}
	if !made || !imaged || !committed {
		t.Errorf("directory syncs %+v: snapshots/ after s1 was made %v, s1 after a.img %v, s1 after COMPLETE %v; want all",
			syncs, made, imaged, committed)
	}
}

// TestLatePauseAfterExpiryRefused: once a lease has run out, its epoch is
// over: a PauseVM of that epoch (the dead coordinator's, arriving late) is
// refused and the VM keeps running, while a retry of a pause done before
// the expiry gets its first answer without pausing again, and the next
// epoch's calls are served.
func TestLatePauseAfterExpiryRefused(t *testing.T) {
	ctx := testCtx(t)
	clk := newManualClock()
	a := newAgent(t, "h1", fakeHV{}, clk)
	setupFake(t, ctx, a)
	if _, err := a.BeginSnapshot(ctx, &clusterpb.LeaseRequest{Call: call("begin", 1), Snapshot: "s1", TtlMillis: 1000}); err != nil {
		t.Fatal(err)
	}
	pauseB := &clusterpb.VMRequest{Call: call("pause-b", 1), Vm: 1}
	if _, err := a.PauseVM(ctx, pauseB); err != nil {
		t.Fatal(err)
	}
	clk.Advance(1100 * time.Millisecond) // the expiry resumes b
	if _, err := a.PauseVM(ctx, &clusterpb.VMRequest{Call: call("late-pause-a", 1), Vm: 0}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("PauseVM of the expired epoch: %v, want FailedPrecondition", err)
	}
	if _, err := a.PauseVM(ctx, pauseB); err != nil {
		t.Errorf("retry of a pause done before the expiry: %v, want its first answer", err)
	}
	for vm := int32(0); vm < 2; vm++ {
		if run, pauses, _ := fakeOf(a, vm).state(); !run || pauses != int(vm) {
			t.Errorf("vm %d: running %v after %d pauses; want running after %d", vm, run, pauses, vm)
		}
	}
	if _, err := a.PauseVM(ctx, &clusterpb.VMRequest{Call: call("pause-a-2", 2), Vm: 0}); err != nil {
		t.Errorf("PauseVM of the next epoch: %v", err)
	}
	if run, _, _ := fakeOf(a, 0).state(); run {
		t.Error("vm a runs after a pause of the next epoch")
	}
}

// gateHV runs fake machines whose Pause, once armed, waits for the test.
type gateHV struct {
	fakeHV
	entered, release chan struct{}
}

func (h gateHV) Start(ctx context.Context, s hv.MachineSpec) (hv.Machine, error) {
	m, _ := h.fakeHV.Start(ctx, s)
	return &gateMachine{fakeMachine: m.(*fakeMachine), h: h}, nil
}

type gateMachine struct {
	*fakeMachine
	h     gateHV
	armed atomic.Bool
}

func (m *gateMachine) Pause(ctx context.Context) error {
	if m.armed.Load() {
		m.h.entered <- struct{}{}
		<-m.h.release
	}
	return m.fakeMachine.Pause(ctx)
}

// TestPauseOvertakenByExpiry: a PauseVM that passed the epoch fence but
// whose pause takes hold only after the lease ran out (and the expiry
// resumed every VM) resumes the VM itself and is refused: no VM is left
// paused for a coordinator that is gone.
func TestPauseOvertakenByExpiry(t *testing.T) {
	ctx := testCtx(t)
	clk := newManualClock()
	h := gateHV{entered: make(chan struct{}), release: make(chan struct{})}
	a := newAgent(t, "h1", h, clk)
	setupFake(t, ctx, a)
	if _, err := a.BeginSnapshot(ctx, &clusterpb.LeaseRequest{Call: call("begin", 1), Snapshot: "s1", TtlMillis: 1000}); err != nil {
		t.Fatal(err)
	}
	m := a.Machine(0).(*gateMachine)
	m.armed.Store(true)
	done := make(chan error, 1)
	go func() {
		_, err := a.PauseVM(ctx, &clusterpb.VMRequest{Call: call("pause-a", 1), Vm: 0})
		done <- err
	}()
	<-h.entered                          // past the fence, not yet paused
	clk.Advance(1100 * time.Millisecond) // the expiry runs whole: fence, resume
	close(h.release)
	if err := <-done; status.Code(err) != codes.FailedPrecondition {
		t.Errorf("PauseVM overtaken by the expiry: %v, want FailedPrecondition", err)
	}
	if run, _, _ := m.state(); !run {
		t.Error("vm a left paused by a pause the expiry overtook")
	}
}
