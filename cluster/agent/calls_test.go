package agent

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/vnsnap/vnsnap/cluster/clusterpb"
	"github.com/vnsnap/vnsnap/core"
)

// fakeImages is a directory with a kernel and an initrd for fake VMs.
func fakeImages(t *testing.T) (dir, kernel, initrd string) {
	t.Helper()
	dir = t.TempDir()
	kernel, initrd = filepath.Join(dir, "vmlinuz"), filepath.Join(dir, "initrd.gz")
	for _, p := range []string{kernel, initrd} {
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir, kernel, initrd
}

// setupFake sets up a's host with VMs a (0) and b (1) and starts them.
func setupFake(t *testing.T, ctx context.Context, a *Agent) {
	t.Helper()
	dir, kernel, initrd := fakeImages(t)
	a.cfg.ImageDirs = []string{dir}
	if _, err := a.SetupHost(ctx, &clusterpb.SetupHostRequest{Call: call("setup", 0), SwitchId: 1, Algorithm: "vnsnap",
		Ports: []*clusterpb.PortSpec{{Vm: 0, Name: "a"}, {Vm: 1, Name: "b"}}}); err != nil {
		t.Fatal(err)
	}
	for i, n := range []string{"a", "b"} {
		spec := &clusterpb.MachineSpec{Vm: int32(i), Name: n, MemoryMib: 64, Vcpus: 1, Kernel: kernel, Initrd: initrd, Mac: "52:54:00:00:00:0" + string(rune('1'+i))}
		if _, err := a.StartVM(ctx, &clusterpb.StartVMRequest{Call: call("start-"+n, 0), Spec: spec}); err != nil {
			t.Fatal(err)
		}
	}
}

func fakeOf(a *Agent, vm int32) *fakeMachine { return a.Machine(vm).(*fakeMachine) }

// TestResumeRetryNotAppliedTwice: a resume retried after the VM was
// paused again answers as the first time and leaves the VM paused.
func TestResumeRetryNotAppliedTwice(t *testing.T) {
	ctx := testCtx(t)
	a := newAgent(t, "h1", fakeHV{}, nil)
	setupFake(t, ctx, a)
	steps := []struct {
		do  func(context.Context, *clusterpb.VMRequest) (*clusterpb.Ack, error)
		id  string
		run bool // the VM runs afterwards
	}{
		{a.PauseVM, "pause-1", false},
		{a.ResumeVM, "resume-1", true},
		{a.PauseVM, "pause-2", false},
		{a.ResumeVM, "resume-1", false}, // a late retry of the first resume
		{a.PauseVM, "pause-1", false},   // and of the first pause
	}
	for i, s := range steps {
		if _, err := s.do(ctx, &clusterpb.VMRequest{Call: call(s.id, 0), Vm: 0}); err != nil {
			t.Fatalf("step %d (%s): %v", i, s.id, err)
		}
		if run, _, _ := fakeOf(a, 0).state(); run != s.run {
			t.Fatalf("step %d (%s): running = %v, want %v", i, s.id, run, s.run)
		}
	}
	if _, pauses, resumes := fakeOf(a, 0).state(); pauses != 2 || resumes != 1 {
		t.Errorf("pauses, resumes = %d, %d; want 2, 1", pauses, resumes)
	}
	if _, err := a.ResumeVM(ctx, &clusterpb.VMRequest{Call: call("pause-2", 0), Vm: 0}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("ResumeVM under a PauseVM's request id: err = %v, want InvalidArgument", err)
	}
}

// TestColourFlipRetryNotAppliedTwice: a colour flip retried after a later
// flip answers as the first time; the port keeps the later epoch (without
// the request ID the retry would move it backwards, which the switch
// refuses).
func TestColourFlipRetryNotAppliedTwice(t *testing.T) {
	ctx := testCtx(t)
	a := newAgent(t, "h1", fakeHV{}, nil)
	setupFake(t, ctx, a)
	flip := func(id string, e uint32) error {
		_, err := a.SetEpoch(ctx, &clusterpb.SetEpochRequest{Call: call(id, e), Vm: 1, Colour: e})
		return err
	}
	if err := flip("flip-1", 1); err != nil {
		t.Fatal(err)
	}
	if err := flip("flip-2", 2); err != nil {
		t.Fatal(err)
	}
	// The retry carries flip-1's own Call (epoch 1), as remote.Host.do
	// sends it: it gets flip-1's answer though the agent has seen epoch 2.
	if _, err := a.SetEpoch(ctx, &clusterpb.SetEpochRequest{Call: call("flip-1", 1), Vm: 1, Colour: 1}); err != nil {
		t.Errorf("retry of flip-1: %v", err)
	}
	if got, _ := a.Switch().Epoch(core.VMID(1)); got != 2 {
		t.Errorf("epoch of vm 1 = %d, want 2", got)
	}
	// A new call asking for the old colour is refused, not applied.
	if _, err := a.SetEpoch(ctx, &clusterpb.SetEpochRequest{Call: call("flip-3", 2), Vm: 1, Colour: 1}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("a new flip backwards: err = %v, want FailedPrecondition", err)
	}
}

// TestStaleEpochRefused: once the agent has seen epoch 3, a call of epoch
// 2 (a coordinator that fell behind) is refused and changes nothing.
func TestStaleEpochRefused(t *testing.T) {
	ctx := testCtx(t)
	a := newAgent(t, "h1", fakeHV{}, nil)
	setupFake(t, ctx, a)
	if _, err := a.SetEpoch(ctx, &clusterpb.SetEpochRequest{Call: call("e3", 3), Vm: 0, Colour: 3}); err != nil {
		t.Fatal(err)
	}
	_, err := a.PauseVM(ctx, &clusterpb.VMRequest{Call: call("old", 2), Vm: 0})
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("PauseVM at epoch 2: err = %v, want FailedPrecondition", err)
	}
	if run, pauses, _ := fakeOf(a, 0).state(); !run || pauses != 0 {
		t.Errorf("after a stale pause: running %v, pauses %d; want true, 0", run, pauses)
	}
}

// TestConcurrentDuplicatesRunOnce: copies of one call arriving together
// act once.
func TestConcurrentDuplicatesRunOnce(t *testing.T) {
	c := newCalls()
	runs := 0
	release := make(chan struct{})
	errs := make(chan error, 8)
	for range 8 {
		go func() {
			_, err := c.do(call("same", 0), "M", func() (proto.Message, error) {
				runs++ // only one goroutine ever gets here
				<-release
				return &clusterpb.Ack{}, nil
			})
			errs <- err
		}()
	}
	close(release)
	for range 8 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if runs != 1 {
		t.Errorf("runs = %d, want 1", runs)
	}
}
