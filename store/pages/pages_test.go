package pages_test

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/vnsnap/vnsnap/store/pages"
	"github.com/zeebo/blake3"
)

var (
	flagSeed  = flag.Uint64("seed", 0, "run only this seed of TestRoundTripProperty")
	flagSeeds = flag.Int("seeds", 0, "number of seeds for TestRoundTripProperty (default 40, 10 with -short)")
)

// memImage is an io.WriterAt over a byte slice.
type memImage []byte

func (m memImage) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > int64(len(m)) {
		return 0, fmt.Errorf("write of %d at %d outside %d bytes", len(p), off, len(m))
	}
	return copy(m[off:], p), nil
}

func newIngester(t testing.TB, sink pages.Sink, o pages.Options) *pages.Ingester {
	t.Helper()
	g, err := pages.NewIngester(sink, o)
	if err != nil {
		t.Fatalf("NewIngester: %v", err)
	}
	t.Cleanup(func() { g.Close() })
	return g
}

// write ingests img in the given mode: "stream" (Write in odd-sized pieces),
// "readfrom", "pages" (PutPage, shuffled within windows of 64 pages, zero
// pages sometimes left out) or "at" (IngestAt).
func write(t testing.TB, g *pages.Ingester, name string, img []byte, mode string, r *rand.Rand) (*pages.Index, pages.Stats) {
	t.Helper()
	var (
		x   *pages.Index
		st  pages.Stats
		err error
	)
	switch mode {
	case "at":
		x, st, err = g.IngestAt(name, bytes.NewReader(img), int64(len(img)))
	case "bytes":
		x, st, err = g.IngestBytes(name, img)
	case "stream", "readfrom", "unknown":
		length := int64(len(img))
		if mode == "unknown" {
			length = -1
		}
		var w *pages.ImageWriter
		if w, err = g.Begin(name, length); err != nil {
			t.Fatalf("Begin: %v", err)
		}
		if mode == "readfrom" {
			_, err = w.ReadFrom(bytes.NewReader(img))
		} else {
			for rest := img; len(rest) > 0 && err == nil; {
				n := min(len(rest), 1+r.IntN(200000))
				_, err = w.Write(rest[:n])
				rest = rest[n:]
			}
		}
		if err != nil {
			t.Fatalf("%s: %v", mode, err)
		}
		x, st, err = w.Close()
	case "pages", "pages-seq":
		var w *pages.ImageWriter
		if w, err = g.Begin(name, int64(len(img))); err != nil {
			t.Fatalf("Begin: %v", err)
		}
		np := len(img) / pages.PageSize
		order := make([]int, np)
		for i := range order {
			order[i] = i
		}
		for s := 0; s < np && mode == "pages"; s += 64 {
			win := order[s:min(s+64, np)]
			r.Shuffle(len(win), func(i, j int) { win[i], win[j] = win[j], win[i] })
		}
		var zero [pages.PageSize]byte
		for _, p := range order {
			page := img[p*pages.PageSize : (p+1)*pages.PageSize]
			if bytes.Equal(page, zero[:]) && r.IntN(2) == 0 {
				continue // never put: reads as zero
			}
			if err := w.PutPage(uint64(p), page); err != nil {
				t.Fatalf("PutPage(%#x): %v", p, err)
			}
		}
		x, st, err = w.Close()
	default:
		t.Fatalf("unknown mode %q", mode)
	}
	if err != nil {
		t.Fatalf("ingest %s (%s): %v", name, mode, err)
	}
	return x, st
}

func restoreBytes(t testing.TB, x *pages.Index, sink pages.Sink, zeroFill bool) []byte {
	t.Helper()
	out := make(memImage, x.Length)
	if zeroFill {
		for i := range out {
			out[i] = 0xa5
		}
	}
	if _, err := pages.Restore(x, sink, out, pages.RestoreOptions{ZeroFill: zeroFill, Workers: 3}); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	return out
}

// TestRoundTripProperty writes random VM-like images of random sizes with
// random block sizes, pool sizes, worker counts and input modes, and checks
// that restore gives back every byte and that the index survives encoding.
func TestRoundTripProperty(t *testing.T) {
	n := *flagSeeds
	if n == 0 {
		n = 40
		if testing.Short() {
			n = 10
		}
	}
	seeds := make([]uint64, 0, n)
	if *flagSeed != 0 {
		seeds = append(seeds, *flagSeed)
	} else {
		for i := range n {
			seeds = append(seeds, uint64(i+1))
		}
	}
	modes := []string{"stream", "readfrom", "unknown", "pages", "at", "bytes"}
	for _, seed := range seeds {
		r := rand.New(rand.NewPCG(seed, 99))
		bs := pages.PageSize << r.IntN(7)
		mode := modes[r.IntN(len(modes))]
		o := pages.Options{BlockSize: bs, Workers: 1 + r.IntN(4), Buffers: 2 + r.IntN(8), Codec: pages.Codec(r.IntN(3)), Hash: pages.Hash(r.IntN(2))}
		npages := r.IntN(700)
		img := newFamily(seed).guest(seed, npages)
		sink := pages.NewMemSink()
		g := newIngester(t, sink, o)
		x, st := write(t, g, "vm-a/memory", img, mode, r)
		fail := func(format string, args ...any) {
			t.Helper()
			t.Errorf("seed %d (%d pages, block %d, %s, %+v): %s\nrerun: go test ./store/pages -run TestRoundTripProperty -seed %d",
				seed, npages, bs, mode, o, fmt.Sprintf(format, args...), seed)
		}
		if st.Length != int64(len(img)) || x.Length != int64(len(img)) {
			fail("lengths %d, %d, want %d", st.Length, x.Length, len(img))
		}
		zero, _ := kinds(img)
		if st.ZeroPages != int64(zero) {
			fail("ZeroPages %d, want %d", st.ZeroPages, zero)
		}
		if got := restoreBytes(t, x, sink, true); !bytes.Equal(got, img) {
			fail("restore with ZeroFill differs")
		}
		if got := restoreBytes(t, x, sink, false); !bytes.Equal(got, img) {
			fail("restore into zeros differs")
		}
		enc, err := x.MarshalBinary()
		if err != nil {
			fail("MarshalBinary: %v", err)
			continue
		}
		y, err := pages.DecodeIndex("test", enc)
		if err != nil {
			fail("DecodeIndex: %v", err)
			continue
		}
		if d := cmp.Diff(x, y); d != "" {
			fail("index after encoding (-want +got):\n%s", d)
		}
		if p := pages.Verify(x, sink, 2); len(p) != 0 {
			fail("Verify: %v", p)
		}
		if x.Hash != o.Hash || enc[4] != map[pages.Hash]byte{pages.HashSHA256: 1, pages.HashBLAKE3: 2}[o.Hash] {
			fail("index hash %v, version %d, for Options.Hash %v", x.Hash, enc[4], o.Hash)
		}
		if i, got, want := naiveAddrs(img, x); i >= 0 {
			fail("block %d: address %s, want %v of its non-zero pages, %s", i, got, o.Hash, want)
		}
	}
}

// naiveAddrs recomputes every block's address from img, page by page, and
// returns the first block whose index entry differs, or -1.
func naiveAddrs(img []byte, x *pages.Index) (int, pages.Addr, pages.Addr) {
	var zero [pages.PageSize]byte
	for i, e := range x.Blocks {
		var packed []byte
		for p := 0; p < x.BlockSize/pages.PageSize; p++ {
			off := i*x.BlockSize + p*pages.PageSize
			if off < len(img) && string(img[off:off+pages.PageSize]) != string(zero[:]) {
				packed = append(packed, img[off:off+pages.PageSize]...)
			}
		}
		var want pages.Addr
		switch {
		case packed == nil:
		case x.Hash == pages.HashSHA256:
			want = sha256.Sum256(packed)
		default:
			want = blake3.Sum256(packed)
		}
		if e.Addr != want {
			return i, e.Addr, want
		}
	}
	return -1, pages.Addr{}, pages.Addr{}
}

// TestCodecsShareObjects: an object is stored once, by whichever codec
// wrote it first, and every image that holds the block reads it, whatever
// its own ingester's codec.
func TestCodecsShareObjects(t *testing.T) {
	img := newFamily(5).guest(5, 300)
	sink := pages.NewMemSink()
	var xs []*pages.Index
	for i, c := range []pages.Codec{pages.CodecS2, pages.CodecZstd, pages.CodecRaw} {
		g := newIngester(t, sink, pages.Options{Codec: c})
		x, st := write(t, g, fmt.Sprintf("vm%d/memory", i), img, "bytes", nil)
		if i > 0 && st.NewBytes != 0 {
			t.Errorf("%v: %d new bytes for an image already stored by %v", c, st.NewBytes, pages.CodecS2)
		}
		xs = append(xs, x)
	}
	for _, x := range xs {
		if got := restoreBytes(t, x, sink, false); !bytes.Equal(got, img) {
			t.Errorf("%s: restore differs", x.Name)
		}
	}
}

func TestUnknownCodecRefused(t *testing.T) {
	if _, err := pages.NewIngester(pages.NewMemSink(), pages.Options{Codec: 7}); err == nil || !strings.Contains(err.Error(), "codec") {
		t.Fatalf("NewIngester with codec 7: %v, want an error naming the codec", err)
	}
}

// TestFlippedByte damages one stored object in a file sink, byte by byte,
// and checks that restore and verify name the image and the guest offset of
// every block that uses it.
func TestFlippedByte(t *testing.T) {
	dir := t.TempDir()
	sink, err := pages.NewFileSink(dir)
	if err != nil {
		t.Fatal(err)
	}
	g := newIngester(t, sink, pages.Options{})
	img := newFamily(7).guest(1, 1024)
	x, _ := write(t, g, "s1/vm-b/memory", img, "at", nil)
	// Pick the object of the first stored block after block 3, and find
	// every block that refers to it.
	target := -1
	for i, b := range x.Blocks {
		if b.Mask != 0 && i > 3 {
			target = i
			break
		}
	}
	if target < 0 {
		t.Fatal("no stored block")
	}
	addr := x.Blocks[target].Addr
	var users []int
	for i, b := range x.Blocks {
		if b.Addr == addr {
			users = append(users, i)
		}
	}
	path := sink.Path(addr)
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, pos := range []int{0, 1, 4, 5, len(orig) / 2, len(orig) - 1} {
		t.Run(fmt.Sprintf("byte%d", pos), func(t *testing.T) {
			bad := bytes.Clone(orig)
			bad[pos] ^= 0x01
			if err := os.WriteFile(path, bad, 0o644); err != nil {
				t.Fatal(err)
			}
			defer os.WriteFile(path, orig, 0o644)
			if _, err := pages.Restore(x, sink, make(memImage, x.Length), pages.RestoreOptions{SkipHash: true}); !errors.Is(err, pages.ErrCorrupt) {
				t.Errorf("Restore with SkipHash: %v, want ErrCorrupt", err)
			}
			_, err := pages.Restore(x, sink, make(memImage, x.Length), pages.RestoreOptions{})
			var ce *pages.CorruptError
			if !errors.As(err, &ce) || !errors.Is(err, pages.ErrCorrupt) {
				t.Fatalf("Restore: %v, want a *CorruptError", err)
			}
			if ce.Image != "s1/vm-b/memory" || ce.Addr != addr || ce.Offset != x.Offset(ce.Block) || !contains(users, ce.Block) {
				t.Errorf("Restore error names image %q block %d offset %#x object %s; want image s1/vm-b/memory, one of blocks %v, object %s",
					ce.Image, ce.Block, ce.Offset, ce.Addr, users, addr)
			}
			probs := pages.Verify(x, sink, 2)
			var got []int
			for _, p := range probs {
				got = append(got, p.Block)
				if p.Offset != int64(p.Block)*int64(x.BlockSize) || p.Image != x.Name {
					t.Errorf("Verify: %v names the wrong place", p)
				}
			}
			if d := cmp.Diff(users, got); d != "" {
				t.Errorf("Verify reported blocks (-want +got):\n%s\nfirst: %v", d, probs)
			}
		})
	}
	t.Run("missing", func(t *testing.T) {
		if err := os.Rename(path, path+".away"); err != nil {
			t.Fatal(err)
		}
		defer os.Rename(path+".away", path)
		_, err := pages.Restore(x, sink, make(memImage, x.Length), pages.RestoreOptions{})
		var ce *pages.CorruptError
		if !errors.As(err, &ce) || !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("Restore: %v, want a *CorruptError for a missing object", err)
		}
	})
	t.Run("index", func(t *testing.T) {
		enc, err := x.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		for _, pos := range []int{0, 5, 9, 20, len(enc) / 2, len(enc) - 1} {
			bad := bytes.Clone(enc)
			bad[pos] ^= 0x80
			if _, err := pages.DecodeIndex("s1/vm-b/memory.idx", bad); !errors.Is(err, pages.ErrIndex) {
				t.Errorf("index with byte %d flipped: DecodeIndex error %v, want ErrIndex", pos, err)
			} else if !bytes.Contains([]byte(err.Error()), []byte("s1/vm-b/memory.idx")) {
				t.Errorf("error %q does not name the index", err)
			}
		}
	})
}

func contains(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// countingSink counts calls, to show what zero pages cost.
type countingSink struct {
	pages.Sink
	mu             sync.Mutex
	has, put, gets int
}

func (c *countingSink) Has(a pages.Addr) (bool, error) {
	c.mu.Lock()
	c.has++
	c.mu.Unlock()
	return c.Sink.Has(a)
}

func (c *countingSink) Put(a pages.Addr, o []byte) (bool, error) {
	c.mu.Lock()
	c.put++
	c.mu.Unlock()
	return c.Sink.Put(a, o)
}

func (c *countingSink) Get(a pages.Addr, d []byte) ([]byte, error) {
	c.mu.Lock()
	c.gets++
	c.mu.Unlock()
	return c.Sink.Get(a, d)
}

// TestZeroPagesCostNothing: an all-zero image stores nothing and restores
// without a single object read; in a mixed image the stored objects hold the
// non-zero pages only.
func TestZeroPagesCostNothing(t *testing.T) {
	for _, mode := range []string{"at", "bytes", "stream", "pages"} {
		t.Run(mode, func(t *testing.T) {
			cs := &countingSink{Sink: pages.NewMemSink()}
			g := newIngester(t, cs, pages.Options{Buffers: 4})
			img := make([]byte, 16<<20)
			x, st := write(t, g, "zero", img, mode, rand.New(rand.NewPCG(1, 1)))
			if st.NewBytes != 0 || st.NewObjects != 0 || st.Blocks != 0 || cs.has != 0 || cs.put != 0 {
				t.Errorf("all-zero image: %+v, %d Has, %d Put; want nothing stored or asked", st, cs.has, cs.put)
			}
			if st.ZeroPages != int64(len(img)/pages.PageSize) {
				t.Errorf("ZeroPages %d, want %d", st.ZeroPages, len(img)/pages.PageSize)
			}
			if got := restoreBytes(t, x, cs, true); !bytes.Equal(got, img) || cs.gets != 0 {
				t.Errorf("restore: equal %v, %d Gets; want equal and 0", bytes.Equal(got, img), cs.gets)
			}
		})
	}
	t.Run("mixed", func(t *testing.T) {
		sink := pages.NewMemSink()
		g := newIngester(t, sink, pages.Options{})
		img := newFamily(3).guest(1, 4096)
		x, _ := write(t, g, "mixed", img, "at", nil)
		zero, _ := kinds(img)
		stored := 0
		for _, b := range x.Blocks {
			stored += b.Pages()
		}
		if want := len(img)/pages.PageSize - zero; stored != want {
			t.Errorf("index stores %d pages, want the %d non-zero ones", stored, want)
		}
	})
}

// TestDedup: identical and like images share blocks across VMs and
// snapshots; an idle guest's second snapshot adds little.
func TestDedup(t *testing.T) {
	sink := pages.NewMemSink()
	g := newIngester(t, sink, pages.Options{})
	f := newFamily(11)
	a := f.guest(1, 4096)
	_, st1 := write(t, g, "s1/a", a, "at", nil)
	if st1.NewObjects == 0 || st1.NewBytes == 0 {
		t.Fatalf("first image stored nothing: %+v", st1)
	}
	_, same := write(t, g, "s1/a-copy", a, "stream", rand.New(rand.NewPCG(1, 2)))
	if same.NewObjects != 0 || same.NewBytes != 0 || same.Dedup != same.Blocks {
		t.Errorf("identical image of another VM: %+v, want every block deduplicated", same)
	}
	_, like := write(t, g, "s1/b", f.guest(2, 4096), "at", nil)
	if like.NewBytes*2 > st1.NewBytes {
		t.Errorf("like guest stored %d new bytes, want under half of the first's %d", like.NewBytes, st1.NewBytes)
	}
	_, inc := write(t, g, "s2/a", idle(a, 5), "at", nil)
	if inc.NewBytes*10 > st1.NewBytes {
		t.Errorf("idle second snapshot stored %d new bytes, want under a tenth of the first's %d", inc.NewBytes, st1.NewBytes)
	}
	if inc.NewObjects == 0 {
		t.Errorf("idle second snapshot stored no new object, but pages changed")
	}
}

// discardSink stores nothing, so that allocation counts show the
// ingester's own memory.
type discardSink struct{}

func (discardSink) Has(pages.Addr) (bool, error)         { return false, nil }
func (discardSink) Put(pages.Addr, []byte) (bool, error) { return true, nil }
func (discardSink) Get(a pages.Addr, _ []byte) ([]byte, error) {
	return nil, fmt.Errorf("discard sink: %w", fs.ErrNotExist)
}

// TestBoundedMemory ingests several images at once through a pool of four
// buffers: no more buffers are ever allocated or in use, and the bytes
// allocated do not grow with the image size.
func TestBoundedMemory(t *testing.T) {
	const buffers = 4
	g := newIngester(t, discardSink{}, pages.Options{Buffers: buffers, Workers: 2})
	img := newFamily(5).guest(1, 64<<20/pages.PageSize)
	allocated := func(f func()) uint64 {
		var m0, m1 runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&m0)
		f()
		runtime.ReadMemStats(&m1)
		return m1.TotalAlloc - m0.TotalAlloc
	}
	r := rand.New(rand.NewPCG(1, 3))
	small := allocated(func() { write(t, g, "small", img[:16<<20], "at", nil) })
	large := allocated(func() {
		var wg sync.WaitGroup
		for i, mode := range []string{"at", "stream", "pages-seq"} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				write(t, g, fmt.Sprint("vm", i), img, mode, rand.New(rand.NewPCG(uint64(i), 3)))
			}()
		}
		wg.Wait()
	})
	_ = r
	if a, u, m := g.PoolStats(); a != buffers || m > buffers || m < 2 || u != 0 {
		t.Errorf("pool: %d buffers allocated, %d in use, at most %d in use; want %d allocated, 0 in use, 2..%d at most", a, u, m, buffers, buffers)
	}
	// 16 MiB alone vs 3 x 64 MiB at once: 176 MiB more input. Allow the
	// indexes (40 bytes per 64 KiB block) and the callers' page order, not
	// buffers per block.
	if large > small+8<<20 {
		t.Errorf("ingesting 3x64 MiB allocated %d bytes, 16 MiB %d: memory grows with the input", large, small)
	}
	t.Logf("allocated: 16 MiB image %d KiB, 3x64 MiB at once %d KiB", small>>10, large>>10)
}

// TestWriterErrors: contract violations fail with errors that name the
// image and the page.
func TestWriterErrors(t *testing.T) {
	g := newIngester(t, pages.NewMemSink(), pages.Options{BlockSize: 16 << 10, Buffers: 2})
	page := make([]byte, pages.PageSize)
	page[0] = 1
	w, err := g.Begin("e", 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.PutPage(3, make([]byte, pages.PageSize)); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		gpfn uint64
		data []byte
	}{
		{"beyond", 16, page},
		{"short", 4, page[:100]},
	} {
		if err := w.PutPage(c.gpfn, c.data); !errors.Is(err, pages.ErrPage) {
			t.Errorf("%s: PutPage error %v, want ErrPage", c.name, err)
		}
	}
	for p := range uint64(4) {
		if err := w.PutPage(p, page); err != nil { // page 3 twice: the last wins
			t.Fatal(err)
		}
	}
	if _, err := w.Write(page); err == nil {
		t.Errorf("Write after PutPage: no error")
	}
	if _, _, err := w.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	for _, c := range []struct {
		name   string
		length int64
		data   int
	}{{"not whole pages", -1, 5000}, {"short", 64 << 10, 8192}} {
		w, err := g.Begin(c.name, c.length)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(make([]byte, c.data)); err != nil {
			t.Fatal(err)
		}
		if _, _, err := w.Close(); err == nil {
			t.Errorf("%s: Close succeeded", c.name)
		}
	}
	if _, _, err := g.IngestAt("truncated", bytes.NewReader(make([]byte, 10000)), 64<<10); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("IngestAt of a short reader: %v, want io.ErrUnexpectedEOF", err)
	}
	if _, err := g.Begin("odd", 5000); err == nil {
		t.Errorf("Begin with a length of 5000: no error")
	}
}

// TestPutPageReopen resends pages of blocks already handed over, as a live
// migration's later passes do: the last version of every page wins.
func TestPutPageReopen(t *testing.T) {
	sink := pages.NewMemSink()
	g := newIngester(t, sink, pages.Options{BlockSize: 16 << 10, Buffers: 2, Workers: 2})
	f := newFamily(21)
	v1, v2 := f.guest(1, 300), f.guest(2, 300)
	want := bytes.Clone(v1)
	w, err := g.Begin("live", int64(len(v1)))
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(4, 4))
	for p := range 300 { // first pass, in order
		if err := w.PutPage(uint64(p), v1[p*pages.PageSize:(p+1)*pages.PageSize]); err != nil {
			t.Fatal(err)
		}
	}
	for range 200 { // later passes: dirtied pages, any order
		p := r.IntN(300)
		page := v2[p*pages.PageSize : (p+1)*pages.PageSize]
		if r.IntN(4) == 0 {
			page = make([]byte, pages.PageSize)
		}
		copy(want[p*pages.PageSize:], page)
		if err := w.PutPage(uint64(p), page); err != nil {
			t.Fatal(err)
		}
	}
	x, st, err := w.Close()
	if err != nil {
		t.Fatal(err)
	}
	if got := restoreBytes(t, x, sink, true); !bytes.Equal(got, want) {
		t.Errorf("restored image is not the last version of every page")
	}
	zero, _ := kinds(want)
	if st.ZeroPages != int64(zero) {
		t.Errorf("ZeroPages %d, want %d", st.ZeroPages, zero)
	}
}

// TestAbort: an aborted image returns its buffers, so the pool is whole
// again, whatever mode it was written in.
func TestAbort(t *testing.T) {
	g := newIngester(t, pages.NewMemSink(), pages.Options{Buffers: 3, BlockSize: 16 << 10})
	img := newFamily(2).guest(1, 100)
	for _, mode := range []string{"stream", "pages"} {
		w, err := g.Begin("aborted-"+mode, int64(len(img)))
		if err != nil {
			t.Fatal(err)
		}
		if mode == "stream" {
			if _, err := w.Write(img[:len(img)/2+100]); err != nil {
				t.Fatal(err)
			}
		} else {
			for p := 0; p < 100; p += 3 { // leaves blocks open
				if err := w.PutPage(uint64(p), img[p*pages.PageSize:(p+1)*pages.PageSize]); err != nil {
					t.Fatal(err)
				}
			}
		}
		if _, u, _ := g.PoolStats(); u == 0 {
			t.Fatalf("%s: no buffer in use before Abort", mode)
		}
		w.Abort()
		w.Abort()
		if _, u, _ := g.PoolStats(); u != 0 {
			t.Errorf("%s: %d buffers still in use after Abort", mode, u)
		}
		if _, _, err := w.Close(); err == nil {
			t.Errorf("%s: Close after Abort succeeded", mode)
		}
	}
	x, _ := write(t, g, "after", img, "at", nil)
	if x.Length != int64(len(img)) {
		t.Fatalf("image after aborts: length %d", x.Length)
	}
}

// TestDeterministic: the index (hence the image checksum) depends only on
// the image and the block size, not on workers, buffers or input mode.
func TestDeterministic(t *testing.T) {
	img := newFamily(13).guest(1, 1500)
	var want []byte
	for i, c := range []struct {
		mode             string
		workers, buffers int
	}{{"at", 1, 2}, {"at", 4, 16}, {"stream", 3, 5}, {"pages", 2, 3}, {"readfrom", 8, 64}, {"bytes", 2, 4}} {
		g := newIngester(t, pages.NewMemSink(), pages.Options{Workers: c.workers, Buffers: c.buffers})
		x, _ := write(t, g, "same", img, c.mode, rand.New(rand.NewPCG(uint64(i), 5)))
		got, err := x.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			want = got
		} else if !bytes.Equal(got, want) {
			t.Errorf("%+v: index differs from the first", c)
		}
	}
}

// orderSink records the order of Puts.
type orderSink struct {
	pages.Sink
	mu   sync.Mutex
	puts []pages.Addr
}

func (o *orderSink) PutsInOrder() {}

func (o *orderSink) Put(a pages.Addr, b []byte) (bool, error) {
	o.mu.Lock()
	o.puts = append(o.puts, a)
	o.mu.Unlock()
	return o.Sink.Put(a, b)
}

// TestWritesInOrder: with many workers the sink still receives an image's
// new objects in block order.
func TestWritesInOrder(t *testing.T) {
	os := &orderSink{Sink: pages.NewMemSink()}
	g := newIngester(t, os, pages.Options{Workers: 8, Buffers: 32, BlockSize: 16 << 10})
	x, _ := write(t, g, "ordered", newFamily(17).guest(1, 3000), "at", nil)
	var want []pages.Addr
	seen := make(map[pages.Addr]bool)
	for _, b := range x.Blocks {
		if b.Mask != 0 && !seen[b.Addr] {
			seen[b.Addr] = true
			want = append(want, b.Addr)
		}
	}
	if d := cmp.Diff(want, os.puts); d != "" {
		t.Errorf("Put order differs from block order (-want +got):\n%s", d)
	}
}

// TestRestoreFile restores into a sparse file, with every codec, images
// whose blocks have zero pages and images whose blocks have none, and a
// damaged block in each kind.
func TestRestoreFile(t *testing.T) {
	full := make([]byte, 64*pages.PageSize)
	fillRandom(rand.New(rand.NewPCG(3, 4)), full[:32*pages.PageSize])
	newFamily(9).text(rand.New(rand.NewPCG(5, 6)), full[32*pages.PageSize:])
	for _, c := range []pages.Codec{pages.CodecS2, pages.CodecZstd, pages.CodecRaw} {
		for name, img := range map[string][]byte{"guest": newFamily(9).guest(1, 2048), "full": full} {
			sink := pages.NewMemSink()
			g := newIngester(t, sink, pages.Options{Codec: c})
			x, _ := write(t, g, "f", img, "at", nil)
			path := filepath.Join(t.TempDir(), "mem")
			// With the sink itself and with its optional interfaces
			// hidden.
			if _, err := pages.RestoreFile(x, plainSink{sink}, path, pages.RestoreOptions{}); err != nil {
				t.Fatalf("%v %s: %v", c, name, err)
			}
			if got, _ := os.ReadFile(path); !bytes.Equal(got, img) {
				t.Errorf("%v %s: restored file (plain sink) differs from the image", c, name)
			}
			if _, err := pages.RestoreFile(x, sink, path, pages.RestoreOptions{}); err != nil {
				t.Fatalf("%v %s: %v", c, name, err)
			}
			got, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, img) {
				t.Errorf("%v %s: restored file differs from the image", c, name)
			}
			blk := len(x.Blocks) - 1
			for x.Blocks[blk].Mask == 0 {
				blk--
			}
			sink.Damage(x.Blocks[blk].Addr, 7)
			for _, skip := range []bool{false, true} {
				for _, s := range []pages.Sink{sink, plainSink{sink}} {
					_, err = pages.RestoreFile(x, s, path, pages.RestoreOptions{SkipHash: skip})
					var ce *pages.CorruptError
					if !errors.As(err, &ce) || ce.Block != blk || ce.Offset != x.Offset(blk) {
						t.Errorf("%v %s, SkipHash %v, %T: RestoreFile with block %d damaged = %v, want a CorruptError naming it", c, name, skip, s, blk, err)
					}
				}
			}
		}
	}
}

// plainSink hides a sink's optional interfaces (PartsPutter).
type plainSink struct{ pages.Sink }
