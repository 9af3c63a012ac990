package agent

import (
	"context"

	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/vnsnap/vnsnap/cluster/certs"
	"github.com/vnsnap/vnsnap/cluster/clusterpb"
	"github.com/vnsnap/vnsnap/core"
	"github.com/vnsnap/vnsnap/qemubackend"
	"github.com/vnsnap/vnsnap/qemubackend/guestimg"
	"github.com/vnsnap/vnsnap/qemubackend/qemutest"
	"github.com/vnsnap/vnsnap/qemubackend/qemutest/progress"
	"github.com/vnsnap/vnsnap/realbackend/hv"
)

// TestRealAgentQEMU drives a real QEMU VM (TCG) through an agent served on
// a real TCP socket with mutual TLS: start, pause and resume; a live save
// held at its snapshot point whose lease runs out (the agent resumes the
// paused VM on the snapshot's epoch and discards the partial image); a
// live save with its passes streamed back, committed, and a restore of that
// image that runs on from where the guest was.
func TestRealAgentQEMU(t *testing.T) {
	h := qemutest.RequireQEMU(t)
	img := qemutest.GuestImage(t, "../..")
	ctx := qemutest.Context(t, 15*time.Minute)
	clk := newManualClock()
	expired := make(chan error, 1)
	a := newAgent(t, "h1", qemubackend.NewHypervisor(h), clk, filepath.Dir(img.Kernel), filepath.Dir(img.Initrd))
	a.cfg.OnLeaseExpired = func(_ string, err error) { expired <- err }
	dir := testCerts(t, "h1")
	c := client(t, serve(t, a, dir, "h1"), "h1", load(t, dir, certs.CoordinatorName))

	if _, err := c.SetupHost(ctx, &clusterpb.SetupHostRequest{Call: call("setup", 0), SwitchId: 1, Algorithm: "vnsnap",
		Ports: []*clusterpb.PortSpec{{Vm: 0, Name: "a"}}}); err != nil {
		t.Fatal(err)
	}
	spec := &clusterpb.MachineSpec{Vm: 0, Name: "a", MemoryMib: 128, Vcpus: 1, Kernel: img.Kernel, Initrd: img.Initrd,
		Append: guestimg.KernelArgs("", "", guestimg.Program{Name: "heartbeat", Args: []string{"-interval=20ms"}}),
		Mac:    qemubackend.MACFor("a")}
	if _, err := c.StartVM(ctx, &clusterpb.StartVMRequest{Call: call("start", 0), Spec: spec}); err != nil {
		t.Fatal(err)
	}
	vm := func() *qemubackend.VM { return a.Machine(0).(*qemubackend.Machine).VM() }
	if _, _, err := vm().Console.WaitFor(ctx, 0, func(l qemubackend.Line) bool { _, ok := l.Heartbeat(); return ok }); err != nil {
		t.Fatalf("no heartbeat: %v", progress.Why(ctx, err))
	}
	state := func() string {
		t.Helper()
		s, err := vm().Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	// runs checks that the VM runs and its guest beats after now.
	runs := func(what string) hv.Heartbeat {
		t.Helper()
		if s := state(); s != "running" {
			t.Fatalf("%s: status %q, want running", what, s)
		}
		hb, err := a.Machine(0).(hv.Heartbeats).WaitHeartbeatAfter(ctx, time.Now(), hv.HeartbeatSilence)
		if err != nil {
			t.Fatalf("%s: no heartbeat: %v", what, progress.Why(ctx, err))
		}
		return hb
	}
	vmCall := func(f func(context.Context, *clusterpb.VMRequest, ...grpc.CallOption) (*clusterpb.Ack, error), id string, epoch uint32) {
		t.Helper()
		if _, err := f(ctx, &clusterpb.VMRequest{Call: call(id, epoch), Vm: 0}); err != nil {
			t.Fatalf("%s: %v", id, err)
		}
	}

	vmCall(c.PauseVM, "pause", 0)
	if s := state(); s != "paused" {
		t.Fatalf("after PauseVM: status %q, want paused", s)
	}
	vmCall(c.ResumeVM, "resume", 0)
	runs("after ResumeVM")

	// Snapshot s1: held at its snapshot point, then the coordinator is
	// gone: the lease runs out on the agent's clock.
	if _, err := c.BeginSnapshot(ctx, &clusterpb.LeaseRequest{Call: call("begin-1", 1), Snapshot: "s1", TtlMillis: 30_000}); err != nil {
		t.Fatal(err)
	}
	stream, err := c.SaveVM(ctx, &clusterpb.SaveVMRequest{Call: call("save-1", 1), Vm: 0, Snapshot: "s1", Live: true, ColourEpoch: 1, Hold: true})
	if err != nil {
		t.Fatal(err)
	}
	var passes []int32
	for {
		ev, err := stream.Recv()
		if err != nil {
			t.Fatalf("save s1 before its snapshot point: %v", progress.Why(ctx, err))
		}
		if p := ev.GetPass(); p != nil {
			passes = append(passes, p.N)
		}
		if ev.GetSnapshotPoint() != nil {
			break
		}
	}
	t.Logf("save s1: passes %v streamed before its snapshot point", passes)
	if len(passes) == 0 {
		t.Error("a live save of a running guest streamed no pass")
	}
	for i, n := range passes {
		if n != int32(i+1) {
			t.Errorf("passes %v, want 1, 2, ...", passes)
			break
		}
	}
	if s := state(); s == "running" {
		t.Fatal("the VM runs at its snapshot point")
	}
	if e, _ := a.Switch().Epoch(core.VMID(0)); e != 1 {
		t.Errorf("port epoch at the snapshot point %d, want 1", e)
	}
	clk.Advance(31 * time.Second) // runs the expiry: cancel, discard, resume
	select {
	case err := <-expired:
		if err != ErrLeaseExpired {
			t.Errorf("expiry: %v", err)
		}
	default:
		t.Fatal("the lease did not expire")
	}
	lastBefore := runs("after the lease expired")
	if _, err := stream.Recv(); err == nil {
		t.Error("the held save went on after its lease expired")
	}
	if _, err := os.Stat(a.snapshotDir("s1")); !os.IsNotExist(err) {
		t.Errorf("snapshot s1 after expiry: stat err %v, want not exist", err)
	}

	// Snapshot s2: committed, then restored.
	if _, err := c.BeginSnapshot(ctx, &clusterpb.LeaseRequest{Call: call("begin-2", 2), Snapshot: "s2", TtlMillis: 30_000}); err != nil {
		t.Fatal(err)
	}
	saved := saveAll(t, c, &clusterpb.SaveVMRequest{Call: call("save-2", 2), Vm: 0, Snapshot: "s2", Live: true, ColourEpoch: 2})
	t.Logf("save s2: %d bytes, %d passes, downtime %v, total %v", saved.Bytes, saved.Passes, time.Duration(saved.DowntimeNanos), time.Duration(saved.TotalNanos))
	if saved.Passes < 2 || saved.Bytes <= 0 {
		t.Errorf("saved %d bytes in %d passes; want a live save of at least 2 passes", saved.Bytes, saved.Passes)
	}
	if s := state(); s == "running" {
		t.Fatal("the VM runs after its save (hv contract: it stays paused)")
	}
	if _, err := c.EndSnapshot(ctx, &clusterpb.EndSnapshotRequest{Call: call("end-2", 2), Snapshot: "s2", Commit: true}); err != nil {
		t.Fatal(err)
	}
	vmCall(c.ResumeVM, "resume-2", 2)
	runs("after the save of s2")
	got, err := fileSHA256(filepath.Join(a.snapshotDir("s2"), "a.img"))
	if err != nil || got != saved.Sha256 {
		t.Errorf("image s2/a: sha %s (%v), the save streamed %s", got, err, saved.Sha256)
	}

	// Restore s2 in place of the running VM: it runs on from its snapshot.
	vmCall(c.KillVM, "kill", 2)
	if _, err := c.RestoreVM(ctx, &clusterpb.RestoreVMRequest{Call: call("restore", 2), Spec: spec, Image: &clusterpb.ImageRef{Snapshot: "s2", Vm: "a"}}); err != nil {
		t.Fatal(err)
	}
	if s := state(); s == "running" {
		t.Fatal("the restored VM runs before ResumeVM")
	}
	vmCall(c.ResumeVM, "resume-3", 2)
	if hb := runs("after the restore"); hb.N <= lastBefore.N {
		t.Errorf("restored guest's heartbeat %d, not after %d (the last before its save): booted afresh?", hb.N, lastBefore.N)
	}
}
