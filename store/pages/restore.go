package pages

import (
	"errors"
	"fmt"
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
				n, err := br.place(i, dst, zeroBuf)
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

// RestoreFile restores x into a new file at path (truncated to the image's
// length first, so zero pages are holes that cost nothing) and fsyncs it,
// checking every block as Restore does (writeBack).
func RestoreFile(x *Index, sink Sink, path string, o RestoreOptions) (RestoreStats, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return RestoreStats{}, fmt.Errorf("pages: restore %q: %w", x.Name, err)
	}
	defer f.Close()
	if err := f.Truncate(x.Length); err != nil {
		return RestoreStats{}, fmt.Errorf("pages: restore %q: %w", x.Name, err)
	}
	st, err := writeBack(x, sink, f, o)
	if err != nil {
		return st, err
	}
	if err := f.Sync(); err != nil {
		return st, fmt.Errorf("pages: restore %q: %w", x.Name, err)
	}
	return st, f.Close()
}

// fetched is a block fetched and checked by a writeBack reader, for its
// writer: the object as read, and its pages (a slice of obj for a raw
// object, of data for a compressed one).
type fetched struct {
	i         int
	obj, data []byte
	pages     []byte
}

// writeBack is RestoreFile's copy: o.Workers readers (GOMAXPROCS by
// default) fetch, check and decompress blocks into a bounded pool of
// buffers, and one writer writes each block's runs of non-zero pages with
// a pwrite each; zero pages are left as holes. Parallel writes to one
// tmpfs file serialise on its inode lock, and a file mapped and filled by
// every worker at once (the way before) spent its time allocating the
// file's pages, which did not scale over two vCPUs either: one writer,
// fed while it writes, took 0.6-0.75 x the time of the mapped
// file (BenchmarkRestoreImage in store).
func writeBack(x *Index, sink Sink, f *os.File, o RestoreOptions) (RestoreStats, error) {
	workers := o.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	var (
		next  atomic.Int64
		stop  atomic.Bool
		mu    sync.Mutex
		first error
		stats RestoreStats
		wg    sync.WaitGroup
	)
	fail := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		if first == nil {
			first = err
		}
		stop.Store(true)
	}
	free := make(chan *fetched, 4*workers)
	for range cap(free) {
		free <- &fetched{obj: make([]byte, 0, maxObject(x.BlockSize)), data: make([]byte, 0, x.BlockSize)}
	}
	full := make(chan *fetched, cap(free))
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dec := newDecoder()
			defer dec.Close()
			for !stop.Load() {
				i := int(next.Add(1) - 1)
				if i >= len(x.Blocks) {
					return
				}
				ref := x.Blocks[i]
				if ref.Mask == 0 {
					continue
				}
				b := <-free
				obj, err := sink.Get(ref.Addr, b.obj)
				if err != nil {
					free <- b
					fail(x.corrupt(i, "cannot get object", err))
					return
				}
				b.obj = obj[:0]
				pages, err := decodeObject(dec, b.data, obj, ref.Pages()*PageSize, x.Hash, ref.Addr, o.SkipHash)
				if err != nil {
					free <- b
					fail(x.corrupt(i, err.Error(), nil))
					return
				}
				b.i, b.pages = i, pages
				full <- b
			}
		}()
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for b := range full {
			if !stop.Load() {
				n, err := writeRuns(x, b.i, b.pages, f)
				if err != nil {
					fail(err)
				}
				stats.Blocks++
				stats.Written += n
			}
			free <- b
		}
	}()
	wg.Wait()
	close(full)
	<-done
	mu.Lock()
	defer mu.Unlock()
	return stats, first
}

// writeRuns writes block i's packed non-zero pages to f at their offsets,
// a run of consecutive pages with one WriteAt.
func writeRuns(x *Index, i int, pages []byte, f *os.File) (int64, error) {
	ref := x.Blocks[i]
	base := x.Offset(i)
	np := x.blockPages(i)
	k := 0 // next packed page
	for p := 0; p < np; {
		if ref.Mask&(1<<p) == 0 {
			p++
			continue
		}
		q := p
		for q < np && ref.Mask&(1<<q) != 0 {
			q++
		}
		off := base + int64(p)*PageSize
		if _, err := f.WriteAt(pages[k*PageSize:(k+q-p)*PageSize], off); err != nil {
			return int64(k) * PageSize, fmt.Errorf("pages: image %q: write block %d at %#x: %w", x.Name, i, off, err)
		}
		k += q - p
		p = q
	}
	return int64(k) * PageSize, nil
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
