package realbackend

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vnsnap/vnsnap/core"
	"github.com/vnsnap/vnsnap/qemubackend/qemutest"
)

// TestDiskFrozen snapshots a VM with a qcow2 disk twice: each FreezeDisk
// moves the VM onto a new overlay at its snapshot point, the stored layout
// names the image frozen there, and the snapshot restores onto an overlay of
// that image.
func TestDiskFrozen(t *testing.T) {
	h := requireQEMU(t)
	img := guestImage(t)
	ctx := qemutest.Context(t, 15*time.Minute) // derived from progress; 15m is a safety net
	dir := shortDir(t)
	base := filepath.Join(dir, "base.qcow2")
	env, o, l := bootDiskGuest(ctx, t, h, img, "disk", 128, dir, base, "64M")
	root := t.TempDir()
	var frozen []string
	for i, a := range []core.Algorithm{core.StopCopy, core.VNsnap} {
		name := "d" + string(rune('1'+i))
		rep, err := env.Snapshot(ctx, SnapshotOptions{Store: root, Name: name, Algorithm: a, Sink: core.DiskSink})
		if err != nil {
			t.Fatal(err)
		}
		f := rep.VMs[0].Frozen
		t.Logf("%s: frozen %s, VM now on %s", name, filepath.Base(f), filepath.Base(env.Layout.VMs[0].Disk))
		if f == "" || f == env.Layout.VMs[0].Disk {
			t.Fatalf("%s: frozen %q, running on %q: want a frozen image and a new overlay", name, f, env.Layout.VMs[0].Disk)
		}
		frozen = append(frozen, f)
		var blocks []struct {
			Inserted struct {
				File string `json:"file"`
			} `json:"inserted"`
		}
		if err := qvm(env, 0).QMP.Execute(ctx, "query-block", nil, &blocks); err != nil {
			t.Fatal(err)
		}
		if len(blocks) == 0 || !strings.Contains(blocks[0].Inserted.File, filepath.Base(env.Layout.VMs[0].Disk)) {
			t.Errorf("%s: query-block %+v, want the VM on %s", name, blocks, env.Layout.VMs[0].Disk)
		}
	}
	if frozen[0] != l.VMs[0].Disk && !strings.HasSuffix(frozen[0], ".boot.qcow2") {
		t.Errorf("first freeze froze %s, want the boot overlay", frozen[0])
	}
	env.Close()

	renv, _, err := Restore(ctx, root, "d2", o)
	if err != nil {
		t.Fatal(err)
	}
	defer renv.Close()
	var blocks []struct {
		Inserted struct {
			BackingFile string `json:"backing_file"`
		} `json:"inserted"`
	}
	if err := qvm(renv, 0).QMP.Execute(ctx, "query-block", nil, &blocks); err != nil {
		t.Fatal(err)
	}
	if len(blocks) == 0 || blocks[0].Inserted.BackingFile != frozen[1] {
		b, _ := json.Marshal(blocks)
		t.Errorf("restored VM's disk %s: want an overlay on %s", b, frozen[1])
	}
	if _, _, err := qvm(renv, 0).Console.WaitFor(ctx, 0, isHeartbeat); err != nil {
		t.Fatalf("restored VM does not run: %v", err)
	}
}
