package qemubackend

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMappedRAMSnapshotRestore takes a live pre-copy snapshot (with its
// pre-switchover pause and hook) and a stop-copy one of a running guest in
// QEMU's mapped-ram format, checks that the files hold RAM at fixed
// offsets (sparse: the guest's zero pages are holes) and restores each,
// checking that the guest continues from its snapshot point with every
// page of the dirtier intact.
func TestMappedRAMSnapshotRestore(t *testing.T) {
	h := requireQEMU(t)
	img := guestImage(t)
	ctx := testContext(t, 15*time.Minute)
	spec, vm := startDirtier(ctx, t, h, img, "mr1", 128, "DIRTIER OK", "-rate=8", "-ws=16")
	dir := t.TempDir()
	var snaps []snap
	for _, m := range []Method{Precopy, StopCopy} {
		path := filepath.Join(dir, m.String()+".mapped")
		var events []string
		hookStatus := ""
		st := takeSnapshot(ctx, t, vm, path, Options{
			Method: m, Resume: true, MappedRAM: true,
			AtSnapshotPoint: func(ctx context.Context) error {
				var err error
				hookStatus, err = vm.Status(ctx)
				return err
			},
			OnEvent: func(e SnapshotEvent) {
				switch e := e.(type) {
				case PassStarted:
					events = append(events, "pass")
				case SnapshotPointReached:
					events = append(events, "point")
				case MigrationStatusChanged:
					events = append(events, e.Status)
				}
			},
		})
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		allocated := fi.Sys().(*syscall.Stat_t).Blocks * 512
		t.Logf("%s mapped-ram: %d bytes, %d allocated, passes %d, downtime %v, QEMU total %v, events %s",
			m, fi.Size(), allocated, st.Passes, st.QEMUDowntime, st.QEMUTotal, strings.Join(events, ","))
		if st.Bytes != fi.Size() {
			t.Errorf("%s: Stats.Bytes = %d, file is %d bytes", m, st.Bytes, fi.Size())
		}
		if fi.Size() < int64(spec.MemoryMiB)<<20 {
			t.Errorf("%s: file %d bytes, want at least the guest's %d MiB of RAM at fixed offsets", m, fi.Size(), spec.MemoryMiB)
		}
		if allocated >= fi.Size() {
			t.Errorf("%s: %d of %d bytes allocated: want zero pages left as holes", m, allocated, fi.Size())
		}
		if hookStatus == "" || hookStatus == "running" {
			t.Errorf("%s: status at the snapshot point %q, want paused", m, hookStatus)
		}
		if m == Precopy && !strings.Contains(strings.Join(events, ","), "pre-switchover,point") {
			t.Errorf("precopy events %v: want pre-switchover then the snapshot point", events)
		}
		snaps = append(snaps, snap{method: m, path: path, stats: st, mapped: true})
	}
	checkNoFail(t, vm, spec.Name)
	vm.Kill()
	for i, s := range snaps {
		t.Run(s.method.String(), func(t *testing.T) { restoreAndCheck(ctx, t, h, spec, s, i) })
	}
}

// TestMappedRAMFileChecks: a mapped-ram save needs an empty regular file;
// anything else is refused before QEMU is asked.
func TestMappedRAMFileChecks(t *testing.T) {
	dir := t.TempDir()
	full := filepath.Join(dir, "full")
	if err := os.WriteFile(full, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	ff, err := os.OpenFile(full, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer ff.Close()
	empty, err := os.Create(filepath.Join(dir, "empty"))
	if err != nil {
		t.Fatal(err)
	}
	defer empty.Close()
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	defer pw.Close()
	tests := []struct {
		name string
		w    io.Writer
		m    Method
		ok   bool
	}{
		{"empty file", empty, Precopy, true},
		{"empty file, stop-copy", empty, StopCopy, true},
		{"background", empty, Background, false},
		{"buffer", &bytes.Buffer{}, Precopy, false},
		{"pipe", pw, Precopy, false},
		{"non-empty file", ff, Precopy, false},
	}
	for _, tt := range tests {
		_, err := mappedRAMFile(tt.w, tt.m)
		if (err == nil) != tt.ok {
			t.Errorf("%s: mappedRAMFile = %v, want ok=%v", tt.name, err, tt.ok)
		}
	}
}
