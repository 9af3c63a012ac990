package pages

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
)

// Sink is a content-addressed object store: the place blocks go. The store
// implements it for snapshots; FileSink and MemSink are simple ones. All
// methods must be safe for concurrent use.
type Sink interface {
	// Has reports whether the object addr is stored.
	Has(addr Addr) (bool, error)
	// Put stores obj under addr unless an object is already there, and
	// reports whether this call created it. An object appears whole or not
	// at all; Put must not retain obj.
	Put(addr Addr, obj []byte) (created bool, err error)
	// Get returns the object addr, in dst[:0] if it fits. A missing object
	// is an error wrapping fs.ErrNotExist.
	Get(addr Addr, dst []byte) ([]byte, error)
}

// Syncer is a Sink that makes the objects it created durable only when
// asked; the ingester calls Sync once per image, before it returns the
// index, rather than fsyncing every object.
type Syncer interface {
	Sync() error
}

// InOrder is a Sink whose Puts must come in each image's block order
// (PackSink: one append stream, so the same images make the same packs).
// The ingester puts such a sink's objects from its in-order commit, one at a
// time; any other sink gets them from every worker at once, as soon as each
// is compressed: on two cores the one committer putting every object (a
// copy, or a file written and linked) held ingest to 1.3-1.4 cores.
type InOrder interface {
	Sink
	PutsInOrder()
}

// PartsPutter is a Sink that also takes an object as its header and its
// payload apart: a raw object of a block that IngestBytes reads in place
// (no zero page, so not copied into a buffer) is then copied once, by the
// sink, rather than first into one buffer with its header and then by Put.
type PartsPutter interface {
	// PutParts is Put of the object hdr followed by payload.
	PutParts(addr Addr, hdr, payload []byte) (created bool, err error)
}

// FileSink keeps one file per object, root/ab/abcdef..., written to a
// temporary name and hard-linked into place so that it is whole or absent
// and never replaced. Sync fsyncs the files created since the last Sync and
// their directories.
type FileSink struct {
	root string

	mu      sync.Mutex
	pending []string        // created, not yet synced
	dirs    map[string]bool // shard directories of pending
}

var (
	_ Sink        = (*FileSink)(nil)
	_ Syncer      = (*FileSink)(nil)
	_ Sink        = (*MemSink)(nil)
	_ PartsPutter = (*MemSink)(nil)
)

// NewFileSink returns a FileSink in the existing directory root.
func NewFileSink(root string) (*FileSink, error) {
	fi, err := os.Stat(root)
	if err != nil {
		return nil, fmt.Errorf("pages: file sink: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("pages: file sink %s: not a directory", root)
	}
	return &FileSink{root: root, dirs: make(map[string]bool)}, nil
}

// Path returns the file that holds (or would hold) the object addr.
func (s *FileSink) Path(addr Addr) string {
	h := addr.String()
	return filepath.Join(s.root, h[:2], h)
}

// Has implements Sink.
func (s *FileSink) Has(addr Addr) (bool, error) {
	_, err := os.Lstat(s.Path(addr))
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	default:
		return false, fmt.Errorf("pages: object %s: %w", addr, err)
	}
}

// Put implements Sink.
func (s *FileSink) Put(addr Addr, obj []byte) (bool, error) {
	path := s.Path(addr)
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, ".tmp-*")
	if errors.Is(err, fs.ErrNotExist) {
		if err = os.MkdirAll(dir, 0o755); err == nil {
			f, err = os.CreateTemp(dir, ".tmp-*")
		}
	}
	if err != nil {
		return false, fmt.Errorf("pages: put object %s: %w", addr, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	_, err = f.Write(obj)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return false, fmt.Errorf("pages: put object %s: %w", addr, err)
	}
	switch err := os.Link(tmp, path); {
	case err == nil:
		s.mu.Lock()
		s.pending = append(s.pending, path)
		s.dirs[dir] = true
		s.mu.Unlock()
		return true, nil
	case errors.Is(err, fs.ErrExist):
		return false, nil
	default:
		return false, fmt.Errorf("pages: publish object %s: %w", addr, err)
	}
}

// Get implements Sink.
func (s *FileSink) Get(addr Addr, dst []byte) ([]byte, error) {
	f, err := os.Open(s.Path(addr))
	if err != nil {
		return nil, fmt.Errorf("pages: get object %s: %w", addr, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("pages: get object %s: %w", addr, err)
	}
	n := int(fi.Size())
	if n > maxObject(MaxBlockSize) {
		return nil, fmt.Errorf("pages: object %s: %d bytes, larger than any object", addr, n)
	}
	if cap(dst) < n {
		dst = make([]byte, n)
	}
	dst = dst[:n]
	if _, err := f.ReadAt(dst, 0); err != nil {
		return nil, fmt.Errorf("pages: get object %s: %w", addr, err)
	}
	return dst, nil
}

// Sync implements Syncer: it fsyncs every object created since the last
// Sync, from several goroutines so that the device sees many requests at
// once, then their directories and the root.
func (s *FileSink) Sync() error {
	s.mu.Lock()
	files, dirs := s.pending, s.dirs
	s.pending, s.dirs = nil, make(map[string]bool)
	s.mu.Unlock()
	for d := range dirs { // order does not matter: each is synced
		files = append(files, d)
	}
	var (
		next  atomic.Int64
		wg    sync.WaitGroup
		errMu sync.Mutex
		first error
	)
	for range min(syncWorkers, len(files)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(files) {
					return
				}
				if err := syncPath(files[i]); err != nil {
					errMu.Lock()
					if first == nil {
						first = err
					}
					errMu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	if first != nil {
		return first
	}
	return syncPath(s.root)
}

// syncWorkers is the number of concurrent fsyncs in FileSink.Sync.
const syncWorkers = 16

func syncPath(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return fmt.Errorf("pages: sync %s: %w", p, err)
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("pages: sync %s: %w", p, err)
	}
	return nil
}

// MemSink keeps objects in memory, for tests and for benchmarks of the CPU
// side of ingest.
type MemSink struct {
	mu   sync.RWMutex
	objs map[Addr][]byte

	arenaMu sync.Mutex
	arena   []byte // room for the next objects: one allocation per memArena bytes, not per object
}

// memArena is the size of the allocations a MemSink copies objects into.
const memArena = 4 << 20

// NewMemSink returns an empty MemSink.
func NewMemSink() *MemSink { return &MemSink{objs: make(map[Addr][]byte)} }

// Has implements Sink.
func (s *MemSink) Has(addr Addr) (bool, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	_, ok := s.objs[addr]
	return ok, nil
}

// Put implements Sink. The object is copied outside the map's lock, so
// that workers putting at once do not wait for each other's copies (on two
// cores the lock held across the copy and the arena's allocation kept
// ingest to 1.4 cores); the object appears in the map only once whole.
func (s *MemSink) Put(addr Addr, obj []byte) (bool, error) {
	return s.PutParts(addr, nil, obj)
}

// PutParts implements PartsPutter.
func (s *MemSink) PutParts(addr Addr, hdr, payload []byte) (bool, error) {
	if ok, _ := s.Has(addr); ok {
		return false, nil
	}
	o := s.reserve(len(hdr) + len(payload))
	copy(o[copy(o, hdr):], payload)
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.objs[addr]; ok {
		return false, nil // put at the same time by another worker
	}
	s.objs[addr] = o
	return true, nil
}

// reserve returns n bytes of arena, allocating a new arena (without the
// lock held) when the current one has no room.
func (s *MemSink) reserve(n int) []byte {
	s.arenaMu.Lock()
	if n <= len(s.arena) {
		o := s.arena[:n:n]
		s.arena = s.arena[n:]
		s.arenaMu.Unlock()
		return o
	}
	s.arenaMu.Unlock()
	a := make([]byte, max(memArena, n))
	s.arenaMu.Lock()
	defer s.arenaMu.Unlock()
	if len(a)-n > len(s.arena) {
		s.arena = a[n:]
	}
	return a[:n:n]
}

// Get implements Sink.
func (s *MemSink) Get(addr Addr, dst []byte) ([]byte, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	o, ok := s.objs[addr]
	if !ok {
		return nil, fmt.Errorf("pages: get object %s: %w", addr, fs.ErrNotExist)
	}
	return append(dst[:0], o...), nil
}

// Len returns the number of objects and their total size.
func (s *MemSink) Len() (objects int, bytes int64) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, o := range s.objs {
		bytes += int64(len(o))
	}
	return len(s.objs), bytes
}

// Damage flips one bit of byte i of object addr, for tests of verification.
func (s *MemSink) Damage(addr Addr, i int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.objs[addr][i] ^= 0x10
}
