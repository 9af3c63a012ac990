package qemubackend

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/vnsnap/vnsnap/realbackend/hv"
)

// TestRestoreRAMFileFallback drives the port's choice between the restore
// on the image's file and the fallback (QEMU reading the whole file)
// without QEMU: the host's binary does not exist, so every start fails,
// and what is seen is whether the fallback was tried (Fill called again,
// by RestoreFileFrom) and whether it was logged with its reason.
func TestRestoreRAMFileFallback(t *testing.T) {
	good, _ := encodeMappedRAM("pc-i440fx-10.0", pcCaps, pcBlocks) // pc.ram of 128 MiB
	tests := []struct {
		name     string
		image    io.ReaderAt
		size     int64
		mem      int
		fallback error // the reason logged; nil: no fallback
	}{
		{"damaged layout", strings.NewReader("not a mapped-ram file"), 21, 128, ErrBadMappedRAM},
		{"no RAM block of the guest's size", good, good.size, 256, ErrNoGuestRAM},
		// The layout is taken: Fill runs while QEMU (here: nothing)
		// starts, and the start's failure is the restore's.
		{"layout taken", good, good.size, 128, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var logged bytes.Buffer
			h := &Hypervisor{
				host:   &Host{Binary: filepath.Join(t.TempDir(), "no-qemu"), Machine: "pc-i440fx-10.0"},
				Logger: slog.New(slog.NewTextHandler(&logged, nil)),
			}
			f, err := os.CreateTemp(t.TempDir(), "ram-*.img")
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			var fills atomic.Int32
			img := hv.RAMImage{File: f, Image: tc.image, Size: tc.size, Fill: func() error { fills.Add(1); return nil }}
			m, err := h.RestoreRAMFile(context.Background(), hv.MachineSpec{Name: "fb", MemoryMiB: tc.mem}, img)
			if err == nil {
				m.Kill()
				t.Fatal("restore with no QEMU binary succeeded")
			}
			// A refused layout is refused before Fill: the one call is
			// then the fallback's, and without a fallback there is none.
			if got := fills.Load(); got != 1 {
				t.Errorf("Fill called %d times, want 1", got)
			}
			if errors.Is(err, ErrBadMappedRAM) || errors.Is(err, ErrNoGuestRAM) {
				t.Errorf("error %v: the layout's refusal is the fallback's reason, not the restore's error", err)
			}
			log := logged.String()
			switch {
			case tc.fallback == nil && log != "":
				t.Errorf("logged %q, want nothing (no fallback)", log)
			case tc.fallback != nil && (!strings.Contains(log, "level=WARN") || !strings.Contains(log, "vm=fb") ||
				!strings.Contains(log, tc.fallback.Error())):
				t.Errorf("logged %q, want a warning naming vm fb and the reason %q", log, tc.fallback)
			}
		})
	}
}

// TestFallsBack: only a layout refused before the image was written
// falls back.
func TestFallsBack(t *testing.T) {
	wrap := func(err error) error { return &os.PathError{Op: "restore", Path: "x", Err: err} }
	tests := []struct {
		err    error
		filled bool
		want   bool
	}{
		{wrap(ErrBadMappedRAM), false, true},
		{wrap(ErrNoGuestRAM), false, true},
		{wrap(ErrBadMappedRAM), true, false}, // the written file's layout differs: QEMU has started on it
		{wrap(ErrNotFile), false, false},
		{errors.New("start: no such file"), false, false},
		{context.Canceled, false, false},
	}
	for _, tc := range tests {
		if got := fallsBack(tc.err, tc.filled); got != tc.want {
			t.Errorf("fallsBack(%v, filled %v) = %v, want %v", tc.err, tc.filled, got, tc.want)
		}
	}
}
