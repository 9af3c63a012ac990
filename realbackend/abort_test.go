package realbackend

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vnsnap/vnsnap/core"
	"github.com/vnsnap/vnsnap/qemubackend"
	"github.com/vnsnap/vnsnap/qemubackend/guestimg"
	"github.com/vnsnap/vnsnap/qemubackend/qemutest"
	"github.com/vnsnap/vnsnap/store"
	"github.com/vnsnap/vnsnap/vnet"
)

// failingColour is a switch controller whose SetEpoch fails for one VM:
// always, or only the first time (once).
type failingColour struct {
	vnet.Controller
	vm     core.VMID
	once   bool
	failed *bool
}

var errInjected = errors.New("injected set-epoch failure")

func (f failingColour) SetEpoch(vm core.VMID, e core.Epoch) error {
	if vm == f.vm && (!f.once || !*f.failed) {
		*f.failed = true
		return errInjected
	}
	return f.Controller.SetEpoch(vm, e)
}

// failCommand returns a fault hook that fails the first command of vm whose
// type is that of like, in the middle of its batch.
func failCommand(vm core.VMID, like core.Command) func(core.Command) error {
	done := false
	return func(c core.Command) error {
		if vc, ok := c.(core.VMCommand); ok && !done && vc.Target() == vm && fmt.Sprintf("%T", c) == fmt.Sprintf("%T", like) {
			done = true
			return fmt.Errorf("%w: %v", errInjected, c)
		}
		return nil
	}
}

// TestAbortResumesEveryVM makes snapshots fail in the middle (a switch that
// refuses a colour, once or always; a command that fails in the middle of a
// batch, so that the rest of the batch is skipped; a deadline that passes
// during the copies; the caller's cancelled context) and checks that every VM
// runs again, every port that could be reached is on the snapshot's epoch and
// nothing is recorded; then a snapshot succeeds. Nothing but the core's own
// abort resumes a VM, so a VM left paused here is the core's fault.
func TestAbortResumesEveryVM(t *testing.T) {
	h := requireQEMU(t)
	img := guestImage(t)
	ctx := qemutest.Context(t, 15*time.Minute) // derived from progress; 15m is a safety net
	console := consoles(t, t.TempDir())
	o := Options{Hypervisor: qemubackend.NewHypervisor(h), Image: img, Dir: shortDir(t), Console: func(vm string) io.Writer { return console(vm) }}
	l := &Layout{Name: "abort", Hosts: []HostLayout{{Name: "h1", Address: "127.0.0.1"}, {Name: "h2", Address: "127.0.0.1"}}}
	for i, n := range []string{"x", "y"} {
		l.VMs = append(l.VMs, VMLayout{
			Name: n, Host: i, MemoryMiB: 128, VCPUs: 1, Machine: h.Machine, MAC: qemubackend.MACFor(n),
			Kernel: img.Kernel, Initrd: img.Initrd, Heartbeat: true,
			Append: guestimg.KernelArgs("", "", guestimg.Program{Name: "heartbeat", Args: []string{"-interval=20ms"}},
				guestimg.Program{Name: "dirtier", Args: []string{"-rate=4", "-ws=8"}}),
		})
	}
	env, err := BootLayout(ctx, l, nil, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { env.Close() })
	for i := 0; i < env.NumVMs(); i++ {
		if _, _, err := qvm(env, i).Console.WaitPrefix(ctx, 0, "DIRTIER OK"); err != nil {
			t.Fatal(err)
		}
	}
	root := t.TempDir()
	cases := []struct {
		name     string
		algo     core.Algorithm
		sink     core.Sink
		fail     bool // vm 1's colour fails: always, or once if onceOnly
		onceOnly bool
		fault    core.Command // vm 1's first command of this type fails
		deadline time.Duration
		stall    time.Duration
		cancel   time.Duration // cancel the caller's context after this long
	}{
		{name: "colour-vnsnap", algo: core.VNsnap, sink: core.MemorySink, fail: true},
		{name: "colour-cow", algo: core.COW, sink: core.DiskSink, fail: true},
		{name: "colour-stop-copy", algo: core.StopCopy, sink: core.MemorySink, fail: true},
		{name: "colour-once-cow", algo: core.COW, sink: core.DiskSink, fail: true, onceOnly: true},
		{name: "protect-cow", algo: core.COW, sink: core.MemorySink, fault: core.ProtectMemory{}},
		{name: "freeze-vnsnap", algo: core.VNsnap, sink: core.DiskSink, fault: core.FreezeDisk{}},
		{name: "resume-stop-copy", algo: core.StopCopy, sink: core.DiskSink, fault: core.ResumeVM{}},
		// A deadline that passes mid-copy: shorter than a whole snapshot of
		// a 128 MiB guest to disk however fast the store (200 ms no longer
		// is), longer than QEMU's migration setup.
		{name: "deadline-vnsnap", algo: core.VNsnap, sink: core.DiskSink, deadline: 50 * time.Millisecond},
		// A stall bound shorter than QEMU's migration setup: aborted for
		// want of progress, however early.
		{name: "stall-vnsnap", algo: core.VNsnap, sink: core.MemorySink, stall: time.Millisecond},
		{name: "cancel-stop-copy", algo: core.StopCopy, sink: core.DiskSink, cancel: 150 * time.Millisecond},
	}
	for _, c := range cases {
		orig := env.ctl[1]
		failed := false
		if c.fail {
			env.ctl[1] = failingColour{orig, 1, c.onceOnly, &failed}
		}
		start := time.Now()
		sctx, scancel := context.WithCancel(ctx)
		if c.cancel > 0 {
			time.AfterFunc(c.cancel, scancel)
		}
		o := SnapshotOptions{Store: root, Name: c.name, Algorithm: c.algo, Sink: c.sink, Deadline: c.deadline, Stall: c.stall}
		if c.fault != nil {
			o.fault = failCommand(1, c.fault)
		}
		_, err := env.Snapshot(sctx, o)
		scancel()
		env.ctl[1] = orig
		if !errors.Is(err, ErrAborted) {
			t.Fatalf("%s: got %v, want ErrAborted", c.name, err)
		}
		if (c.fail || c.fault != nil) && !errors.Is(err, errInjected) && !contains(err, errInjected.Error()) {
			t.Errorf("%s: error %v does not give the cause", c.name, err)
		}
		if c.stall > 0 && !contains(err, ErrStalled.Error()) {
			t.Errorf("%s: error %v, want %v", c.name, err, ErrStalled)
		}
		if c.stall > 0 {
			for _, vl := range env.Layout.VMs {
				if !contains(err, vl.Name+": ") {
					t.Errorf("%s: error %v does not say where vm %s's copy stood", c.name, err, vl.Name)
				}
			}
		}
		// Every port is on the snapshot's epoch, but the one whose switch
		// refuses every colour change.
		for i, vl := range env.Layout.VMs {
			got, err := env.Switch(vl.Host).Epoch(core.VMID(i))
			if c.fail && !c.onceOnly && i == 1 {
				continue
			}
			if err != nil || got != env.epoch {
				t.Errorf("%s: %s's port on epoch %d (%v), want %d", c.name, vl.Name, got, err, env.epoch)
			}
		}
		t.Logf("%s: %v (after %v)", c.name, err, since(start))
		if _, err := store.Open(root, c.name); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("%s: store.Open after abort: %v, want ErrNotFound", c.name, err)
		}
		if _, err := os.Stat(filepath.Join(root, "snapshots", c.name)); !os.IsNotExist(err) {
			t.Errorf("%s: snapshot directory left behind: %v", c.name, err)
		}
		for i := 0; i < env.NumVMs(); i++ {
			vm := qvm(env, i)
			if st, err := vm.Status(ctx); err != nil || st != "running" {
				t.Errorf("%s: %s status %q, %v; want running", c.name, vm.Spec.Name, st, err)
			}
			n := vm.Console.Len()
			if _, _, err := vm.Console.WaitFor(ctx, n, func(l qemubackend.Line) bool { _, ok := l.Heartbeat(); return ok }); err != nil {
				t.Errorf("%s: %s prints no heartbeat after the abort: %v", c.name, vm.Spec.Name, err)
			}
		}
	}
	rep, err := env.Snapshot(ctx, SnapshotOptions{Store: root, Name: "ok", Algorithm: core.VNsnap, Sink: core.MemorySink})
	if err != nil {
		t.Fatalf("snapshot after the aborts: %v", err)
	}
	if want := core.Epoch(len(cases) + 1); rep.Epoch != want {
		t.Errorf("epoch after %d aborted snapshots: %d, want %d", len(cases), rep.Epoch, want)
	}
	noFail(t, env, "after aborts")
}

func contains(err error, s string) bool { return err != nil && strings.Contains(err.Error(), s) }
