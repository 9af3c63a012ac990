package store

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/restic/chunker"

	"github.com/vnsnap/vnsnap/store/pages"
)

// Meta is what the caller records about a snapshot besides its streams.
type Meta struct {
	// Created is the snapshot time, chosen by the caller (the store never
	// reads the clock). It is stored in UTC.
	Created time.Time
	// Algorithm names the snapshot algorithm, e.g. "vnsnap-memory".
	Algorithm string
	// Epoch is the colouring epoch the snapshot belongs to.
	Epoch uint64
	// Labels is free-form metadata: machine type, QEMU version, the VNE
	// description... Keys and values must be valid UTF-8, keys non-empty.
	Labels map[string]string
}

type streamKey struct{ vm, stream string }

func (k streamKey) String() string {
	if k.vm == "" {
		return fmt.Sprintf("extra stream %q", k.stream)
	}
	return fmt.Sprintf("vm %q stream %q", k.vm, k.stream)
}

type writerState int

const (
	writerOpen writerState = iota
	writerCommitted
	writerAborted
)

// Writer writes one snapshot. Streams of different VMs (or different streams
// of one VM) may be written concurrently from different goroutines; each
// StreamWriter itself is for one goroutine at a time. Finish a Writer with
// Commit or Abort; the idiom is
//
//	w, err := store.Create(root, name, meta)
//	...
//	defer w.Abort() // no-op after a successful Commit
//	... write streams, Close each ...
//	return w.Commit()
type Writer struct {
	root, name, dir string
	meta            Meta
	lock            *rootLock // shared on the store: keeps GC away
	nlock           *nameLock // exclusive on the name

	mu      sync.Mutex // guards state and streams; held for all of Commit and Abort
	state   writerState
	streams map[streamKey]*StreamWriter

	poolMu sync.Mutex       // guards known, shards, added and the image maps; never held with mu by a stream goroutine
	known  map[string]int64 // chunk address -> stored size, or -1 while being written
	shards map[string]bool  // shard directories referenced, synced at Commit
	added  Added

	// Page images (images.go). ingester, blocks, imageNames and
	// imagesActive are guarded by mu; images, blockSet, indexSet and
	// imageShards by poolMu.
	ingester     *pages.Ingester // shared by every image of the snapshot
	pageOptions  pages.Options   // the ingester's (tests write version-1 indexes with it)
	blocks       *blockPool
	imageNames   map[streamKey]bool // reserved by ImageAt, written or being written
	imagesActive int
	images       map[streamKey]Image
	blockSet     map[pages.Addr]bool // distinct blocks the images reference
	indexSet     map[string]int64    // index files the images reference -> size
	imageShards  map[string]bool     // index shard directories, synced at Commit
}

// Create starts a snapshot called name in the store at root, which must be an
// existing directory (the store's subdirectories are created on demand). It
// fails with ErrInvalidName for a bad name, label or algorithm, with a
// *WritingError (ErrWriting) while another writer, in this process or
// another, holds the name, and with ErrExists if a complete snapshot of that
// name exists. The directory of a writer that died (no manifest, name not
// held) is taken over. Until Commit the snapshot is invisible to Open and
// List.
func Create(root, name string, meta Meta) (*Writer, error) {
	if err := checkRoot(root); err != nil {
		return nil, err
	}
	if err := checkName("snapshot name", name); err != nil {
		return nil, err
	}
	if err := checkMeta(meta.Labels); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	if err := checkAlgorithm(meta.Algorithm); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	meta.Created = meta.Created.UTC()
	if y := meta.Created.Year(); y < 0 || y > 9999 {
		return nil, fmt.Errorf("store: created: year %d outside 0-9999", y)
	}
	for _, d := range []string{chunksDir, snapshotsDir} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			return nil, fmt.Errorf("store: create: %w", err)
		}
		if err := checkRealDir(filepath.Join(root, d)); err != nil {
			return nil, fmt.Errorf("store: create: %w", err)
		}
	}
	lock, err := lockRoot(root, false, true)
	if err != nil {
		return nil, err
	}
	nlock, err := lockName(root, name)
	if err != nil {
		lock.unlock()
		return nil, err
	}
	fail := func(err error) (*Writer, error) {
		nlock.release()
		lock.unlock()
		return nil, err
	}
	dir := filepath.Join(root, snapshotsDir, name)
	if exists(dir) {
		if exists(filepath.Join(dir, manifestFile)) {
			return fail(fmt.Errorf("store: snapshot %q already exists: %w", name, ErrExists))
		}
		if !namesLocked {
			return fail(fmt.Errorf("store: snapshot %q: %w (incomplete, left by an unfinished write; GC removes it)", name, ErrExists))
		}
		// We hold the name, so its writer is dead: take its directory over.
		if err := os.RemoveAll(dir); err != nil {
			return fail(fmt.Errorf("store: create snapshot %q: remove a dead writer's directory: %w", name, err))
		}
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		return fail(fmt.Errorf("store: create snapshot %q: %w", name, err))
	}
	meta.Labels = maps.Clone(meta.Labels)
	return &Writer{
		root: root, name: name, dir: dir, meta: meta, lock: lock, nlock: nlock,
		streams:    make(map[streamKey]*StreamWriter),
		known:      make(map[string]int64),
		shards:     make(map[string]bool),
		imageNames: make(map[streamKey]bool), images: make(map[streamKey]Image),
		blockSet: make(map[pages.Addr]bool), indexSet: make(map[string]int64), imageShards: make(map[string]bool),
	}, nil
}

// Stream opens the stream called stream of VM vm for writing. Bytes written
// to it are chunked, deduplicated, compressed and stored as they arrive, in
// bounded memory. Close it to finish the stream; a stream that failed makes
// Commit fail. Stream fails with ErrInvalidName for bad names, ErrDuplicate if
// the stream was already opened in this snapshot and ErrFinished after Commit
// or Abort.
func (w *Writer) Stream(vm, stream string) (*StreamWriter, error) {
	if err := checkName("vm name", vm); err != nil {
		return nil, err
	}
	return w.open(streamKey{vm, stream})
}

// Extra opens a per-snapshot stream that belongs to no VM, such as the
// network's frame log. It behaves as Stream.
func (w *Writer) Extra(stream string) (*StreamWriter, error) {
	return w.open(streamKey{"", stream})
}

func (w *Writer) open(k streamKey) (*StreamWriter, error) {
	if err := checkName("stream name", k.stream); err != nil {
		return nil, err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.state != writerOpen {
		return nil, fmt.Errorf("store: snapshot %q: %s: %w", w.name, k, ErrFinished)
	}
	if _, dup := w.streams[k]; dup || w.imageNames[k] {
		return nil, fmt.Errorf("store: snapshot %q: %s: %w", w.name, k, ErrDuplicate)
	}
	pr, pw := io.Pipe()
	sw := &StreamWriter{w: w, key: k, pw: pw, done: make(chan struct{})}
	w.streams[k] = sw
	go sw.run(pr)
	return sw, nil
}

// Commit finishes the snapshot: it makes every chunk durable and then writes
// the manifest atomically (temporary file, fsync, rename, fsync of the
// directory). Every stream must have been closed successfully. If Commit
// returns nil the snapshot is complete; otherwise it has been aborted and is
// absent. Either way the Writer is finished.
func (w *Writer) Commit() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.state != writerOpen {
		return fmt.Errorf("store: commit snapshot %q: %w", w.name, ErrFinished)
	}
	m, err := w.manifest()
	if err == nil {
		err = w.persist(m)
	}
	if err != nil {
		if aerr := w.abortLocked(); aerr != nil {
			err = errors.Join(err, aerr)
		}
		return fmt.Errorf("store: commit snapshot %q: %w", w.name, err)
	}
	w.state = writerCommitted
	w.closeIngesterLocked()
	w.nlock.release()
	w.lock.unlock()
	return nil
}

// manifest assembles the manifest from the finished streams, sorted by name.
func (w *Writer) manifest() (*Manifest, error) {
	m := &Manifest{
		Schema:    SchemaVersion,
		Name:      w.name,
		Created:   w.meta.Created,
		Algorithm: w.meta.Algorithm,
		Epoch:     w.meta.Epoch,
		Labels:    w.meta.Labels,
		Chunking:  chunkingInfo(),
	}
	vms := make(map[string][]Stream)
	w.poolMu.Lock()
	defer w.poolMu.Unlock()
	for _, k := range slices.SortedFunc(maps.Keys(w.streams), func(a, b streamKey) int {
		return cmp.Or(cmp.Compare(a.vm, b.vm), cmp.Compare(a.stream, b.stream))
	}) {
		sw := w.streams[k]
		sw.mu.Lock()
		closed, err, s := sw.closed, sw.err, sw.result
		sw.mu.Unlock()
		switch {
		case !closed:
			return nil, fmt.Errorf("%s: still open", k)
		case err != nil:
			return nil, fmt.Errorf("%s failed: %w", k, err)
		}
		s.Chunks = slices.Clone(s.Chunks)
		for i := range s.Chunks {
			s.Chunks[i].Stored = w.known[s.Chunks[i].Addr]
		}
		if k.vm == "" {
			m.Extras = append(m.Extras, s)
		} else {
			vms[k.vm] = append(vms[k.vm], s)
		}
	}
	imgs, totals := w.imageTotals()
	for _, vm := range slices.Sorted(maps.Keys(imgs)) {
		if _, ok := vms[vm]; !ok {
			vms[vm] = []Stream{}
		}
	}
	for _, vm := range slices.Sorted(maps.Keys(vms)) {
		m.VMs = append(m.VMs, VM{Name: vm, Streams: vms[vm], Images: imgs[vm]})
	}
	m.Blocks = totals
	m.Added = w.added
	if err := m.check(); err != nil {
		// A bug, not a bad pool (put verifies every chunk it reuses), but
		// a writer runs inside a supervisor of live VMs: fail the commit.
		return nil, fmt.Errorf("writer built an inconsistent manifest: %w", err)
	}
	return m, nil
}

// persist syncs the chunk directories, then the manifest, then the snapshot's
// directory entry.
func (w *Writer) persist(m *Manifest) error {
	w.poolMu.Lock()
	shards := slices.Sorted(maps.Keys(w.shards))
	w.poolMu.Unlock()
	for _, s := range shards {
		if err := syncDir(filepath.Join(w.root, chunksDir, s)); err != nil {
			return err
		}
	}
	if err := syncDir(filepath.Join(w.root, chunksDir)); err != nil {
		return err
	}
	if err := w.syncImages(); err != nil {
		return err
	}
	data := m.seal()
	if len(data) > maxManifest {
		return fmt.Errorf("manifest is %d bytes, larger than the %d-byte limit readers accept: too many chunks for one snapshot", len(data), maxManifest)
	}
	if err := writeFileAtomic(w.dir, manifestFile, data); err != nil {
		return fmt.Errorf("write manifest: %w", err)
	}
	return syncDir(filepath.Join(w.root, snapshotsDir))
}

// Abort discards the snapshot: open streams fail with ErrAborted, and the
// snapshot directory is removed. Chunk files already added to the shared pool
// stay there (another writer may have deduplicated against them already); GC
// removes those no manifest references. Abort after Commit or Abort does
// nothing and returns nil, so it can be deferred.
func (w *Writer) Abort() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.state != writerOpen {
		return nil
	}
	if err := w.abortLocked(); err != nil {
		return fmt.Errorf("store: abort snapshot %q: %w", w.name, err)
	}
	return nil
}

func (w *Writer) abortLocked() error {
	w.state = writerAborted
	w.closeIngesterLocked() // or the last image being written closes it
	for _, sw := range w.streams {
		sw.aborted.Store(true)
		sw.pw.CloseWithError(ErrAborted)
		<-sw.done
	}
	err := os.RemoveAll(w.dir)
	w.nlock.release()
	w.lock.unlock()
	return err
}

// claim reports whether the caller is the first of this writer's streams to
// meet chunk addr, and so must make sure it is in the pool and call stored.
func (w *Writer) claim(addr string) bool {
	w.poolMu.Lock()
	defer w.poolMu.Unlock()
	if _, ok := w.known[addr]; ok {
		return false
	}
	w.known[addr] = -1 // pending until stored
	w.shards[addr[:2]] = true
	return true
}

// stored records that chunk addr is in the pool with the given file size,
// and whether this writer created it.
func (w *Writer) stored(addr string, size int64, created bool) {
	w.poolMu.Lock()
	defer w.poolMu.Unlock()
	w.known[addr] = size
	if created {
		w.added.Chunks++
		w.added.Stored += size
	}
}

// StreamWriter receives one stream's bytes. It is an io.WriteCloser for one
// goroutine at a time; a QEMU migration can be piped straight into it.
type StreamWriter struct {
	w    *Writer
	key  streamKey
	pw   *io.PipeWriter
	done chan struct{} // closed when run returns

	aborted atomic.Bool // set by Abort before it closes pw

	mu     sync.Mutex
	closed bool
	err    error  // set by run before done is closed, or by CloseWithError
	result Stream // set by run before done is closed
}

// Write stores p. It may block while earlier bytes are compressed and
// written. It fails with the stream's storage error, with ErrAborted after
// Abort, or with ErrFinished after Close.
func (sw *StreamWriter) Write(p []byte) (int, error) {
	n, err := sw.pw.Write(p)
	if err != nil {
		if errors.Is(err, io.ErrClosedPipe) {
			err = ErrFinished
			if sw.aborted.Load() {
				err = ErrAborted
			}
		}
		return n, fmt.Errorf("store: snapshot %q %s: %w", sw.w.name, sw.key, err)
	}
	return n, nil
}

// Close ends the stream and waits until all of it is stored. It returns the
// first error met while storing; such a stream makes Commit fail. Calling
// Close again returns the same result.
func (sw *StreamWriter) Close() error {
	sw.pw.Close()
	return sw.finish(nil)
}

// CloseWithError ends the stream as failed, for a producer whose source broke
// mid-stream (a migration that errored): the bytes so far are not a valid
// image, so Commit will fail and the snapshot must be aborted. It returns
// nil; err must not be nil.
func (sw *StreamWriter) CloseWithError(err error) error {
	if err == nil {
		panic("store: CloseWithError(nil)")
	}
	sw.pw.CloseWithError(err)
	sw.finish(err)
	return nil
}

func (sw *StreamWriter) finish(cause error) error {
	<-sw.done
	sw.mu.Lock()
	defer sw.mu.Unlock()
	sw.closed = true
	if cause != nil && sw.err == nil {
		sw.err = fmt.Errorf("producer failed: %w", cause)
	}
	if sw.err != nil {
		return fmt.Errorf("store: snapshot %q %s: %w", sw.w.name, sw.key, sw.err)
	}
	return nil
}

// run chunks, hashes and stores the stream until EOF or error. On error it
// closes the pipe so that the producer's Write fails too.
func (sw *StreamWriter) run(pr *io.PipeReader) {
	defer close(sw.done)
	res, err := sw.store(pr)
	if err != nil {
		pr.CloseWithError(err)
	}
	sw.mu.Lock()
	sw.result, sw.err = res, err
	sw.mu.Unlock()
}

// store runs the stream's pipeline: this goroutine chunks and hashes, and
// writeWorkers goroutines verify chunks already in the pool and compress and
// write the others, so that this work and the fsync of one chunk overlap with
// chunking the next. Memory is bounded by writeWorkers+1 chunk buffers plus,
// per worker, an encoded chunk file, a chunk file read back and its decoded
// content. The
// refs' Stored sizes are filled in at Commit, once every write has finished.
func (sw *StreamWriter) store(r io.Reader) (Stream, error) {
	w := sw.w
	s := Stream{Name: sw.key.stream}
	free := make(chan []byte, writeWorkers+1)
	for range writeWorkers + 1 {
		free <- make([]byte, 0, maxChunk)
	}
	jobs := make(chan chunkJob)
	failed := make(chan struct{})
	var (
		wg      sync.WaitGroup
		errOnce sync.Once
		werr    error
	)
	for range writeWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := newPool(w.root)
			defer p.close()
			for j := range jobs {
				size, created, err := p.put(j.addr, j.data, func() { free <- j.data })
				if err != nil {
					errOnce.Do(func() { werr = err; close(failed) })
					continue
				}
				w.stored(j.addr, size, created)
			}
		}()
	}
	err := sw.chunk(r, &s, free, jobs, failed)
	close(jobs)
	wg.Wait()
	if werr != nil {
		return s, werr
	}
	return s, err
}

// writeWorkers is the number of goroutines per stream that compress and
// write chunks.
const writeWorkers = 2

type chunkJob struct {
	addr string
	data []byte
}

func (sw *StreamWriter) chunk(r io.Reader, s *Stream, free chan []byte, jobs chan<- chunkJob, failed <-chan struct{}) error {
	w := sw.w
	c := chunker.NewWithBoundaries(r, polynomial, minChunk, maxChunk)
	c.SetAverageBits(avgBits)
	image := sha256.New()
	for {
		var buf []byte
		select {
		case buf = <-free:
		case <-failed:
			return nil // the worker's error is reported
		}
		ch, err := c.Next(buf)
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		image.Write(ch.Data)
		sum := sha256.Sum256(ch.Data)
		addr := hex.EncodeToString(sum[:])
		s.Chunks = append(s.Chunks, ChunkRef{Addr: addr, Size: int64(len(ch.Data))})
		s.Length += int64(len(ch.Data))
		if !w.claim(addr) {
			free <- ch.Data
			continue
		}
		// A worker stores the chunk, or verifies the pool's copy of it.
		select {
		case jobs <- chunkJob{addr, ch.Data}:
		case <-failed:
			return nil
		}
	}
	s.SHA256 = hex.EncodeToString(image.Sum(nil))
	return nil
}
