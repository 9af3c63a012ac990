package realbackend

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/vnsnap/vnsnap/core"
	"github.com/vnsnap/vnsnap/qemubackend"
	"github.com/vnsnap/vnsnap/qemubackend/guestimg"
	"github.com/vnsnap/vnsnap/qemubackend/qemutest"
	"github.com/vnsnap/vnsnap/qemubackend/qemutest/progress"
)

// TestSnapshotRestoreInCommaDir runs a disk guest whose state directory is
// named "a,server=on": boot (overlay, -blockdev, -netdev, QMP), a snapshot
// that freezes the disk onto a new overlay there, and a restore from it all
// keep every path one value, and the restored VM runs.
func TestSnapshotRestoreInCommaDir(t *testing.T) {
	h := requireQEMU(t)
	img := guestImage(t)
	ctx := qemutest.Context(t, 15*time.Minute) // derived from progress; 15m is a safety net
	dir := filepath.Join(shortDir(t), "a,server=on")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	base := filepath.Join(dir, "base,x=y.qcow2")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", base, "32M").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img: %v: %s", err, out)
	}
	console := consoles(t, t.TempDir())
	o := Options{Hypervisor: qemubackend.NewHypervisor(h), Image: img, Dir: dir, Console: func(vm string) io.Writer { return console(vm) }}
	l := &Layout{
		Name:  "comma",
		Hosts: []HostLayout{{Name: "h1", Address: "127.0.0.1"}},
		VMs: []VMLayout{{
			Name: "d", MemoryMiB: 128, VCPUs: 1, Machine: h.Machine, MAC: qemubackend.MACFor("d"),
			Kernel: img.Kernel, Initrd: img.Initrd, Disk: base, Heartbeat: true,
			Append: guestimg.KernelArgs("", "", guestimg.Program{Name: "heartbeat", Args: []string{"-interval=20ms"}}),
		}},
	}
	env, err := BootLayout(ctx, l, nil, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { env.Close() })
	isHB := func(l qemubackend.Line) bool { _, ok := l.Heartbeat(); return ok }
	if _, _, err := qvm(env, 0).Console.WaitFor(ctx, 0, isHB); err != nil {
		t.Fatalf("no heartbeat: %v", progress.Why(ctx, err))
	}
	root := filepath.Join(filepath.Dir(dir), "store,x")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := env.Snapshot(ctx, SnapshotOptions{Store: root, Name: "s1", Algorithm: core.VNsnap, Sink: core.DiskSink}); err != nil {
		t.Fatalf("snapshot: %v", progress.Why(ctx, err))
	}
	env.Close()
	renv, _, err := Restore(ctx, root, "s1", o)
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	defer renv.Close()
	if filepath.Dir(renv.Layout.VMs[0].Disk) != dir {
		t.Errorf("restored VM runs on %s, want an overlay in %s", renv.Layout.VMs[0].Disk, dir)
	}
	if _, _, err := qvm(renv, 0).Console.WaitFor(ctx, 0, isHB); err != nil {
		t.Fatalf("restored VM does not run: %v", progress.Why(ctx, err))
	}
}
