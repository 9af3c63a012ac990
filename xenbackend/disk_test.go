package xenbackend

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/vnsnap/vnsnap/realbackend/hv"
)

// TestNewDiskKeepsHoles: NewDisk gives the new image base's bytes and size,
// allocates no more than base does (holes stay holes, on a filesystem that
// has them), refuses a path that exists and never writes base.
func TestNewDiskKeepsHoles(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "base.raw")
	f, err := os.Create(base)
	if err != nil {
		t.Fatal(err)
	}
	const size = 64 << 20
	chunks := map[int64]byte{0: 1, 17 << 20: 2, size - 4096: 3}
	for off, b := range chunks {
		if _, err := f.WriteAt(bytes.Repeat([]byte{b}, 4096), off); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	f.Close()
	want, _ := os.ReadFile(base)
	h := newTestHypervisor(t, newSim(t))
	if h.DiskFormat() != "raw" {
		t.Errorf("DiskFormat %q, want raw", h.DiskFormat())
	}
	img := filepath.Join(dir, "a.boot.raw")
	if err := h.NewDisk(context.Background(), base, img); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("new disk differs from its base (%d vs %d bytes)", len(got), len(want))
	}
	if b, i := allocated(t, base), allocated(t, img); i > b+1<<20 {
		t.Errorf("new disk allocates %d bytes, its base %d: holes were filled", i, b)
	}
	if err := h.NewDisk(context.Background(), base, img); err == nil {
		t.Error("NewDisk over an existing image: want an error")
	}
	if err := h.NewDisk(context.Background(), "rel/base.raw", filepath.Join(dir, "x.raw")); err == nil {
		t.Error("NewDisk of a relative base: want an error")
	}
	if after, _ := os.ReadFile(base); !bytes.Equal(after, want) {
		t.Error("NewDisk wrote its base")
	}
}

func allocated(t *testing.T, p string) int64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

// requireLoop skips outside CI without root or loop devices, and fails in
// CI, where the test must run.
func requireLoop(t *testing.T) {
	t.Helper()
	var why string
	if os.Geteuid() != 0 {
		why = "not root"
	} else if _, err := os.Stat("/dev/loop-control"); err != nil {
		why = err.Error()
	}
	if why == "" {
		return
	}
	if os.Getenv("CI") == "" {
		t.Skipf("disk test needs root and loop devices: %s", why)
	}
	t.Fatalf("disk test needs root and loop devices (in CI): %s", why)
}

// guestWrite writes p at offset 0 of the domain's disk as blkback would,
// through the loop device, to its backing file.
func guestWrite(t *testing.T, dev, p string) {
	t.Helper()
	f, err := os.OpenFile(dev, os.O_WRONLY, 0)
	if err != nil {
		t.Error(err)
		return
	}
	defer f.Close()
	if _, err := f.WriteAt([]byte(p), 0); err != nil {
		t.Error(err)
	}
	if err := f.Sync(); err != nil {
		t.Error(err)
	}
}

func head(t *testing.T, p string, n int) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b[:n])
}

// TestDiskFreeze runs a disk domU on the fake xl with a real loop device:
// its config gives xl the loop device through our block script; a
// stop-and-copy freezes the disk where the domain suspends itself (what it
// writes while the save lets it run is in the frozen image, as in its
// memory image), not where Pause stopped it; a freeze at a live save's
// snapshot point is made at once; after each, the domain writes to the
// overlay and the frozen image stays; Kill detaches the loop device.
func TestDiskFreeze(t *testing.T) {
	requireLoop(t)
	ctx := context.Background()
	s := newSim(t)
	h := newTestHypervisor(t, s)
	dir := t.TempDir()
	img := filepath.Join(dir, "a.boot.raw")
	if err := os.WriteFile(img, append([]byte("gen 1"), make([]byte, 1<<20)...), 0o600); err != nil {
		t.Fatal(err)
	}
	spec := testSpec
	spec.Disk = img
	vm, err := h.Start(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	m := vm.(*Machine)
	defer m.Kill()
	dev := m.loop.path
	cfg, err := os.ReadFile(m.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if want := `script=` + filepath.Join(h.cfg.Dir, "block-vnsnap") + `, target=` + dev + `" ]`; !strings.Contains(string(cfg), want) {
		t.Errorf("config:\n%s\nwant a disk line ending %s", cfg, want)
	}
	if b, err := os.ReadFile(filepath.Join(h.cfg.Dir, "block-vnsnap")); err != nil || string(b) != BlockScript {
		t.Errorf("block script: %v", err)
	}
	backing := "/sys/block/" + filepath.Base(dev) + "/loop/backing_file"
	guestWrite(t, dev, "gen 2")

	// Stop-and-copy: paused, frozen (pending), then the save lets the
	// domain run until it suspends; it writes gen 3 meanwhile.
	if err := m.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	e1 := filepath.Join(dir, "a.e1.raw")
	frozen, err := m.FreezeDisk(ctx, e1)
	if err != nil || frozen != img {
		t.Fatalf("FreezeDisk: %q, %v; want %s", frozen, err, img)
	}
	s.onSave = func() { guestWrite(t, dev, "gen 3") }
	if _, err := m.Save(ctx, &bytes.Buffer{}, hv.SaveOptions{}); err != nil {
		t.Fatal(err)
	}
	s.onSave = nil
	if err := m.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	guestWrite(t, dev, "gen 4")
	if got := head(t, img, 5); got != "gen 3" {
		t.Errorf("stop-and-copy froze %q, want gen 3 (written before the domain suspended)", got)
	}
	if got := head(t, e1, 5); got != "gen 4" {
		t.Errorf("overlay %q after the freeze, want gen 4", got)
	}
	if b, _ := os.ReadFile(backing); strings.TrimSpace(string(b)) != e1 {
		t.Errorf("loop device's backing file %q, want %s", b, e1)
	}

	// At a snapshot point the domain is suspended (not paused by Pause):
	// the freeze is made at once.
	e2 := filepath.Join(dir, "a.e2.raw")
	if frozen, err := m.FreezeDisk(ctx, e2); err != nil || frozen != e1 {
		t.Fatalf("FreezeDisk: %q, %v; want %s", frozen, err, e1)
	}
	guestWrite(t, dev, "gen 5")
	if got, over := head(t, e1, 5), head(t, e2, 5); got != "gen 4" || over != "gen 5" {
		t.Errorf("frozen %q, overlay %q; want gen 4, gen 5", got, over)
	}
	if _, err := m.FreezeDisk(ctx, e2); err == nil {
		t.Error("FreezeDisk onto an existing overlay: want an error")
	}

	// An aborted stop-and-copy: frozen while paused, no save; Resume
	// makes the freeze, so the names are as FreezeDisk said.
	if err := m.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	e3 := filepath.Join(dir, "a.e3.raw")
	if frozen, err := m.FreezeDisk(ctx, e3); err != nil || frozen != e2 {
		t.Fatalf("FreezeDisk: %q, %v; want %s", frozen, err, e2)
	}
	if err := m.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	guestWrite(t, dev, "gen 6")
	if got, over := head(t, e2, 5), head(t, e3, 5); got != "gen 5" || over != "gen 6" {
		t.Errorf("frozen %q, overlay %q; want gen 5, gen 6", got, over)
	}

	m.Kill()
	if _, err := os.Stat(backing); err == nil {
		b, _ := os.ReadFile(backing)
		t.Errorf("after Kill the loop device is still attached to %s", b)
	}
}
