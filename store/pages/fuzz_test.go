package pages_test

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"testing"

	"github.com/vnsnap/vnsnap/store/pages"
)

func validIndex(t testing.TB, length int64, bs int, fill func(i, np int, b *pages.BlockRef)) []byte {
	t.Helper()
	x := &pages.Index{Name: "vm/memory", Length: length, BlockSize: bs, Blocks: make([]pages.BlockRef, pages.NumBlocks(length, bs))}
	for i := range x.Blocks {
		np := int(min(int64(bs), length-int64(i)*int64(bs)) / pages.PageSize)
		fill(i, np, &x.Blocks[i])
	}
	b, err := x.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func someBlocks(i, np int, b *pages.BlockRef) {
	if i%3 == 0 {
		return
	}
	b.Mask = (uint64(i)*0x9e3779b97f4a7c15 | 1) & (1<<np - 1)
	b.Addr[0], b.Addr[31] = byte(i), 1
}

// FuzzDecodeIndex: DecodeIndex never panics, and whatever it accepts encodes
// back to the same bytes.
func FuzzDecodeIndex(f *testing.F) {
	f.Add(validIndex(f, 0, 4096, someBlocks))
	f.Add(validIndex(f, 5*4096, 16384, func(i, np int, b *pages.BlockRef) {
		if i == 1 {
			b.Mask, b.Addr[3] = 0x1, 9
		}
	}))
	f.Add(validIndex(f, 1<<20, 1<<18, someBlocks))
	f.Add([]byte("VNPI"))
	f.Fuzz(func(t *testing.T, b []byte) {
		x, err := pages.DecodeIndex("fuzz", b)
		if err != nil {
			if !errors.Is(err, pages.ErrIndex) {
				t.Fatalf("error %v does not wrap ErrIndex", err)
			}
			return
		}
		enc, err := x.MarshalBinary()
		if err != nil {
			t.Fatalf("accepted index does not encode: %v", err)
		}
		if !bytes.Equal(enc, b) {
			t.Fatalf("accepted index encodes to different bytes")
		}
	})
}

// TestMalformedIndex: each kind of malformed index is rejected, even with a
// valid checksum (a writer bug, not damage), and so is every single-byte
// change of a valid one.
func TestMalformedIndex(t *testing.T) {
	valid := validIndex(t, 10*4096, 16384, someBlocks)
	if _, err := pages.DecodeIndex("valid", valid); err != nil {
		t.Fatalf("valid index: %v", err)
	}
	// reseal recomputes the trailing checksum after an edit.
	reseal := func(b []byte) []byte {
		b = bytes.Clone(b)
		body := b[:len(b)-32]
		sum := sha256Sum(body)
		copy(b[len(body):], sum[:])
		return b
	}
	edit := func(f func(b []byte) []byte) []byte { return reseal(f(bytes.Clone(valid))) }
	entry := 18 + len("vm/memory") // first entry
	for _, c := range []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"short", valid[:20]},
		{"magic", edit(func(b []byte) []byte { b[0] = 'X'; return b })},
		{"version 0", edit(func(b []byte) []byte { b[4] = 0; return b })},
		{"version 3", edit(func(b []byte) []byte { b[4] = 3; return b })},
		{"page shift", edit(func(b []byte) []byte { b[6] = 13; return b })},
		{"block shift small", edit(func(b []byte) []byte { b[7] = 11; return b })},
		{"block shift large", edit(func(b []byte) []byte { b[7] = 19; return b })},
		{"length not pages", edit(func(b []byte) []byte { b[8] = 1; return b })},
		{"length huge", edit(func(b []byte) []byte { b[15] = 0x80; return b })},
		{"codec", edit(func(b []byte) []byte { b[16] = 7; return b })},
		{"name past end", edit(func(b []byte) []byte { b[17] = 255; return b })},
		{"name not UTF-8", edit(func(b []byte) []byte { b[18] = 0xff; return b })},
		{"entries truncated", reseal(append(bytes.Clone(valid[:len(valid)-32-1]), make([]byte, 32)...))},
		{"entries extra", reseal(append(bytes.Clone(valid[:len(valid)-32]), make([]byte, 41+32)...))},
		{"mask beyond block", edit(func(b []byte) []byte { b[entry+0] |= 0x10; return b })},
		{"mask without address", edit(func(b []byte) []byte { copy(b[entry+40+8:entry+80], make([]byte, 32)); return b })},
		{"address without mask", edit(func(b []byte) []byte { b[entry+8] = 1; return b })},
		{"checksum", func() []byte { b := bytes.Clone(valid); b[len(b)-1] ^= 1; return b }()},
	} {
		if _, err := pages.DecodeIndex(c.name, c.b); !errors.Is(err, pages.ErrIndex) {
			t.Errorf("%s: DecodeIndex error %v, want ErrIndex", c.name, err)
		}
	}
	for i := range valid {
		for _, bit := range []byte{0x01, 0x80} {
			b := bytes.Clone(valid)
			b[i] ^= bit
			if _, err := pages.DecodeIndex("flipped", b); !errors.Is(err, pages.ErrIndex) {
				t.Fatalf("byte %d ^ %#x: accepted (err %v)", i, bit, err)
			}
		}
	}
}

func sha256Sum(b []byte) [32]byte { return sha256.Sum256(b) }
