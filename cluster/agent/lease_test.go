package agent

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/vnsnap/vnsnap/cluster/clusterpb"
	"github.com/vnsnap/vnsnap/core"
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
// that crashed removes the snapshot directories never committed and keeps
// the committed ones and received images.
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
	mk(filepath.Join(state, "snapshots", "crashed", "a.img.part"), "half")
	mk(filepath.Join(state, "snapshots", "crashed-too", "a.img"), "whole but never committed")
	mk(filepath.Join(state, "snapshots", "kept", "a.img"), "whole")
	mk(filepath.Join(state, "snapshots", "kept", completeMarker), "")
	mk(filepath.Join(state, "images", "moved", "a.img.part"), "resumable")
	_, removed, err := New(Config{Host: "h1", State: state, Hypervisor: fakeHV{}})
	if err != nil {
		t.Fatal(err)
	}
	if len(removed) != 2 {
		t.Errorf("removed %v, want the two partial snapshots", removed)
	}
	for p, want := range map[string]bool{
		"snapshots/crashed": false, "snapshots/crashed-too": false,
		"snapshots/kept/a.img": true, "images/moved/a.img.part": true,
	} {
		_, err := os.Stat(filepath.Join(state, p))
		if got := err == nil; got != want {
			t.Errorf("%s exists = %v, want %v", p, got, want)
		}
	}
}
