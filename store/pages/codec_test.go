package pages_test

import (
	"bytes"
	"math/rand/v2"
	"testing"

	"github.com/vnsnap/vnsnap/store/pages"
)

// TestIncompressibleStoredRaw: with compression on, a block the codec does
// not shrink is stored as a raw object and a compressible one compressed,
// whether the block was read in place (IngestBytes, no zero page), packed
// into a buffer (zero pages) or read into one (IngestAt), into a sink that
// takes parts (MemSink), a plain one and an in-order one (PackSink); every
// object checks (Verify: CRC, size, hash) and the image restores.
func TestIncompressibleStoredRaw(t *testing.T) {
	const bp = 16 // pages per block
	r := rand.New(rand.NewPCG(7, 8))
	f := newFamily(3)
	img := make([]byte, 4*bp*pages.PageSize)
	page := func(b, p int) []byte { return img[(b*bp+p)*pages.PageSize : (b*bp+p+1)*pages.PageSize] }
	// Block 0 random, block 1 random with zero pages, block 2 text, block
	// 3 text with zero pages.
	for p := range bp {
		fillRandom(r, page(0, p))
		f.text(r, page(2, p))
		if p%3 != 0 {
			fillRandom(r, page(1, p))
			f.text(r, page(3, p))
		}
	}
	wantCodec := map[pages.Codec][4]byte{
		pages.CodecS2:   {0, 0, 2, 2},
		pages.CodecZstd: {0, 0, 1, 1},
	}
	for _, c := range []pages.Codec{pages.CodecS2, pages.CodecZstd} {
		for _, mode := range []string{"bytes", "at"} {
			for _, sk := range []string{"mem", "plain", "pack"} {
				var sink pages.Sink
				switch sk {
				case "mem":
					sink = pages.NewMemSink()
				case "plain":
					sink = plainSink{pages.NewMemSink()}
				case "pack":
					ps, err := pages.OpenPackSink(t.TempDir())
					if err != nil {
						t.Fatal(err)
					}
					defer ps.Close()
					sink = ps
				}
				g := newIngester(t, sink, pages.Options{Codec: c, BlockSize: bp * pages.PageSize})
				x, _ := write(t, g, "img", img, mode, nil)
				for i, e := range x.Blocks {
					obj, err := sink.Get(e.Addr, nil)
					if err != nil {
						t.Fatalf("%v %s %s: block %d: %v", c, mode, sk, i, err)
					}
					if got, want := obj[0], wantCodec[c][i]; got != want {
						t.Errorf("%v %s %s: block %d stored with codec byte %d, want %d", c, mode, sk, i, got, want)
					}
				}
				if p := pages.Verify(x, sink, 2); len(p) != 0 {
					t.Errorf("%v %s %s: Verify: %v", c, mode, sk, p)
				}
				if got := restoreBytes(t, x, sink, false); !bytes.Equal(got, img) {
					t.Errorf("%v %s %s: restore differs", c, mode, sk)
				}
			}
		}
	}
}
