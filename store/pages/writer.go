package pages

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// Stats describe what writing one image cost.
type Stats struct {
	Length     int64 // bytes of guest memory
	ZeroPages  int64 // pages found zero: not hashed, not stored
	Blocks     int   // blocks with at least one non-zero page
	Dedup      int   // of those, blocks whose object was already stored
	NewObjects int   // objects this image added to the sink
	NewBytes   int64 // their encoded size: what the image cost after dedup
}

// ErrPage marks a PutPage call that breaks its contract.
var ErrPage = errors.New("bad page")

// ImageWriter writes one image. Fill it in one of three ways, not mixed:
// Write (or ReadFrom) with the image as a sequential stream, PutPage with
// pages at guest frame numbers, or through Ingester.IngestAt. It is for one
// goroutine at a time; several ImageWriters of one Ingester run at once.
type ImageWriter struct {
	g      *Ingester
	name   string
	length int64 // -1: a stream of unknown length
	per    int   // pages per block

	results chan result
	done    chan struct{} // closed when the committer has finished
	submits chan int64    // the final submission count, sent once by Close

	// Producer state (the writer's goroutine).
	seq     int64
	cur     *slot // Write: the block being filled
	curLen  int   // bytes in cur
	off     int64 // Write: bytes written
	open    map[int]*openBlock
	order   []int   // PutPage: open blocks, oldest first
	lastSeq []int64 // PutPage: per block, its last submission, or -1
	dec     *zstd.Decoder
	mode    int
	closed  bool

	// Committer state, read after done.
	mu        sync.Mutex
	cond      *sync.Cond // on mu: committed advanced or err set
	committed int64      // submissions applied
	err       error
	blocks    []BlockRef
	created   []bool // per block: its object was created by this image
	stats     Stats
}

const (
	modeNone = iota
	modeStream
	modePages
	modeAt
)

type openBlock struct {
	s       *slot
	present uint64 // pages defined in s.raw (put, or loaded when reopened)
	put     uint64 // pages put since the block was opened
	n       int    // bits in put
}

// Begin starts an image called name of length bytes (a multiple of
// PageSize), or of unknown length (-1) for an image written with Write.
func (g *Ingester) Begin(name string, length int64) (*ImageWriter, error) {
	l := max(length, 0)
	if err := checkGeometry(name, l, g.opt.BlockSize); err != nil {
		return nil, fmt.Errorf("pages: image %q: %w", name, err)
	}
	w := &ImageWriter{
		g: g, name: name, length: length, per: g.opt.BlockSize / PageSize,
		results: make(chan result, g.opt.Buffers),
		done:    make(chan struct{}),
		submits: make(chan int64, 1),
	}
	w.cond = sync.NewCond(&w.mu)
	if length >= 0 {
		w.blocks = make([]BlockRef, NumBlocks(length, g.opt.BlockSize))
		w.created = make([]bool, len(w.blocks))
	}
	go w.commit()
	return w, nil
}

// IngestAt writes the image of length bytes that r holds at offsets 0 to
// length (a QEMU mapped-ram file's RAM, a memory-sink buffer, a Xen
// receiver's staging file): every block is read, scanned, hashed and
// compressed by the workers in parallel.
func (g *Ingester) IngestAt(name string, r io.ReaderAt, length int64) (*Index, Stats, error) {
	if length < 0 {
		return nil, Stats{}, fmt.Errorf("pages: image %q: length %d: negative", name, length)
	}
	w, err := g.Begin(name, length)
	if err != nil {
		return nil, Stats{}, err
	}
	w.mode = modeAt
	for b := range len(w.blocks) {
		if w.failed() {
			break
		}
		w.submit(job{block: b, pages: blockPagesOf(length, g.opt.BlockSize, b), present: ^uint64(0), src: r, s: g.acquire(true)})
	}
	return w.Close()
}

// IngestBytes writes the image img (guest memory from offset 0, a multiple
// of PageSize) as IngestAt does, reading the blocks in place: a block with
// no zero page is hashed and compressed without being copied. img must not
// change until IngestBytes returns.
func (g *Ingester) IngestBytes(name string, img []byte) (*Index, Stats, error) {
	length := int64(len(img))
	w, err := g.Begin(name, length)
	if err != nil {
		return nil, Stats{}, err
	}
	w.mode = modeAt
	bs := g.opt.BlockSize
	for b := range len(w.blocks) {
		if w.failed() {
			break
		}
		np := blockPagesOf(length, bs, b)
		w.submit(job{block: b, pages: np, present: ^uint64(0), mem: img[b*bs : b*bs+np*PageSize], s: g.acquire(true)})
	}
	return w.Close()
}

func (w *ImageWriter) setMode(m int) error {
	switch {
	case w.closed:
		return fmt.Errorf("pages: image %q: write after Close", w.name)
	case w.mode == modeNone:
		w.mode = m
	case w.mode != m:
		return fmt.Errorf("pages: image %q: Write and PutPage mixed", w.name)
	}
	return w.failure()
}

// Write appends p to the image, which is cut into blocks as it arrives. It
// waits while every buffer is in use.
func (w *ImageWriter) Write(p []byte) (int, error) {
	if err := w.setMode(modeStream); err != nil {
		return 0, err
	}
	if w.length >= 0 && w.off+int64(len(p)) > w.length {
		return 0, fmt.Errorf("pages: image %q: write past its length %d", w.name, w.length)
	}
	n := 0
	for len(p) > 0 {
		if w.cur == nil {
			w.cur = w.g.acquire(true)
		}
		c := copy(w.cur.raw[w.curLen:], p)
		w.curLen += c
		w.off += int64(c)
		n += c
		p = p[c:]
		if w.curLen == len(w.cur.raw) {
			w.flushCur()
			if err := w.failure(); err != nil {
				return n, err
			}
		}
	}
	return n, nil
}

// ReadFrom writes everything r delivers, as Write.
func (w *ImageWriter) ReadFrom(r io.Reader) (int64, error) {
	if err := w.setMode(modeStream); err != nil {
		return 0, err
	}
	var total int64
	for {
		if w.cur == nil {
			w.cur = w.g.acquire(true)
		}
		n, err := r.Read(w.cur.raw[w.curLen:])
		if w.length >= 0 && w.off+int64(n) > w.length {
			return total, fmt.Errorf("pages: image %q: write past its length %d", w.name, w.length)
		}
		w.curLen += n
		w.off += int64(n)
		total += int64(n)
		if w.curLen == len(w.cur.raw) {
			w.flushCur()
		}
		if err == io.EOF {
			return total, w.failure()
		}
		if err != nil {
			return total, err
		}
		if err := w.failure(); err != nil {
			return total, err
		}
	}
}

// flushCur submits the block being filled by Write.
func (w *ImageWriter) flushCur() {
	b := int((w.off - int64(w.curLen)) / int64(w.g.opt.BlockSize))
	w.submit(job{block: b, pages: w.curLen / PageSize, present: ^uint64(0), s: w.cur})
	w.cur, w.curLen = nil, 0
}

// PutPage stores data (PageSize bytes) as the page at guest frame number
// gpfn. Pages come in any order and may be put again (the last put wins);
// pages never put are zero. A block is handed to the workers when all its
// pages are in, or when the buffers run out and it is this image's oldest
// unfinished block, or at Close. A page that arrives for a block already
// handed over reopens it: PutPage waits until that block is stored, reads it
// back from the sink and overlays the new pages, so a stream that resends
// pages (a live migration's later passes) is correct but costs a read and a
// second object per reopened block (the superseded object stays in the sink
// and counts in NewBytes). Streams in page order never reopen a block.
func (w *ImageWriter) PutPage(gpfn uint64, data []byte) error {
	if err := w.setMode(modePages); err != nil {
		return err
	}
	if len(data) != PageSize {
		return fmt.Errorf("pages: image %q: page %#x: %d bytes, want %d: %w", w.name, gpfn, len(data), PageSize, ErrPage)
	}
	if w.length < 0 || gpfn >= uint64(w.length/PageSize) {
		return fmt.Errorf("pages: image %q: page %#x: beyond the image's %d bytes: %w", w.name, gpfn, w.length, ErrPage)
	}
	if w.open == nil {
		w.open = make(map[int]*openBlock)
		w.lastSeq = make([]int64, len(w.blocks))
		for i := range w.lastSeq {
			w.lastSeq[i] = -1
		}
	}
	b, p := int(gpfn)/w.per, int(gpfn)%w.per
	ob := w.open[b]
	if ob == nil {
		s := w.g.acquire(false)
		if s == nil {
			// Out of buffers: hand over our oldest unfinished block
			// so that our own buffers cannot all sit in partial blocks.
			if len(w.order) > 0 {
				w.submitOpen(w.order[0])
			}
			s = w.g.acquire(true)
		}
		ob = &openBlock{s: s}
		w.open[b] = ob
		w.order = append(w.order, b)
		if w.lastSeq[b] >= 0 {
			if err := w.reopen(b, ob); err != nil {
				return err
			}
		}
	}
	copy(ob.s.raw[p*PageSize:], data)
	ob.present |= 1 << p
	if ob.put&(1<<p) == 0 {
		ob.put |= 1 << p
		ob.n++
	}
	if ob.n == blockPagesOf(w.length, w.g.opt.BlockSize, b) {
		w.submitOpen(b)
	}
	return w.failure()
}

// reopen loads the stored version of block b into ob, once it is committed.
func (w *ImageWriter) reopen(b int, ob *openBlock) error {
	w.mu.Lock()
	for w.committed <= w.lastSeq[b] && w.err == nil {
		w.cond.Wait()
	}
	ref := w.blocks[b]
	w.mu.Unlock()
	if err := w.failure(); err != nil {
		return err
	}
	ob.present = ref.Mask
	if ref.Mask == 0 {
		return nil
	}
	if w.dec == nil {
		w.dec = newDecoder()
	}
	x := &Index{Name: w.name, Length: w.length, BlockSize: w.g.opt.BlockSize, Blocks: []BlockRef{ref}}
	br := &blockReader{x: x, sink: w.g.sink, dec: w.dec, data: make([]byte, 0, x.BlockSize)}
	data, ce := br.load(0)
	if ce != nil {
		ce.Block, ce.Offset = b, int64(b)*int64(x.BlockSize)
		return ce
	}
	k := 0
	for q := range w.per {
		if ref.Mask&(1<<q) != 0 {
			copy(ob.s.raw[q*PageSize:(q+1)*PageSize], data[k*PageSize:])
			k++
		}
	}
	return nil
}

func (w *ImageWriter) submitOpen(b int) {
	ob := w.open[b]
	delete(w.open, b)
	w.order = slices.DeleteFunc(w.order, func(x int) bool { return x == b })
	w.lastSeq[b] = w.seq
	w.submit(job{block: b, pages: blockPagesOf(w.length, w.g.opt.BlockSize, b), present: ob.present, s: ob.s})
}

func (w *ImageWriter) submit(j job) {
	j.img, j.seq = w, w.seq
	w.seq++
	w.g.jobs <- j
}

func (w *ImageWriter) failure() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return fmt.Errorf("pages: image %q: %w", w.name, w.err)
	}
	return nil
}

func (w *ImageWriter) failed() bool { return w.failure() != nil }

// Close hands over the last blocks, waits until every block is stored (and,
// for a Syncer sink, durable) and returns the image's index and what it cost.
// It fails if any block failed, or if a Write image is not a whole number of
// pages or is shorter than its length.
func (w *ImageWriter) Close() (*Index, Stats, error) {
	if w.closed {
		return nil, Stats{}, fmt.Errorf("pages: image %q: closed twice", w.name)
	}
	w.closed = true
	var short error
	switch w.mode {
	case modeStream:
		if w.curLen%PageSize != 0 {
			short = fmt.Errorf("stream of %d bytes: not a whole number of pages", w.off)
		} else if w.length >= 0 && w.off != w.length {
			short = fmt.Errorf("stream of %d bytes, want %d", w.off, w.length)
		}
		if w.cur != nil && w.curLen >= PageSize {
			w.curLen -= w.curLen % PageSize
			w.flushCur()
		} else if w.cur != nil {
			w.g.release(w.cur)
			w.cur = nil
		}
	case modePages:
		for _, b := range slices.Sorted(slices.Values(w.order)) {
			w.submitOpen(b)
		}
	}
	w.submits <- w.seq
	<-w.done
	if w.dec != nil {
		w.dec.Close()
	}
	w.mu.Lock()
	err := cmp.Or(short, w.err)
	w.mu.Unlock()
	if err == nil {
		if sy, ok := w.g.sink.(Syncer); ok {
			err = sy.Sync()
		}
	}
	if err != nil {
		return nil, Stats{}, fmt.Errorf("pages: image %q: %w", w.name, err)
	}
	length := w.length
	if length < 0 {
		length = w.off
	}
	x := &Index{Name: w.name, Length: length, BlockSize: w.g.opt.BlockSize, Blocks: w.blocks}
	if n := NumBlocks(length, x.BlockSize); len(x.Blocks) < n {
		x.Blocks = append(x.Blocks, make([]BlockRef, n-len(x.Blocks))...)
	}
	if err := x.check(); err != nil {
		panic(fmt.Sprintf("pages: ingest built a bad index: %v", err))
	}
	st := w.stats
	st.Length = length
	st.ZeroPages = length / PageSize
	for i, b := range x.Blocks {
		st.ZeroPages -= int64(b.Pages())
		if b.Mask != 0 {
			st.Blocks++
			if !w.created[i] {
				st.Dedup++
			}
		}
	}
	return x, st, nil
}

// Abort ends the image without an index, for a producer whose source broke
// (a migration that failed): it returns the buffers the image holds and
// waits for the blocks already handed over. Objects already stored stay in
// the sink (another image may share them; the store's GC removes the rest).
// Abort after Close or Abort does nothing, so it can be deferred.
func (w *ImageWriter) Abort() {
	if w.closed {
		return
	}
	w.closed = true
	if w.cur != nil {
		w.g.release(w.cur)
		w.cur = nil
	}
	for _, b := range w.order {
		w.g.release(w.open[b].s)
		delete(w.open, b)
	}
	w.order = nil
	w.submits <- w.seq
	<-w.done
	if w.dec != nil {
		w.dec.Close()
	}
}

// commit puts the workers' objects into the sink in submission order (for
// Write and IngestAt, block order) and fills in the index.
func (w *ImageWriter) commit() {
	defer close(w.done)
	pending := make(map[int64]result)
	var next int64
	total := int64(-1)
	for total < 0 || next < total {
		select {
		case r := <-w.results:
			pending[r.seq] = r
		case total = <-w.submits:
			continue
		}
		for {
			r, ok := pending[next]
			if !ok {
				break
			}
			delete(pending, next)
			next++
			w.apply(r)
			w.g.release(r.s)
		}
	}
}

func (w *ImageWriter) apply(r result) {
	w.mu.Lock()
	failed := w.err != nil
	if failed {
		w.committed++
	}
	w.mu.Unlock()
	if failed {
		return
	}
	err := r.err
	created := false
	// A block compressed by two workers at once (before either was
	// stored) is put once: the second finds it known.
	if err == nil && r.obj != nil && !w.g.isKnown(r.ref.Addr) {
		created, err = w.g.sink.Put(r.ref.Addr, r.obj)
		if err == nil {
			w.g.markKnown(r.ref.Addr)
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	defer w.cond.Broadcast()
	w.committed++
	if err != nil {
		w.err = err
		return
	}
	for len(w.blocks) <= r.block {
		w.blocks = append(w.blocks, BlockRef{})
		w.created = append(w.created, false)
	}
	w.blocks[r.block] = r.ref
	w.created[r.block] = created
	if created {
		w.stats.NewObjects++
		w.stats.NewBytes += int64(len(r.obj))
	}
}
