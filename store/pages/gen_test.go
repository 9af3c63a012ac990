package pages_test

import (
	"encoding/binary"
	"math/rand/v2"

	"github.com/vnsnap/vnsnap/store/pages"
)

// The VM-like memory generator. A family of like guests (same kernel and
// programs) shares a layout and most content; each guest has its own private
// regions. Everything is deterministic from the seeds.
//
// Memory is a sequence of page runs, each 1-63 pages long (mean 32, so runs
// start at arbitrary page offsets, not block boundaries). A run's kind is
// drawn with the weights of the brief: zero 45 %, repeated 20 % (a run of
// the family's shared 1 MiB page pool, e.g. a library's pages in the page
// cache, starting at a random pool page, so the same pages recur within a
// guest and across guests at different alignments), text 15 % (words from a
// 256-word vocabulary), random 20 %. A text or random run is private to the
// guest with probability privateFrac (its content comes from the guest's
// seed) and otherwise shared (from the family's seed).
const (
	privateFrac = 0.25
	poolPages   = 256
	maxRun      = 63
)

type family struct {
	seed  uint64
	words [][]byte
	pool  []byte
}

func newFamily(seed uint64) *family {
	r := rand.New(rand.NewPCG(seed, 1))
	f := &family{seed: seed}
	f.words = make([][]byte, 256)
	for i := range f.words {
		w := make([]byte, 3+r.IntN(8))
		for j := range w {
			w[j] = 'a' + byte(r.IntN(26))
		}
		f.words[i] = w
	}
	f.pool = make([]byte, poolPages*pages.PageSize)
	for p := range poolPages {
		page := f.pool[p*pages.PageSize : (p+1)*pages.PageSize]
		if p%2 == 0 {
			f.text(r, page)
		} else {
			fillRandom(r, page)
		}
	}
	return f
}

func (f *family) text(r *rand.Rand, page []byte) {
	for i := 0; i < len(page); {
		w := f.words[r.IntN(len(f.words))]
		i += copy(page[i:], w)
		if i < len(page) {
			page[i] = ' '
			i++
		}
	}
}

func fillRandom(r *rand.Rand, b []byte) {
	for i := 0; i+8 <= len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], r.Uint64())
	}
}

// guest returns guest g's memory image of the given number of pages.
func (f *family) guest(g uint64, npages int) []byte {
	img := make([]byte, npages*pages.PageSize)
	layout := rand.New(rand.NewPCG(f.seed, 2))
	owner := rand.New(rand.NewPCG(f.seed^g, 3))
	for p, region := 0, uint64(0); p < npages; region++ {
		n := min(1+layout.IntN(maxRun), npages-p)
		run := img[p*pages.PageSize : (p+n)*pages.PageSize]
		k := layout.IntN(100)
		src := f.seed
		if owner.Float64() < privateFrac {
			src = g<<32 | 0xabcd // the guest's own content
		}
		content := rand.New(rand.NewPCG(src, region))
		switch {
		case k < 45: // zero
		case k < 65: // repeated: shared pool pages
			start := layout.IntN(poolPages)
			for i := range n {
				q := (start + i) % poolPages
				copy(run[i*pages.PageSize:], f.pool[q*pages.PageSize:(q+1)*pages.PageSize])
			}
		case k < 80: // text
			for i := range n {
				f.text(content, run[i*pages.PageSize:(i+1)*pages.PageSize])
			}
		default: // random
			fillRandom(content, run)
		}
		p += n
	}
	return img
}

// idle returns a copy of img as an idle guest leaves it between two
// snapshots: 0.5 % of its pages written, in runs of mean 4 pages at random
// places, each written page getting 256 new bytes at a random offset.
func idle(img []byte, seed uint64) []byte {
	out := append([]byte(nil), img...)
	r := rand.New(rand.NewPCG(seed, 4))
	npages := len(img) / pages.PageSize
	target := npages / 200
	for dirtied := 0; dirtied < target; {
		start := r.IntN(npages)
		n := 1 + int(r.ExpFloat64()*3)
		for p := start; p < min(start+n, npages); p++ {
			off := p*pages.PageSize + r.IntN(pages.PageSize-256)
			fillRandom(r, out[off:off+256])
			dirtied++
		}
	}
	return out
}

// kinds counts img's zero pages and its distinct non-zero pages.
func kinds(img []byte) (zero, distinct int) {
	seen := make(map[string]bool)
	var z [pages.PageSize]byte
	for p := 0; p < len(img); p += pages.PageSize {
		page := img[p : p+pages.PageSize]
		if string(page) == string(z[:]) {
			zero++
			continue
		}
		seen[string(page)] = true
	}
	return zero, len(seen)
}
