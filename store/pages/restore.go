package pages

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/klauspost/compress/zstd"
)

// ErrCorrupt marks damaged data; errors.Is(err, ErrCorrupt) holds for every
// *CorruptError.
var ErrCorrupt = errors.New("corrupt image")

// CorruptError names a damaged or missing block: the image, the block and
// the guest-physical byte range it covers, and the object it refers to.
type CorruptError struct {
	Image  string
	Block  int
	Offset int64 // guest-physical offset of the block's first byte
	Len    int64 // bytes the block covers
	Addr   Addr
	Reason string
	Err    error // underlying error, if any
}

func (e *CorruptError) Error() string {
	s := fmt.Sprintf("pages: image %q: block %d at guest offset %#x-%#x (object %s): %s",
		e.Image, e.Block, e.Offset, e.Offset+e.Len-1, e.Addr, e.Reason)
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns the underlying error.
func (e *CorruptError) Unwrap() error { return e.Err }

// Is reports whether target is ErrCorrupt.
func (e *CorruptError) Is(target error) bool { return target == ErrCorrupt }

// RestoreOptions configure Restore.
type RestoreOptions struct {
	// Workers is the number of goroutines that fetch, check, decompress
	// and place blocks (default GOMAXPROCS).
	Workers int
	// ZeroFill writes the zero pages too; leave it unset for a destination
	// that reads as zeros already (a new or truncated file), where zero
	// pages then cost nothing.
	ZeroFill bool
	// SkipHash checks each object's CRC-32C, decoding and size but not
	// its SHA-256: any flipped byte is still caught, but not a sink that
	// returns a different intact object for an address. It roughly halves
	// restore's CPU time (the hash dominates); Verify always hashes.
	SkipHash bool
}

// RestoreStats describe a restore.
type RestoreStats struct {
	Blocks  int   // blocks fetched
	Written int64 // bytes written to the destination
}

// blockReader fetches and checks blocks, reusing its buffers.
type blockReader struct {
	x         *Index
	sink      Sink
	dec       *zstd.Decoder
	obj, data []byte
	skipHash  bool
	// placeMapped's: the block's runs in the mapped file, and the
	// buffers of a read into them.
	hdr  [objHeader]byte
	runs [][]byte
	bufs [][]byte
}

func newBlockReader(x *Index, sink Sink) *blockReader {
	return &blockReader{x: x, sink: sink, dec: newDecoder(),
		obj: make([]byte, 0, maxObject(x.BlockSize)), data: make([]byte, 0, x.BlockSize)}
}

// load returns block i's non-zero pages, packed, valid until the next call.
func (br *blockReader) load(i int) ([]byte, *CorruptError) {
	return br.loadInto(i, br.data)
}

// loadInto is load decoding into dst if it has room (a raw object is
// returned in place, not copied).
func (br *blockReader) loadInto(i int, dst []byte) ([]byte, *CorruptError) {
	ref := br.x.Blocks[i]
	obj, err := br.sink.Get(ref.Addr, br.obj)
	if err != nil {
		return nil, br.x.corrupt(i, "cannot get object", err)
	}
	br.obj = obj[:0]
	// br.data has room for any block, so decoding never reallocates it.
	data, err := decodeObject(br.dec, dst, obj, ref.Pages()*PageSize, br.x.Hash, ref.Addr, br.skipHash)
	if err != nil {
		return nil, br.x.corrupt(i, err.Error(), nil)
	}
	return data, nil
}

func (x *Index) corrupt(i int, reason string, err error) *CorruptError {
	return &CorruptError{Image: x.Name, Block: i, Offset: x.Offset(i), Len: int64(x.blockPages(i)) * PageSize,
		Addr: x.Blocks[i].Addr, Reason: reason, Err: err}
}

// Restore writes the image x describes into dst at guest-physical offsets,
// fetching, checking (object CRC, decoding, size, SHA-256 against the
// address) and placing blocks on every core. It stops at the first problem:
// a *CorruptError naming the image and block offset, or dst's error. x must
// come from DecodeIndex or an ImageWriter (it is trusted to be consistent).
func Restore(x *Index, sink Sink, dst io.WriterAt, o RestoreOptions) (RestoreStats, error) {
	return restore(x, sink, dst, nil, o)
}

// restore is Restore into dst, or, if m is set, into the mapped file m
// (dst is then not used).
func restore(x *Index, sink Sink, dst io.WriterAt, m *mappedFile, o RestoreOptions) (RestoreStats, error) {
	workers := o.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	var (
		next    atomic.Int64
		stop    atomic.Bool
		mu      sync.Mutex
		first   error
		stats   RestoreStats
		wg      sync.WaitGroup
		zeroBuf []byte
	)
	if o.ZeroFill {
		zeroBuf = make([]byte, x.BlockSize)
	}
	fail := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		if first == nil {
			first = err
		}
		stop.Store(true)
	}
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			br := newBlockReader(x, sink)
			br.skipHash = o.SkipHash
			defer br.dec.Close()
			var mine RestoreStats
			defer func() {
				mu.Lock()
				stats.Blocks += mine.Blocks
				stats.Written += mine.Written
				mu.Unlock()
			}()
			for !stop.Load() {
				i := int(next.Add(1) - 1)
				if i >= len(x.Blocks) {
					return
				}
				var n int64
				var err error
				if m != nil {
					n, err = br.placeMapped(i, m)
				} else {
					n, err = br.place(i, dst, zeroBuf)
				}
				if err != nil {
					fail(err)
					return
				}
				if x.Blocks[i].Mask != 0 {
					mine.Blocks++
				}
				mine.Written += n
			}
		}()
	}
	wg.Wait()
	if first != nil {
		return stats, first
	}
	return stats, nil
}

// place writes block i: runs of consecutive non-zero pages in one WriteAt
// each, and runs of zero pages from zeroBuf if it is set.
func (br *blockReader) place(i int, dst io.WriterAt, zeroBuf []byte) (int64, error) {
	x := br.x
	ref := x.Blocks[i]
	var data []byte
	if ref.Mask != 0 {
		var ce *CorruptError
		if data, ce = br.load(i); ce != nil {
			return 0, ce
		}
	}
	base := x.Offset(i)
	np := x.blockPages(i)
	var written int64
	k := 0 // next packed page
	for p := 0; p < np; {
		set := ref.Mask&(1<<p) != 0
		q := p
		for q < np && (ref.Mask&(1<<q) != 0) == set {
			q++
		}
		run := (q - p) * PageSize
		switch {
		case set:
			if _, err := dst.WriteAt(data[k*PageSize:k*PageSize+run], base+int64(p)*PageSize); err != nil {
				return written, fmt.Errorf("pages: image %q: write block %d at %#x: %w", x.Name, i, base+int64(p)*PageSize, err)
			}
			k += q - p
			written += int64(run)
		case zeroBuf != nil:
			if _, err := dst.WriteAt(zeroBuf[:run], base+int64(p)*PageSize); err != nil {
				return written, fmt.Errorf("pages: image %q: write block %d at %#x: %w", x.Name, i, base+int64(p)*PageSize, err)
			}
			written += int64(run)
		}
		p = q
	}
	return written, nil
}

// placeMapped writes block i into the mapped file m: a block without zero
// pages is decoded straight into the file's pages, the others' runs of
// non-zero pages copied there; zero pages are left as holes.
func (br *blockReader) placeMapped(i int, m *mappedFile) (int64, error) {
	x := br.x
	ref := x.Blocks[i]
	if ref.Mask == 0 {
		return 0, nil
	}
	base := x.Offset(i)
	np := x.blockPages(i)
	// The block's runs of non-zero pages in the file, in order.
	br.runs = br.runs[:0]
	for p := 0; p < np; {
		if ref.Mask&(1<<p) == 0 {
			p++
			continue
		}
		q := p
		for q < np && ref.Mask&(1<<q) != 0 {
			q++
		}
		lo := base + int64(p)*PageSize
		hi := lo + int64(q-p)*PageSize
		m.populate(lo, hi)
		br.runs = append(br.runs, m.mem[lo:hi:hi])
		p = q
	}
	n := int64(ref.Pages()) * PageSize
	if ig, ok := br.sink.(IntoGetter); ok {
		// A raw object is read straight into the file: its header into
		// hdr, its pages into their runs. A compressed one is smaller
		// than that (compression is kept only if it saves 1/32).
		bufs := append(append(br.bufs[:0], br.hdr[:]), br.runs...)
		got, err := ig.GetInto(ref.Addr, bufs)
		br.bufs = bufs[:0]
		if err != nil {
			return 0, x.corrupt(i, "cannot get object", err)
		}
		if got {
			if reason := br.checkParts(ref); reason != "" {
				return 0, x.corrupt(i, reason, nil)
			}
			return n, nil
		}
	}
	if len(br.runs) == 1 {
		// The block's pages are one run: decoded straight into it.
		target := br.runs[0]
		data, ce := br.loadInto(i, target)
		if ce != nil {
			return 0, ce
		}
		if &data[0] != &target[0] { // a raw object, returned in place
			copy(target, data)
		}
		return n, nil
	}
	data, ce := br.load(i)
	if ce != nil {
		return 0, ce
	}
	k := 0
	for _, r := range br.runs {
		k += copy(r, data[k:])
	}
	return n, nil
}

// checkParts checks a raw object read into br.hdr and br.runs as
// decodeObject checks one read whole: codec, CRC-32C and hash.
func (br *blockReader) checkParts(ref BlockRef) string {
	if br.hdr[0] != objRaw {
		return fmt.Sprintf("object codec %d with the size of a raw object", br.hdr[0])
	}
	crc := crc32.Checksum(br.hdr[:1], castagnoli)
	for _, r := range br.runs {
		crc = crc32.Update(crc, castagnoli, r)
	}
	if want := binary.LittleEndian.Uint32(br.hdr[1:]); crc != want {
		return fmt.Sprintf("object CRC-32C %08x, want %08x", crc, want)
	}
	if !br.skipHash && br.x.Hash.sumParts(br.runs) != ref.Addr {
		return "object content does not hash to its address"
	}
	return ""
}

// RestoreFile restores x into a new file at path (truncated to the image's
// length first, so zero pages are holes that cost nothing) and fsyncs it.
// On Linux the file is mapped and the blocks placed by copying into it.
func RestoreFile(x *Index, sink Sink, path string, o RestoreOptions) (RestoreStats, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return RestoreStats{}, fmt.Errorf("pages: restore %q: %w", x.Name, err)
	}
	defer f.Close()
	if err := f.Truncate(x.Length); err != nil {
		return RestoreStats{}, fmt.Errorf("pages: restore %q: %w", x.Name, err)
	}
	o.ZeroFill = false
	m := mapFile(f, x.Length)
	st, err := restore(x, sink, f, m, o)
	if m != nil {
		if cerr := m.close(); err == nil && cerr != nil {
			err = fmt.Errorf("pages: restore %q: %w", x.Name, cerr)
		}
	}
	if err != nil {
		return st, err
	}
	if err := f.Sync(); err != nil {
		return st, fmt.Errorf("pages: restore %q: %w", x.Name, err)
	}
	return st, f.Close()
}

// Verify checks every block of x in sink, on every core, and returns every
// problem, one per damaged block in block order (an object shared by several
// blocks is checked once and reported for each of them). An empty result
// means the image is intact.
func Verify(x *Index, sink Sink, workers int) []*CorruptError {
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	var (
		next  atomic.Int64
		mu    sync.Mutex
		seen  = make(map[Addr]string) // address -> reason, "" if sound
		found []*CorruptError
		wg    sync.WaitGroup
	)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			br := newBlockReader(x, sink)
			defer br.dec.Close()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(x.Blocks) {
					return
				}
				ref := x.Blocks[i]
				if ref.Mask == 0 {
					continue
				}
				mu.Lock()
				reason, done := seen[ref.Addr]
				mu.Unlock()
				if done {
					if reason != "" {
						mu.Lock()
						found = append(found, x.corrupt(i, reason, nil))
						mu.Unlock()
					}
					continue
				}
				_, ce := br.load(i)
				mu.Lock()
				if ce != nil {
					seen[ref.Addr] = ce.Reason
					found = append(found, ce)
				} else {
					seen[ref.Addr] = ""
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	slices.SortFunc(found, func(a, b *CorruptError) int { return a.Block - b.Block })
	return found
}
