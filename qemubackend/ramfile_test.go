package qemubackend

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vnsnap/vnsnap/internal/testutil"
	"github.com/vnsnap/vnsnap/qemubackend/qemutest/progress"
)

// TestRestoreOnFile takes a stop-copy mapped-ram snapshot of a running
// guest, restores it with the guest's RAM on the restored file itself
// (RestoreOnFile: the file written while QEMU starts, pc.ram's bitmap
// cleared before the load) and checks that the guest runs on from its
// snapshot point with every page of the dirtier intact, that QEMU's RAM
// is a shared mapping of that file, and that a snapshot of the restored
// VM (whose RAM is the file) restores and runs on too.
func TestRestoreOnFile(t *testing.T) {
	h := requireQEMU(t)
	img := guestImage(t)
	ctx := testContext(t, 15*time.Minute)
	spec, vm := startDirtier(ctx, t, h, img, "rof", 128, "DIRTIER OK", "-rate=8", "-ws=16")
	dir := testutil.ShmDir(t)
	path := filepath.Join(dir, "stop-copy.mapped")
	st := takeSnapshot(ctx, t, vm, path, Options{Method: StopCopy, MappedRAM: true, Resume: true})
	vm.Kill()
	src, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	fi, err := src.Stat()
	if err != nil {
		t.Fatal(err)
	}
	layout, err := ParseMappedRAM(src, fi.Size())
	if err != nil {
		t.Fatalf("QEMU's own file: %v", err)
	}
	var blocks []string
	for _, b := range layout.Blocks {
		blocks = append(blocks, fmt.Sprintf("%s %d@%#x", b.Name, b.Length, b.PagesOffset))
	}
	t.Logf("layout of the %d-byte file: machine %s, capabilities %v, blocks %s", fi.Size(), layout.Machine, layout.Capabilities, strings.Join(blocks, ", "))
	ram, ok := layout.Block("pc.ram")
	if !ok || ram.Length != int64(spec.MemoryMiB)<<20 {
		t.Fatalf("pc.ram = %+v, %v: want the guest's %d MiB", ram, ok, spec.MemoryMiB)
	}

	// The restored file, unlinked: QEMU's descriptor keeps it.
	f, err := os.CreateTemp(dir, "ram-*.img")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := os.Remove(f.Name()); err != nil {
		t.Fatal(err)
	}
	filled := false
	rspec := spec
	rspec.Name = "rof-restored"
	rspec.ConsoleLog = consoleLog(t, rspec.Name)
	start := time.Now()
	r, err := RestoreOnFile(ctx, h, rspec, RAMImage{File: f, Image: src, Size: fi.Size(), Fill: func() error {
		filled = true
		return copySparse(f, src, fi.Size())
	}})
	if err != nil {
		t.Fatal(progress.Why(ctx, err))
	}
	defer r.Kill()
	loaded := time.Since(start)
	if !filled {
		t.Error("Fill was not called")
	}
	// QEMU's RAM is the file: a shared mapping of its inode, of the
	// guest's size, at pc.ram's pages offset.
	if m := mappingOf(t, r.cmd.Process.Pid, f); !strings.Contains(m, fmt.Sprintf(" %08x ", ram.PagesOffset)) || !strings.Contains(m, "rw-s ") {
		t.Errorf("QEMU's mappings of the RAM file: %q, want a shared one at offset %#x", m, ram.PagesOffset)
	}
	// pc.ram's bitmap is cleared (QEMU loaded none of its pages), and
	// the ranges that are not RAM were punched out after the load.
	bm := make([]byte, ram.BitmapLen)
	if _, err := f.ReadAt(bm, ram.BitmapOffset); err != nil || !bytes.Equal(bm, make([]byte, len(bm))) {
		t.Errorf("pc.ram's bitmap after the load: %v, want cleared", err)
	}
	checkRestored(ctx, t, r, snap{method: StopCopy, path: path, stats: st, mapped: true}, loaded)

	// A snapshot of the VM whose RAM is the file, restored the usual way.
	again := filepath.Join(dir, "again.mapped")
	st2 := takeSnapshot(ctx, t, r, again, Options{Method: StopCopy, MappedRAM: true, Resume: true})
	r.Kill()
	restoreAndCheck(ctx, t, h, spec, snap{method: StopCopy, path: again, stats: st2, mapped: true}, 1)
}

// copySparse copies the size bytes of src into dst, leaving zero pages as
// holes, as the store's write-back does.
func copySparse(dst, src *os.File, size int64) error {
	buf := make([]byte, 1<<20)
	for off := int64(0); off < size; off += int64(len(buf)) {
		n, err := src.ReadAt(buf, off)
		if err != nil && err != io.EOF {
			return err
		}
		for p := 0; p < n; p += 4096 {
			pg := buf[p:min(p+4096, n)]
			if bytes.Equal(pg, make([]byte, len(pg))) {
				continue
			}
			if _, err := dst.WriteAt(pg, off+int64(p)); err != nil {
				return err
			}
		}
	}
	return dst.Truncate(size)
}

// mappingOf returns the lines of process pid's memory map that map f.
func mappingOf(t *testing.T, pid int, f *os.File) string {
	t.Helper()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	ino := fi.Sys().(*syscall.Stat_t).Ino
	mf, err := os.Open(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer mf.Close()
	var out []string
	sc := bufio.NewScanner(mf)
	for sc.Scan() {
		// start-end perms offset dev inode path
		fs := strings.Fields(sc.Text())
		if len(fs) >= 5 && fs[4] == fmt.Sprint(ino) {
			out = append(out, sc.Text())
		}
	}
	return strings.Join(out, "\n")
}
