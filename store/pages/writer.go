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

	// Commit state: the worker that delivers the next batch in order
	// commits it, and every later one already delivered.
	pendMu     sync.Mutex
	pending    map[int64]*batch // delivered, not yet committed
	next       int64            // the next batch to commit
	committing bool             // a worker is committing

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

	// Committed state, read once committed == seq.
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
		pending: make(map[int64]*batch),
	}
	w.cond = sync.NewCond(&w.mu)
	if length >= 0 {
		w.blocks = make([]BlockRef, NumBlocks(length, g.opt.BlockSize))
		w.created = make([]bool, len(w.blocks))
	}
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
	for b := 0; b < len(w.blocks); b += g.batch {
		if w.failed() {
			break
		}
		w.submit(w.newBatch(b, min(g.batch, len(w.blocks)-b), r, nil))
	}
	return w.Close()
}

// newBatch takes the buffers for n blocks from first on, read from src or
// in place from mem.
func (w *ImageWriter) newBatch(first, n int, src io.ReaderAt, mem []byte) *batch {
	bt := &batch{first: first, present: ^uint64(0), src: src, mem: mem,
		slots: make([]*slot, n), res: make([]blockResult, n)}
	w.g.acquireN(bt.slots)
	return bt
}

// oneBlock is a batch of block b alone, in buffer s, with np pages of which
// present are filled in.
func oneBlock(b, np int, present uint64, s *slot) *batch {
	return &batch{first: b, pages: np, present: present, slots: []*slot{s}, res: make([]blockResult, 1)}
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
	for b := 0; b < len(w.blocks); b += g.batch {
		if w.failed() {
			break
		}
		n := min(g.batch, len(w.blocks)-b)
		w.submit(w.newBatch(b, n, nil, img[b*bs:min((b+n)*bs, len(img))]))
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
	w.submit(oneBlock(b, w.curLen/PageSize, ^uint64(0), w.cur))
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
	x := &Index{Name: w.name, Length: w.length, BlockSize: w.g.opt.BlockSize, Hash: w.g.opt.Hash, Blocks: []BlockRef{ref}}
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
	w.submit(oneBlock(b, blockPagesOf(w.length, w.g.opt.BlockSize, b), ob.present, ob.s))
}

func (w *ImageWriter) submit(bt *batch) {
	bt.img, bt.seq = w, w.seq
	w.seq++
	w.g.jobs <- bt
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
	w.mu.Lock()
	for w.committed < w.seq {
		w.cond.Wait()
	}
	err := cmp.Or(short, w.err)
	w.mu.Unlock()
	if w.dec != nil {
		w.dec.Close()
	}
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
	x := &Index{Name: w.name, Length: length, BlockSize: w.g.opt.BlockSize, Hash: w.g.opt.Hash, Blocks: w.blocks}
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
	w.mu.Lock()
	for w.committed < w.seq {
		w.cond.Wait()
	}
	w.mu.Unlock()
	if w.dec != nil {
		w.dec.Close()
	}
}

// deliver hands over a batch a worker has finished. Batches are committed
// in submission order (for Write and IngestAt, block order), so that an
// InOrder sink sees the objects in a deterministic order: by the worker that
// delivers the next batch due, which also commits every later batch already
// delivered, while a worker that delivers one out of order leaves it.
func (w *ImageWriter) deliver(bt *batch) {
	w.pendMu.Lock()
	w.pending[bt.seq] = bt
	if w.committing {
		w.pendMu.Unlock()
		return
	}
	w.committing = true
	for {
		bt, ok := w.pending[w.next]
		if !ok {
			w.committing = false
			w.pendMu.Unlock()
			return
		}
		delete(w.pending, w.next)
		w.next++
		w.pendMu.Unlock()
		w.apply(bt)
		for _, s := range bt.slots {
			w.g.release(s)
		}
		w.pendMu.Lock()
	}
}

// apply puts a batch's new objects into the sink and fills in the index.
func (w *ImageWriter) apply(bt *batch) {
	w.mu.Lock()
	failed := w.err != nil
	w.mu.Unlock()
	err := bt.err
	created := make([]bool, 0, len(bt.res))
	for i := range bt.res {
		if failed || err != nil {
			break
		}
		r := &bt.res[i]
		c := r.created // put by the worker (a sink not InOrder)
		// A block compressed by two workers at once (before either was
		// stored) is put once: the second finds it known.
		if r.obj != nil && !w.g.isKnown(r.ref.Addr) {
			c, err = w.g.sink.Put(r.ref.Addr, r.obj)
			if err == nil {
				w.g.markKnown(r.ref.Addr)
			}
			r.size = len(r.obj)
		}
		created = append(created, c)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	defer w.cond.Broadcast()
	w.committed++
	if failed {
		return
	}
	if err != nil {
		w.err = err
		return
	}
	for i, c := range created {
		r := &bt.res[i]
		b := bt.first + i
		for len(w.blocks) <= b {
			w.blocks = append(w.blocks, BlockRef{})
			w.created = append(w.created, false)
		}
		w.blocks[b] = r.ref
		w.created[b] = c
		if c {
			w.stats.NewObjects++
			w.stats.NewBytes += int64(r.size)
		}
	}
}
