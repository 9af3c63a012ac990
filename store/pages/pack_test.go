package pages_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/vnsnap/vnsnap/store/pages"
)

// TestPackSink: images round-trip through a pack sink, dedup across images,
// survive reopening, a record cut short by a crash is absent, and a flipped
// byte in a pack is named by image and offset.
func TestPackSink(t *testing.T) {
	dir := t.TempDir()
	ps, err := pages.OpenPackSink(dir)
	if err != nil {
		t.Fatal(err)
	}
	g := newIngester(t, ps, pages.Options{})
	f := newFamily(31)
	a, b := f.guest(1, 2048), f.guest(2, 2048)
	xa, sa := write(t, g, "s1/a", a, "at", nil)
	xb, sb := write(t, g, "s1/b", b, "at", nil)
	if sb.NewBytes*2 > sa.NewBytes || sb.Dedup == 0 {
		t.Errorf("like guest in a pack sink: %+v after %+v, want most blocks deduplicated", sb, sa)
	}
	if err := ps.Close(); err != nil {
		t.Fatal(err)
	}
	// Reopen: every object is found again.
	ps, err = pages.OpenPackSink(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer ps.Close()
	for _, c := range []struct {
		x   *pages.Index
		img []byte
	}{{xa, a}, {xb, b}} {
		if got := restoreBytes(t, c.x, ps, false); !bytes.Equal(got, c.img) {
			t.Errorf("%s after reopening: restore differs", c.x.Name)
		}
	}
	// Flip a byte inside one object of b's that a does not share.
	shared := make(map[pages.Addr]bool)
	for _, r := range xa.Blocks {
		shared[r.Addr] = true
	}
	victim := -1
	for i, r := range xb.Blocks {
		if r.Mask != 0 && !shared[r.Addr] {
			victim = i
			break
		}
	}
	if victim < 0 {
		t.Fatal("b has no block of its own")
	}
	path, off, ok := ps.Locate(xb.Blocks[victim].Addr)
	if !ok {
		t.Fatal("Locate: object not found")
	}
	fl, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	var one [1]byte
	fl.ReadAt(one[:], off+7)
	one[0] ^= 0x40
	fl.WriteAt(one[:], off+7)
	fl.Close()
	probs := pages.Verify(xb, ps, 2)
	if len(probs) == 0 || probs[0].Image != "s1/b" || probs[0].Block != victim || probs[0].Offset != xb.Offset(victim) {
		t.Errorf("Verify after a flipped byte: %v; want image s1/b block %d at %#x first", probs, victim, xb.Offset(victim))
	}
	if p := pages.Verify(xa, ps, 2); len(p) != 0 {
		t.Errorf("Verify of the untouched image: %v", p)
	}
	_, err = pages.Restore(xb, ps, make(memImage, xb.Length), pages.RestoreOptions{})
	if !errors.Is(err, pages.ErrCorrupt) {
		t.Errorf("Restore after a flipped byte: %v, want ErrCorrupt", err)
	}
}

// TestPackSinkTornRecord: a record cut short (a crash while appending) is
// ignored when the sink is opened again, and the objects before it remain.
func TestPackSinkTornRecord(t *testing.T) {
	dir := t.TempDir()
	ps, err := pages.OpenPackSink(dir)
	if err != nil {
		t.Fatal(err)
	}
	var a1, a2 pages.Addr
	a1[0], a2[0] = 1, 2
	if _, err := ps.Put(a1, []byte("first object")); err != nil {
		t.Fatal(err)
	}
	if _, err := ps.Put(a2, bytes.Repeat([]byte("x"), 1000)); err != nil {
		t.Fatal(err)
	}
	ps.Close()
	pack := filepath.Join(dir, "00000000.pack")
	fi, err := os.Stat(pack)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(pack, fi.Size()-10); err != nil {
		t.Fatal(err)
	}
	ps, err = pages.OpenPackSink(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { ps.Close() }()
	if ok, _ := ps.Has(a2); ok {
		t.Errorf("torn record is present")
	}
	if got, err := ps.Get(a1, nil); err != nil || string(got) != "first object" {
		t.Errorf("Get(first) = %q, %v", got, err)
	}
	// The next Put overwrites the torn tail.
	if created, err := ps.Put(a2, []byte("again")); err != nil || !created {
		t.Fatalf("Put after reopening: %v, %v", created, err)
	}
	if got, err := ps.Get(a2, nil); err != nil || string(got) != "again" {
		t.Errorf("Get(second) = %q, %v", got, err)
	}
	ps.Close()
	ps, err = pages.OpenPackSink(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := ps.Get(a2, nil); err != nil || string(got) != "again" {
		t.Errorf("Get(second) after reopening again = %q, %v", got, err)
	}
}
