package store

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vnsnap/vnsnap/store/pages"
)

// imageData is a VM-like image of n bytes (pageData: zero, text and random
// pages) whose length need not be a multiple of the page size.
func imageData(seed uint64, n int) []byte { return pageData(seed, n) }

// writeImages writes one snapshot with a page image "memory" per VM in
// imgs, a "config" stream of VM a and an extra, and commits it.
func writeImages(t testing.TB, root, name string, imgs map[string][]byte) map[string]pages.Stats {
	t.Helper()
	w, err := Create(root, name, testMeta())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	sw, err := w.Stream("a", "config")
	if err != nil {
		t.Fatal(err)
	}
	sw.Write([]byte("cfg"))
	if err := sw.Close(); err != nil {
		t.Fatal(err)
	}
	type done struct {
		vm  string
		st  pages.Stats
		err error
	}
	stats := make(map[string]pages.Stats)
	results := make(chan done, len(imgs))
	for vm, data := range imgs {
		go func() {
			st, err := w.ImageAt(vm, "memory", bytes.NewReader(data), int64(len(data)))
			results <- done{vm, st, err}
		}()
	}
	for range imgs {
		r := <-results
		if r.err != nil {
			t.Fatal(r.err)
		}
		stats[r.vm] = r.st
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	return stats
}

func restoredImage(t *testing.T, s *Snapshot, vm string) []byte {
	t.Helper()
	path := filepath.Join(t.TempDir(), vm+".img")
	if _, err := s.RestoreImage(vm, "memory", path, pages.RestoreOptions{}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// poolFiles returns the content-addressed files of pool dir (blocksDir or
// imagesDir) under root.
func poolFiles(t testing.TB, root, dir string) []string {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(root, dir, "??", "*"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, p := range paths {
		if validAddr(filepath.Base(p)) {
			out = append(out, p)
		}
	}
	return out
}

// TestImageRoundTrip writes page images of two VMs (one of a length that is
// not a multiple of the page size), reads them back byte for byte, checks
// what List reports, and that a second snapshot of the same memory with a
// few changed pages stores only those.
func TestImageRoundTrip(t *testing.T) {
	root := t.TempDir()
	a := imageData(1, 3<<20+123)
	b := imageData(2, 2<<20)
	writeImages(t, root, "s1", map[string][]byte{"a": a, "b": b})
	s := mustOpen(t, root, "s1")
	if m := s.Manifest(); m.Schema != SchemaVersion || len(m.VMs[0].Images) != 1 || m.Blocks == nil {
		t.Fatalf("manifest: schema %d, images %+v, blocks %+v", m.Schema, m.VMs[0].Images, m.Blocks)
	}
	for vm, want := range map[string][]byte{"a": a, "b": b} {
		if got := restoredImage(t, s, vm); !bytes.Equal(got, want) {
			t.Errorf("vm %s: restored %d bytes differ from the %d written", vm, len(got), len(want))
		}
	}
	if probs, err := s.Verify(context.Background()); err != nil || len(probs) != 0 {
		t.Fatalf("Verify = %v, %v; want no problem", probs, err)
	}
	s.Close()

	// The same memory with 1 % of its pages changed.
	a2 := bytes.Clone(a)
	for p := 0; p < len(a2)/pageSize; p += 100 {
		a2[p*pageSize+7] ^= 0x5a
	}
	st := writeImages(t, root, "s2", map[string][]byte{"a": a2, "b": b})
	infos, err := List(root)
	if err != nil {
		t.Fatal(err)
	}
	if len(infos) != 2 {
		t.Fatalf("List: %d snapshots, want 2", len(infos))
	}
	first, second := infos[0], infos[1]
	logical := int64(len(a) + len(b) + len("cfg"))
	if first.Logical != logical || first.Images != 2 {
		t.Errorf("List: logical %d, images %d; want %d, 2", first.Logical, first.Images, logical)
	}
	if first.Stored <= 0 || first.Stored >= logical || first.Added.Bytes() < first.Stored {
		t.Errorf("first snapshot: stored %d, added %d, for %d logical bytes", first.Stored, first.Added.Bytes(), logical)
	}
	// 1 % of a's pages changed: each dirties one 64 KiB block of its own,
	// stored anew (raw at most) with a new index.
	dirtied := int64((len(a2)/pageSize + 99) / 100)
	if limit := dirtied*(64<<10+64) + pages.EncodedSize("a/memory", pagedLength(int64(len(a2))), 64<<10); second.Added.Bytes() > limit || second.Added.Bytes() == 0 {
		t.Errorf("second snapshot added %d bytes, want some and at most %d", second.Added.Bytes(), limit)
	}
	if st["b"].NewObjects != 0 {
		t.Errorf("unchanged image b stored %d new objects, want 0", st["b"].NewObjects)
	}
	s2 := mustOpen(t, root, "s2")
	defer s2.Close()
	if got := restoredImage(t, s2, "a"); !bytes.Equal(got, a2) {
		t.Error("second snapshot: image a differs")
	}
}

// TestImageDamage flips a byte of a block object and of an index file:
// Verify and RestoreImage name the VM, the image, the block and its offset;
// GC refuses to collect while an index is unreadable.
func TestImageDamage(t *testing.T) {
	root := t.TempDir()
	a := imageData(3, 1<<20)
	writeImages(t, root, "s", map[string][]byte{"a": a})
	s := mustOpen(t, root, "s")
	defer s.Close()
	im, err := s.Image("a", "memory")
	if err != nil {
		t.Fatal(err)
	}
	x, ce := loadIndex(root, "s", "a", im)
	if ce != nil {
		t.Fatal(ce)
	}
	blk := -1
	for i, e := range x.Blocks {
		if e.Mask != 0 && i > 3 {
			blk = i
			break
		}
	}
	if blk < 0 {
		t.Fatal("fixture: no non-zero block after block 3")
	}
	path := newBlockPool(root).path(x.Blocks[blk].Addr)
	flipByte(t, path, 9, 0x01)
	probs, err := s.Verify(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(probs) != 1 {
		t.Fatalf("Verify: %d problems %v, want 1", len(probs), probs)
	}
	p := probs[0]
	off := int64(blk) * int64(im.BlockSize)
	if p.VM != "a" || p.Image != "memory" || p.Chunk != blk || p.Offset != off || p.Path != path {
		t.Errorf("Verify: %+v; want vm a, image memory, block %d at %#x, %s", p, blk, off, path)
	}
	if msg := p.Error(); !strings.Contains(msg, `vm "a" image "memory" block`) || !strings.Contains(msg, "offset 0x") {
		t.Errorf("message %q does not name vm, image and offset", msg)
	}
	_, err = s.RestoreImage("a", "memory", filepath.Join(t.TempDir(), "img"), pages.RestoreOptions{})
	var rce *CorruptError
	if !errors.As(err, &rce) || rce.Image != "memory" || rce.Chunk != blk || rce.Offset != off {
		t.Errorf("RestoreImage = %v; want a CorruptError at block %d", err, blk)
	}
	flipByte(t, path, 9, 0x01) // heal it

	ipath := indexPath(root, im.Index)
	flipByte(t, ipath, 40, 0x80)
	probs, _ = s.Verify(context.Background())
	if len(probs) != 1 || probs[0].Image != "memory" || probs[0].Chunk != -1 || probs[0].Path != ipath {
		t.Errorf("Verify of a damaged index: %v; want one problem naming the index", probs)
	}
	s.Close()
	if _, err := GC(root, GCOptions{}); err == nil || !errors.Is(err, ErrCorrupt) {
		t.Errorf("GC with a damaged index = %v, want a refusal (ErrCorrupt)", err)
	}
}

// TestImageGC deletes one of two snapshots sharing blocks: GC removes the
// blocks and index only the deleted one referenced, and the other still
// restores.
func TestImageGC(t *testing.T) {
	root := t.TempDir()
	a := imageData(4, 1<<20)
	writeImages(t, root, "keep", map[string][]byte{"a": a})
	writeImages(t, root, "drop", map[string][]byte{"a": imageData(5, 1<<20)})
	before := len(poolFiles(t, root, blocksDir))
	if err := Delete(root, "drop"); err != nil {
		t.Fatal(err)
	}
	st, err := GC(root, GCOptions{})
	if err != nil {
		t.Fatal(err)
	}
	after := len(poolFiles(t, root, blocksDir))
	if st.Removed == 0 || after >= before {
		t.Errorf("GC removed %d files; blocks %d -> %d, want fewer", st.Removed, before, after)
	}
	if n := len(poolFiles(t, root, imagesDir)); n != 1 {
		t.Errorf("%d index files after GC, want 1", n)
	}
	s := mustOpen(t, root, "keep")
	defer s.Close()
	if probs, _ := s.Verify(context.Background()); len(probs) != 0 {
		t.Errorf("kept snapshot after GC: %v", probs)
	}
	if got := restoredImage(t, s, "a"); !bytes.Equal(got, a) {
		t.Error("kept snapshot's image differs after GC")
	}
}

// TestImageDamagedPoolHealed replaces a block object with garbage before a
// second snapshot of the same memory: the writer does not trust it, writes
// a sound one over it, and both snapshots verify.
func TestImageDamagedPoolHealed(t *testing.T) {
	root := t.TempDir()
	a := imageData(6, 1<<20)
	writeImages(t, root, "s1", map[string][]byte{"a": a})
	files := poolFiles(t, root, blocksDir)
	if err := os.WriteFile(files[0], []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	writeImages(t, root, "s2", map[string][]byte{"a": a})
	for _, n := range []string{"s1", "s2"} {
		s := mustOpen(t, root, n)
		if probs, _ := s.Verify(context.Background()); len(probs) != 0 {
			t.Errorf("%s: %v", n, probs)
		}
		s.Close()
	}
}

// TestImageManifestRules checks the page-image fields of a manifest:
// each bad value is refused when read, naming the field; a schema-1
// manifest still reads, and one with images is refused.
func TestImageManifestRules(t *testing.T) {
	img := func(m *Manifest) *Image { return &m.VMs[0].Images[0] }
	tests := []struct {
		name  string
		edit  func(m *Manifest)
		field string
	}{
		{"index not hex", func(m *Manifest) { img(m).Index = "../../etc/passwd" }, "images[0].index"},
		{"index size", func(m *Manifest) { img(m).IndexSize++ }, "images[0].index_size"},
		{"block size", func(m *Manifest) { img(m).BlockSize = 3 << 12 }, "images[0].block_size"},
		{"zero length", func(m *Manifest) { img(m).Length = 0 }, "images[0].length"},
		{"objects", func(m *Manifest) { img(m).Objects = 1 << 30 }, "images[0].objects"},
		{"stored", func(m *Manifest) { img(m).Stored = 1 }, "images[0].stored"},
		{"name of a stream", func(m *Manifest) { img(m).Name = "config" }, "images[0].name"},
		{"name with slash", func(m *Manifest) { img(m).Name = "a/b" }, "images[0].name"},
		{"no totals", func(m *Manifest) { m.Blocks = nil }, "blocks"},
		{"totals too big", func(m *Manifest) { m.Blocks.Stored = 1 << 50 }, "blocks"},
		{"schema 1 with images", func(m *Manifest) { m.Schema = 1 }, "schema"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			writeImages(t, root, "s", map[string][]byte{"a": imageData(7, 256<<10)})
			rewriteManifest(t, root, "s", tt.edit)
			s, err := Open(root, "s")
			if err == nil {
				s.Close()
				t.Fatal("Open succeeded, want an error")
			}
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), tt.field) {
				t.Errorf("Open = %v, want ErrCorrupt naming %s", err, tt.field)
			}
		})
	}
	t.Run("schema 1 without images", func(t *testing.T) {
		root := t.TempDir()
		writeSnapshot(t, root, "old", testMeta(), content{"a": {"memory": []byte("mem")}})
		rewriteManifest(t, root, "old", func(m *Manifest) { m.Schema = 1 })
		s := mustOpen(t, root, "old")
		defer s.Close()
		if got, err := readStream(s, "a", "memory"); err != nil || string(got) != "mem" {
			t.Errorf("schema-1 snapshot: %q, %v", got, err)
		}
	})
}

// FuzzImageIndex puts arbitrary bytes where a snapshot's index file is:
// RestoreImage, Verify and GC must never panic, and must fail with
// ErrCorrupt unless the bytes are the real index.
func FuzzImageIndex(f *testing.F) {
	root := f.TempDir()
	writeImages(f, root, "s", map[string][]byte{"a": imageData(8, 300<<10)})
	s := mustOpen(f, root, "s")
	im, _ := s.Image("a", "memory")
	s.Close()
	ipath := indexPath(root, im.Index)
	real, err := os.ReadFile(ipath)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(real)
	f.Add(real[:len(real)-1])
	f.Add([]byte("VNPI"))
	damaged := bytes.Clone(real)
	damaged[30] ^= 1
	f.Add(damaged)
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := os.WriteFile(ipath, data, 0o644); err != nil {
			t.Fatal(err)
		}
		s := mustOpen(t, root, "s")
		defer s.Close()
		_, err := s.RestoreImage("a", "memory", filepath.Join(t.TempDir(), "img"), pages.RestoreOptions{})
		probs, _ := s.Verify(context.Background())
		if bytes.Equal(data, real) {
			if err != nil || len(probs) != 0 {
				t.Fatalf("the real index: restore %v, verify %v", err, probs)
			}
			return
		}
		if !errors.Is(err, ErrCorrupt) || len(probs) == 0 {
			t.Fatalf("restore %v, verify %v: want ErrCorrupt and a problem", err, probs)
		}
	})
}

// TestImageIndexVersions: a store written before BLAKE3 (version-1
// indexes, blocks addressed by SHA-256) still restores and verifies, a
// flipped byte in one of its blocks is still named by VM, image and offset,
// and a new snapshot of the same memory next to it (version 2, BLAKE3)
// restores the same bytes; GC keeps what each references.
func TestImageIndexVersions(t *testing.T) {
	root := t.TempDir()
	a := imageData(7, 2<<20)
	for _, c := range []struct {
		name string
		hash pages.Hash
	}{{"old", pages.HashSHA256}, {"new", pages.HashBLAKE3}} {
		w, err := Create(root, c.name, testMeta())
		if err != nil {
			t.Fatal(err)
		}
		w.pageOptions = pages.Options{Hash: c.hash}
		if _, err := w.ImageAt("a", "memory", bytes.NewReader(a), int64(len(a))); err != nil {
			t.Fatal(err)
		}
		if err := w.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	for name, version := range map[string]byte{"old": 1, "new": 2} {
		s := mustOpen(t, root, name)
		im, err := s.Image("a", "memory")
		if err != nil {
			t.Fatal(err)
		}
		raw, err := os.ReadFile(indexPath(root, im.Index))
		if err != nil {
			t.Fatal(err)
		}
		if raw[4] != version {
			t.Errorf("snapshot %s: index version %d, want %d", name, raw[4], version)
		}
		if got := restoredImage(t, s, "a"); !bytes.Equal(got, a) {
			t.Errorf("snapshot %s: restored image differs", name)
		}
		if probs, err := s.Verify(context.Background()); err != nil || len(probs) != 0 {
			t.Errorf("snapshot %s: Verify = %v, %v; want no problem", name, probs, err)
		}
		s.Close()
	}
	// The two snapshots share no block: their addresses differ.
	if n := len(poolFiles(t, root, blocksDir)); n < 2 {
		t.Fatalf("%d block files, want those of both snapshots", n)
	}

	s := mustOpen(t, root, "old")
	im, _ := s.Image("a", "memory")
	x, ce := loadIndex(root, "old", "a", im)
	if ce != nil {
		t.Fatal(ce)
	}
	blk := -1
	for i, e := range x.Blocks {
		if e.Mask != 0 && i > 2 {
			blk = i
			break
		}
	}
	if x.Hash != pages.HashSHA256 || blk < 0 {
		t.Fatalf("old index: hash %v, first non-zero block after 2: %d", x.Hash, blk)
	}
	path := newBlockPool(root).path(x.Blocks[blk].Addr)
	flipByte(t, path, 20, 0x04)
	probs, err := s.Verify(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	off := int64(blk) * int64(im.BlockSize)
	if len(probs) != 1 || probs[0].VM != "a" || probs[0].Image != "memory" || probs[0].Offset != off {
		t.Errorf("Verify of a damaged version-1 block: %v; want vm a, image memory, offset %#x", probs, off)
	}
	flipByte(t, path, 20, 0x04)
	s.Close()

	if err := Delete(root, "new"); err != nil {
		t.Fatal(err)
	}
	if _, err := GC(root, GCOptions{}); err != nil {
		t.Fatal(err)
	}
	s = mustOpen(t, root, "old")
	defer s.Close()
	if got := restoredImage(t, s, "a"); !bytes.Equal(got, a) {
		t.Error("old snapshot after GC: restored image differs")
	}
}
