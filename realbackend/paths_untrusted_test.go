package realbackend

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vnsnap/vnsnap/qemubackend"
	"github.com/vnsnap/vnsnap/qemubackend/guestimg"
	"github.com/vnsnap/vnsnap/qemubackend/qemutest"
	"github.com/vnsnap/vnsnap/vne"
)

// TestLayoutPathsAbsolute loads a VNE file by a relative path from another
// working directory: the layout (what a snapshot records) holds absolute
// paths, and an overlay is never made on a relative backing file, which
// QEMU would look up next to the overlay.
func TestLayoutPathsAbsolute(t *testing.T) {
	dir := t.TempDir()
	sub := filepath.Join(dir, "sub")
	if err := os.MkdirAll(filepath.Join(sub, "img"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"img/vmlinuz", "base.qcow2"} {
		if err := os.WriteFile(filepath.Join(sub, f), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	src := "name: rel\nhosts: [{name: h1}]\nvms:\n" +
		"  - {name: k, host: h1, memory: 64MiB, guest: {kernel: img/vmlinuz, cmdline: quiet}}\n" +
		"  - {name: d, host: h1, memory: 64MiB, guest: {disk: base.qcow2}}\n"
	if err := os.WriteFile(filepath.Join(sub, "rel.yaml"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)
	v, err := vne.Load("sub/rel.yaml")
	if err != nil {
		t.Fatal(err)
	}
	l, err := LayoutOf(v, Options{Hypervisor: qemubackend.NewHypervisor(&qemubackend.Host{Machine: testMachine})})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := l.VMs[0].Kernel, filepath.Join(sub, "img", "vmlinuz"); got != want {
		t.Errorf("kernel %q, want %q", got, want)
	}
	if got, want := l.VMs[1].Disk, filepath.Join(sub, "base.qcow2"); got != want {
		t.Errorf("disk %q, want %q", got, want)
	}
	if err := qemubackend.NewHypervisor(&qemubackend.Host{}).NewDisk(context.Background(), "sub/base.qcow2", filepath.Join(dir, "o.qcow2")); err == nil || !strings.Contains(err.Error(), "not an absolute path") {
		t.Errorf("overlay on a relative backing file: got %v, want it refused", err)
	}
}

// TestBootDiskGuestFromRelativeVNE boots, with real QEMU, a disk guest of a
// VNE file loaded by a relative path: its boot overlay's backing file must
// be found (it was looked up next to the overlay when the path stayed
// relative, and qemu-img failed).
func TestBootDiskGuestFromRelativeVNE(t *testing.T) {
	h := requireQEMU(t)
	dir := t.TempDir()
	sub := filepath.Join(dir, "sub")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	base := filepath.Join(sub, "base.qcow2")
	qcow2(t, base, "16M")
	src := "name: rel\nhosts: [{name: h1}]\nvms:\n  - {name: d, host: h1, memory: 64MiB, guest: {disk: base.qcow2}}\n"
	if err := os.WriteFile(filepath.Join(sub, "rel.yaml"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)
	v, err := vne.Load("sub/rel.yaml")
	if err != nil {
		t.Fatal(err)
	}
	ctx := qemutest.Context(t, 15*time.Minute) // derived from progress; 15m is a safety net
	env, err := Boot(ctx, v, Options{Hypervisor: qemubackend.NewHypervisor(h), Image: guestimg.Image{}, Dir: shortDir(t)})
	if err != nil {
		t.Fatalf("Boot: %v", err)
	}
	defer env.Close()
	var blocks []struct {
		Inserted struct {
			File  string `json:"file"`
			Image struct {
				BackingFilename string `json:"backing-filename"`
			} `json:"image"`
		} `json:"inserted"`
	}
	if err := qvm(env, 0).QMP.Execute(ctx, "query-block", nil, &blocks); err != nil {
		t.Fatal(err)
	}
	if len(blocks) != 1 || blocks[0].Inserted.Image.BackingFilename != base {
		t.Errorf("query-block %+v, want the boot overlay backed by %s", blocks, base)
	}
}
