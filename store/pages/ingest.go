package pages

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
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
	// Codec compresses new blocks (default CodecRaw: none).
	Codec Codec
	// Level is the zstd level of CodecZstd (default DefaultLevel).
	Level Level
	// Hash addresses the blocks (default HashBLAKE3, index version 2;
	// HashSHA256 writes version-1 indexes as older builds did).
	Hash Hash
	// Raw stores new blocks uncompressed, as Codec CodecRaw (the
	// default): ingest is then bound by hashing (and the disk).
	Raw bool
	// Workers is the number of goroutines that scan, hash and compress
	// (default GOMAXPROCS).
	Workers int
	// Buffers is the number of block buffers shared by every image the
	// Ingester writes: its memory is about Buffers*2*BlockSize whatever the
	// images' sizes (default 4*Workers*BatchBytes/BlockSize, at least 2).
	Buffers int
}

// BatchBytes is how much of an image one work item of IngestAt and
// IngestBytes covers (consecutive blocks, fewer if Buffers is small): a
// worker scans, hashes and compresses them in a row, so the hand-offs
// between goroutines (a wake-up each, several microseconds on a VM) cost
// one per batch rather than one per block.
const BatchBytes = 512 << 10

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
		o.Buffers = max(4*o.Workers*max(1, BatchBytes/o.BlockSize), 2)
	}
	return o
}

// batchBlocks is the number of blocks of one work item: up to BatchBytes,
// and small enough that every worker can have two items in hand.
func (o Options) batchBlocks() int {
	return max(1, min(BatchBytes/o.BlockSize, o.Buffers/(2*o.Workers)))
}

// Ingester turns memory images into blocks in a Sink. It owns a fixed pool
// of block buffers and Workers goroutines, shared by every image being
// written, so several VMs can be ingested at once on all cores in bounded
// memory: a producer that finds no free buffer waits (backpressure). Its
// methods are safe for concurrent use. Close it when done.
type Ingester struct {
	sink    Sink
	ordered bool // the sink is InOrder: objects are put by the commit
	opt     Options
	batch   int    // blocks per work item of IngestAt and IngestBytes
	zero    []byte // one zero page, read-only

	free      chan *slot
	acquireMu sync.Mutex // held while taking the buffers of one batch
	jobs      chan *batch
	wg        sync.WaitGroup

	inUse    atomic.Int64
	maxInUse atomic.Int64
	allocs   atomic.Int64

	knownMu sync.RWMutex
	known   map[Addr]struct{} // objects known to be in the sink

	closeOnce sync.Once
}

// slot is one pool buffer: a block of raw pages, behind room for an
// object's header (so that a raw object is the buffer itself, not a copy),
// and room for a compressed object.
type slot struct {
	buf []byte // objHeader bytes of room, then raw
	raw []byte
	out []byte
}

func newSlot(blockSize int) *slot {
	buf := make([]byte, objHeader+blockSize)
	return &slot{buf: buf, raw: buf[objHeader:], out: make([]byte, 0, maxObject(blockSize))}
}

// batch is one work item: consecutive blocks of one image, with a buffer
// each, and what the worker made of them.
type batch struct {
	img     *ImageWriter
	seq     int64       // commit order within the image
	first   int         // block number of the first block
	pages   int         // one-block batches (Write, PutPage): pages in the block
	present uint64      // pages filled in, the others zero (one-block batches; else all)
	src     io.ReaderAt // if set, the worker reads the blocks from it
	mem     []byte      // if set, the blocks themselves, read in place
	slots   []*slot     // one per block
	res     []blockResult
	err     error
}

// blockResult is what a worker made of one block.
type blockResult struct {
	ref     BlockRef
	obj     []byte // the object for the commit to Put (InOrder sinks), nil if none
	known   bool   // found already stored before compression
	created bool   // the worker's Put created the object (other sinks)
	size    int    // its size
}

// NewIngester starts an Ingester writing into sink.
func NewIngester(sink Sink, opt Options) (*Ingester, error) {
	opt = opt.withDefaults()
	if err := checkGeometry("", 0, opt.BlockSize); err != nil {
		return nil, fmt.Errorf("pages: options: %w", err)
	}
	if opt.Codec < CodecRaw || opt.Codec > CodecZstd {
		return nil, fmt.Errorf("pages: options: codec %v unknown", opt.Codec)
	}
	if opt.Hash != HashBLAKE3 && opt.Hash != HashSHA256 {
		return nil, fmt.Errorf("pages: options: hash %v unknown", opt.Hash)
	}
	_, ordered := sink.(InOrder)
	g := &Ingester{
		sink:    sink,
		ordered: ordered,
		opt:     opt,
		batch:   opt.batchBlocks(),
		zero:    make([]byte, PageSize),
		free:    make(chan *slot, opt.Buffers),
		jobs:    make(chan *batch, opt.Workers),
		known:   make(map[Addr]struct{}),
	}
	for range opt.Buffers {
		g.allocs.Add(1)
		g.free <- newSlot(opt.BlockSize)
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
	g.count(1)
	return s
}

// acquireN fills slots with free buffers, waiting for them. One producer at
// a time takes the buffers of a batch, so that two cannot each hold part of
// what they need while none is left.
func (g *Ingester) acquireN(slots []*slot) {
	g.acquireMu.Lock()
	defer g.acquireMu.Unlock()
	for i := range slots {
		slots[i] = <-g.free
	}
	g.count(len(slots))
}

func (g *Ingester) count(k int) {
	n := g.inUse.Add(int64(k))
	for {
		m := g.maxInUse.Load()
		if n <= m || g.maxInUse.CompareAndSwap(m, n) {
			break
		}
	}
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

// work scans, hashes and compresses batches until the job channel closes,
// and hands each to its image's commit.
func (g *Ingester) work() {
	defer g.wg.Done()
	enc := newBlockEncoder(g.opt.Codec, g.opt.Level)
	defer enc.close()
	for bt := range g.jobs {
		for i := range bt.slots {
			if bt.err = g.process(enc, bt, i); bt.err != nil {
				break
			}
		}
		bt.img.deliver(bt)
	}
}

// process turns block i of bt into bt.res[i].
func (g *Ingester) process(enc *encoder, bt *batch, i int) error {
	res := &bt.res[i]
	s := bt.slots[i]
	block := bt.first + i
	np := bt.pages
	if np == 0 {
		np = blockPagesOf(bt.img.length, g.opt.BlockSize, block)
	}
	raw := s.raw[:np*PageSize]
	present := bt.present
	switch {
	case bt.src != nil:
		off := int64(block) * int64(g.opt.BlockSize)
		// A ReadAt that fills the buffer may still say io.EOF at the end.
		if n, err := bt.src.ReadAt(raw, off); n < len(raw) {
			if err == nil || errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return fmt.Errorf("read block %d at offset %#x: %w", block, off, err)
		}
	case bt.mem != nil:
		// The block read in place; used as it is when none of its
		// pages is zero.
		lo := i * g.opt.BlockSize
		raw = bt.mem[lo : lo+np*PageSize]
	}
	// Zero pages first: they are neither hashed nor stored. The others are
	// packed to the front of the buffer.
	for p := range np {
		if present&(1<<p) != 0 && !bytes.Equal(raw[p*PageSize:(p+1)*PageSize], g.zero) {
			res.ref.Mask |= 1 << p
		}
	}
	w := bits.OnesCount64(res.ref.Mask)
	if w == 0 {
		return nil
	}
	data := raw
	if w < np {
		k := 0
		for p := range np {
			if res.ref.Mask&(1<<p) != 0 {
				if k != p || bt.mem != nil {
					copy(s.raw[k*PageSize:], raw[p*PageSize:(p+1)*PageSize])
				}
				k++
			}
		}
		data = s.raw[:w*PageSize]
	}
	res.ref.Addr = g.opt.Hash.sum(data)
	if g.isKnown(res.ref.Addr) {
		res.known = true
		return nil
	}
	ok, err := g.sink.Has(res.ref.Addr)
	if err != nil {
		return err
	}
	if ok {
		g.markKnown(res.ref.Addr)
		res.known = true
		return nil
	}
	// A compressed object if the codec shrinks the block; otherwise the
	// block is stored raw, its pages not copied again to make the object.
	var obj []byte
	if g.opt.Codec != CodecRaw {
		if obj = compressObject(enc, s.out, data); obj != nil {
			s.out = obj[:0]
		}
	}
	inSlot := &data[0] == &s.raw[0]
	switch pp, ok := g.sink.(PartsPutter); {
	case obj != nil:
	case ok && !g.ordered && !inSlot:
		// A block read in place: its pages go to the sink as they are,
		// behind a header of their own.
		var hdr [objHeader]byte
		hdr[0] = objRaw
		binary.LittleEndian.PutUint32(hdr[1:], crc32.Update(crc32.Checksum(hdr[:1], castagnoli), castagnoli, data))
		created, err := pp.PutParts(res.ref.Addr, hdr[:], data)
		if err != nil {
			return err
		}
		g.markKnown(res.ref.Addr)
		res.created, res.size = created, objHeader+len(data)
		return nil
	case inSlot:
		// The pages are in the slot already: the header goes in front.
		obj = s.buf[:objHeader+len(data)]
		obj[0] = objRaw
		binary.LittleEndian.PutUint32(obj[1:], objectCRC(obj))
	default:
		obj = encodeObject(nil, s.out, data)
		s.out = obj[:0]
	}
	if g.ordered {
		res.obj = obj
		return nil
	}
	created, err := g.sink.Put(res.ref.Addr, obj)
	if err != nil {
		return err
	}
	g.markKnown(res.ref.Addr)
	res.created, res.size = created, len(obj)
	return nil
}
