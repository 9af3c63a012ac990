package store

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/vnsnap/vnsnap/store/pages"
)

// TestImageReaderAndInto reads page images back through ImageReader at
// random offsets and lengths (across pages and blocks, zero pages among
// them, and past the end) and whole through RestoreImageInto into an open
// file, comparing both with what was written; then damages every block
// and checks that a read reports ErrCorrupt.
func TestImageReaderAndInto(t *testing.T) {
	root := t.TempDir()
	a := imageData(1, 3<<20+123) // not a whole number of pages
	b := imageData(2, 1<<20)
	writeImages(t, root, "s1", map[string][]byte{"a": a, "b": b})
	s := mustOpen(t, root, "s1")
	defer s.Close()
	r := rand.New(rand.NewPCG(1, 2))
	for vm, want := range map[string][]byte{"a": a, "b": b} {
		ra, size, err := s.ImageReader(vm, "memory", pages.RestoreOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if size != int64(len(want)) {
			t.Errorf("vm %s: ImageReader size %d, want %d", vm, size, len(want))
		}
		for range 200 {
			off := r.Int64N(int64(len(want)))
			p := make([]byte, r.IntN(300<<10))
			n, err := ra.ReadAt(p, off)
			end := min(off+int64(len(p)), int64(len(want)))
			if n != int(end-off) || (n < len(p)) != (err == io.EOF) || (err != nil && err != io.EOF) {
				t.Fatalf("vm %s: ReadAt(%d bytes, %d) = %d, %v; want %d", vm, len(p), off, n, err, end-off)
			}
			if !bytes.Equal(p[:n], want[off:end]) {
				t.Fatalf("vm %s: ReadAt(%d bytes, %d) differs", vm, len(p), off)
			}
		}
		f, err := os.Create(filepath.Join(t.TempDir(), vm))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.RestoreImageInto(vm, "memory", f, pages.RestoreOptions{SkipHash: true}); err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(io.NewSectionReader(f, 0, 1<<40))
		f.Close()
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("vm %s: RestoreImageInto wrote %d bytes (%v), want the %d written", vm, len(got), err, len(want))
		}
	}
	for _, p := range poolFiles(t, root, blocksDir) {
		obj, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		obj[len(obj)-1] ^= 0xff
		if err := os.WriteFile(p, obj, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ra, _, err := s.ImageReader("a", "memory", pages.RestoreOptions{SkipHash: true})
	if err != nil {
		t.Fatal(err)
	}
	var ce *CorruptError
	if _, err := ra.ReadAt(make([]byte, len(a)), 0); !errors.Is(err, ErrCorrupt) || !errors.As(err, &ce) || ce.VM != "a" {
		t.Errorf("ReadAt of a damaged image = %v, want a CorruptError of vm a", err)
	}
}
