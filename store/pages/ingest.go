package pages

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/klauspost/compress/zstd"
)

// Defaults chosen by measurement (see the package doc and bench_test.go).
const (
	DefaultBlockSize = 64 << 10
	DefaultLevel     = zstd.SpeedFastest
)

// Options configure an Ingester. Zero values take the defaults.
type Options struct {
	// BlockSize is the block size of new images, a power of two from
	// MinBlockSize to MaxBlockSize (default DefaultBlockSize).
	BlockSize int
	// Codec compresses new blocks (default CodecS2).
	Codec Codec
	// Level is the zstd level of CodecZstd (default DefaultLevel).
	Level Level
	// Raw stores new blocks uncompressed, as Codec CodecRaw: ingest is
	// then bound by hashing (and the disk), for sinks on disks fast enough
	// that compression would be the bottleneck.
	Raw bool
	// Workers is the number of goroutines that scan, hash and compress
	// (default GOMAXPROCS).
	Workers int
	// Buffers is the number of block buffers shared by every image the
	// Ingester writes: its memory is about Buffers*2*BlockSize whatever the
	// images' sizes (default 4*Workers, at least 2).
	Buffers int
}

func (o Options) withDefaults() Options {
	if o.BlockSize == 0 {
		o.BlockSize = DefaultBlockSize
	}
	if o.Level == 0 {
		o.Level = DefaultLevel
	}
	if o.Raw {
		o.Codec = CodecRaw
	}
	if o.Workers <= 0 {
		o.Workers = runtime.GOMAXPROCS(0)
	}
	if o.Buffers <= 0 {
		o.Buffers = max(4*o.Workers, 2)
	}
	return o
}

// Ingester turns memory images into blocks in a Sink. It owns a fixed pool
// of block buffers and Workers goroutines, shared by every image being
// written, so several VMs can be ingested at once on all cores in bounded
// memory: a producer that finds no free buffer waits (backpressure). Its
// methods are safe for concurrent use. Close it when done.
type Ingester struct {
	sink Sink
	opt  Options
	zero []byte // one zero page, read-only

	free chan *slot
	jobs chan job
	wg   sync.WaitGroup

	inUse    atomic.Int64
	maxInUse atomic.Int64
	allocs   atomic.Int64

	knownMu sync.RWMutex
	known   map[Addr]struct{} // objects known to be in the sink

	closeOnce sync.Once
}

// slot is one pool buffer: a block of raw pages and room for its object.
type slot struct {
	raw []byte
	out []byte
}

// job asks a worker to turn one block into a result.
type job struct {
	img     *ImageWriter
	seq     int64       // commit order within the image
	block   int         // block number
	pages   int         // pages in the block
	present uint64      // pages filled in s.raw; the others are zero
	src     io.ReaderAt // if set, the worker reads the block from it
	mem     []byte      // if set, the block itself, read in place
	s       *slot
}

type result struct {
	seq   int64
	block int
	ref   BlockRef
	obj   []byte // the object to Put, nil if none is needed
	known bool   // found already stored before compression
	s     *slot
	err   error
}

// NewIngester starts an Ingester writing into sink.
func NewIngester(sink Sink, opt Options) (*Ingester, error) {
	opt = opt.withDefaults()
	if err := checkGeometry("", 0, opt.BlockSize); err != nil {
		return nil, fmt.Errorf("pages: options: %w", err)
	}
	if opt.Codec < CodecS2 || opt.Codec > CodecRaw {
		return nil, fmt.Errorf("pages: options: codec %v unknown", opt.Codec)
	}
	g := &Ingester{
		sink:  sink,
		opt:   opt,
		zero:  make([]byte, PageSize),
		free:  make(chan *slot, opt.Buffers),
		jobs:  make(chan job, opt.Workers),
		known: make(map[Addr]struct{}),
	}
	for range opt.Buffers {
		g.allocs.Add(1)
		g.free <- &slot{raw: make([]byte, opt.BlockSize), out: make([]byte, 0, maxObject(opt.BlockSize))}
	}
	for range opt.Workers {
		g.wg.Add(1)
		go g.work()
	}
	return g, nil
}

// Close stops the workers. Every image must have been closed first.
func (g *Ingester) Close() error {
	g.closeOnce.Do(func() {
		close(g.jobs)
		g.wg.Wait()
	})
	return nil
}

// PoolStats reports the number of block buffers the Ingester ever
// allocated, how many are in use now and the most that were in use at once;
// all stay at most Options.Buffers.
func (g *Ingester) PoolStats() (allocated, inUse, maxInUse int) {
	return int(g.allocs.Load()), int(g.inUse.Load()), int(g.maxInUse.Load())
}

// BlockSize returns the block size of the images this Ingester writes.
func (g *Ingester) BlockSize() int { return g.opt.BlockSize }

// acquire takes a free buffer, waiting for one if block is set; without
// block it returns nil when none is free.
func (g *Ingester) acquire(block bool) *slot {
	var s *slot
	if block {
		s = <-g.free
	} else {
		select {
		case s = <-g.free:
		default:
			return nil
		}
	}
	n := g.inUse.Add(1)
	for {
		m := g.maxInUse.Load()
		if n <= m || g.maxInUse.CompareAndSwap(m, n) {
			break
		}
	}
	return s
}

func (g *Ingester) release(s *slot) {
	g.inUse.Add(-1)
	g.free <- s
}

func (g *Ingester) isKnown(a Addr) bool {
	g.knownMu.RLock()
	defer g.knownMu.RUnlock()
	_, ok := g.known[a]
	return ok
}

func (g *Ingester) markKnown(a Addr) {
	g.knownMu.Lock()
	defer g.knownMu.Unlock()
	if len(g.known) >= maxKnown {
		clear(g.known) // a cache of Has: forgetting costs only lookups
	}
	g.known[a] = struct{}{}
}

// maxKnown bounds the cache of stored addresses (about 64 bytes each, so
// some 16 MiB; 16 GiB of distinct 64 KiB blocks).
const maxKnown = 1 << 18

// work scans, hashes and compresses blocks until the job channel closes.
func (g *Ingester) work() {
	defer g.wg.Done()
	enc := newBlockEncoder(g.opt.Codec, g.opt.Level)
	defer enc.close()
	for j := range g.jobs {
		j.img.results <- g.process(enc, j)
	}
}

func (g *Ingester) process(enc *encoder, j job) result {
	res := result{seq: j.seq, block: j.block, s: j.s}
	raw := j.s.raw[:j.pages*PageSize]
	if j.src != nil {
		off := int64(j.block) * int64(g.opt.BlockSize)
		// A ReadAt that fills the buffer may still say io.EOF at the end.
		if n, err := j.src.ReadAt(raw, off); n < len(raw) {
			if err == nil || errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			res.err = fmt.Errorf("read block %d at offset %#x: %w", j.block, off, err)
			return res
		}
	}
	// Zero pages first: they are neither hashed nor stored. The others are
	// packed to the front of the buffer; a block read in place is used as
	// it is when none of its pages is zero.
	if j.mem != nil {
		raw = j.mem
	}
	for p := range j.pages {
		if j.present&(1<<p) != 0 && !bytes.Equal(raw[p*PageSize:(p+1)*PageSize], g.zero) {
			res.ref.Mask |= 1 << p
		}
	}
	w := bits.OnesCount64(res.ref.Mask)
	if w == 0 {
		return res
	}
	data := raw
	if w < j.pages || j.mem == nil {
		k := 0
		for p := range j.pages {
			if res.ref.Mask&(1<<p) != 0 {
				if k != p || j.mem != nil {
					copy(j.s.raw[k*PageSize:], raw[p*PageSize:(p+1)*PageSize])
				}
				k++
			}
		}
		data = j.s.raw[:w*PageSize]
	}
	res.ref.Addr = sha256.Sum256(data)
	if g.isKnown(res.ref.Addr) {
		res.known = true
		return res
	}
	ok, err := g.sink.Has(res.ref.Addr)
	if err != nil {
		res.err = err
		return res
	}
	if ok {
		g.markKnown(res.ref.Addr)
		res.known = true
		return res
	}
	res.obj = encodeObject(enc, j.s.out, data)
	j.s.out = res.obj[:0]
	return res
}
