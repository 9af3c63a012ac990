package realbackend

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/vnsnap/vnsnap/core"
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
	env, o, _ := bootDiskGuest(ctx, t, h, img, "comma", 128, dir, filepath.Join(dir, "base,x=y.qcow2"), "32M")
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
	if _, _, err := qvm(renv, 0).Console.WaitFor(ctx, 0, isHeartbeat); err != nil {
		t.Fatalf("restored VM does not run: %v", progress.Why(ctx, err))
	}
}
