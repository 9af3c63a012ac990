package store

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/vnsnap/vnsnap/store/pages"
)

// Directories of the page-image pool under the store root.
const (
	blocksDir = "blocks" // block objects: blocks/ab/abcdef... (pages object format)
	imagesDir = "images" // encoded page indexes: images/ab/<image checksum>
)

// blockPool is the store's pages.Sink: one file per block object, named by
// its address, in <root>/blocks. Like the chunk pool it trusts no file it
// finds: Has reads the object back and checks its CRC (and that it is a
// regular file of a possible size), and Put replaces a damaged object
// atomically. New objects are written to a temporary name and hard-linked
// into place, so an object is whole or absent; Sync (called by the
// ingester once per image) fsyncs the objects created since the last Sync
// and their directories. It records the size of every object it has
// answered for, so that the writer can account for what a snapshot stores.
//
// A file per object rather than pack files: GC removes an unreferenced
// object by unlinking it, writers in several processes share the pool
// without a shared append point, and nothing needs repacking. The price is
// an fsync per new object, paid in parallel at Sync.
type blockPool struct {
	root string

	mu      sync.Mutex
	sizes   map[pages.Addr]int64 // objects answered for: sound, with their size
	pending []string             // created, not yet synced
	dirs    map[string]bool      // their shard directories
	buf     sync.Pool            // *[]byte of MaxObjectSize, for Has
}

var (
	_ pages.Sink   = (*blockPool)(nil)
	_ pages.Syncer = (*blockPool)(nil)
)

func newBlockPool(root string) *blockPool {
	p := &blockPool{root: root, sizes: make(map[pages.Addr]int64), dirs: make(map[string]bool)}
	p.buf.New = func() any { b := make([]byte, pages.MaxObjectSize); return &b }
	return p
}

func (p *blockPool) path(addr pages.Addr) string {
	h := addr.String()
	return filepath.Join(p.root, blocksDir, h[:2], h)
}

// size returns the recorded size of object addr, or -1.
func (p *blockPool) size(addr pages.Addr) int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	if n, ok := p.sizes[addr]; ok {
		return n
	}
	return -1
}

// Has implements pages.Sink: it reports true only for a sound object file.
func (p *blockPool) Has(addr pages.Addr) (bool, error) {
	bp := p.buf.Get().(*[]byte)
	defer p.buf.Put(bp)
	obj, reason, err := readObject(p.path(addr), *bp)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	case reason != "":
		return false, nil // Put replaces it
	case err != nil:
		return false, fmt.Errorf("store: block %s: %w", addr, err)
	}
	p.record(addr, int64(len(obj)))
	return true, nil
}

func (p *blockPool) record(addr pages.Addr, n int64) {
	p.mu.Lock()
	p.sizes[addr] = n
	p.mu.Unlock()
}

// readObject reads the object file at path into buf (grown if it has no
// room for MaxObjectSize bytes) and checks it with pages.CheckObject. A file that
// is not a sound object gives a reason; err alone means it could not be
// examined (fs.ErrNotExist: there is none).
func readObject(path string, buf []byte) (obj []byte, reason string, err error) {
	obj, size, why, err := readSmall(path, buf, pages.MaxObjectSize)
	switch {
	case err != nil:
		return nil, "", err
	case why != "":
		return nil, "block file is " + why, nil
	case size > pages.MaxObjectSize:
		return nil, fmt.Sprintf("block file is longer than any object (%d bytes)", pages.MaxObjectSize), nil
	}
	if err := pages.CheckObject(obj); err != nil {
		return nil, err.Error(), nil
	}
	return obj, "", nil
}

// Put implements pages.Sink. An object file already there is kept if it is
// sound and replaced (by rename) if not.
func (p *blockPool) Put(addr pages.Addr, obj []byte) (bool, error) {
	path := p.path(addr)
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return false, fmt.Errorf("store: block dir: %w", err)
	}
	if err := checkRealDir(dir); err != nil {
		return false, fmt.Errorf("store: block dir: %w", err)
	}
	f, err := os.CreateTemp(dir, tmpPrefix+"*")
	if err != nil {
		return false, fmt.Errorf("store: put block %s: %w", addr, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	_, err = f.Write(obj)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return false, fmt.Errorf("store: put block %s: %w", addr, err)
	}
	err = os.Link(tmp, path)
	if errors.Is(err, fs.ErrExist) {
		if ok, herr := p.Has(addr); herr == nil && ok {
			return false, nil // another writer's, and sound
		}
		err = os.Rename(tmp, path) // damaged: replace it
	}
	if err != nil {
		return false, fmt.Errorf("store: publish block %s: %w", addr, err)
	}
	p.mu.Lock()
	p.sizes[addr] = int64(len(obj))
	p.pending = append(p.pending, path)
	p.dirs[dir] = true
	p.mu.Unlock()
	return true, nil
}

// Get implements pages.Sink: a bounded read of a regular file, of the size
// its descriptor reports (a file that grows meanwhile is longer than its
// object and fails the caller's CRC check). The caller (pages) checks the
// object against its index entry.
func (p *blockPool) Get(addr pages.Addr, dst []byte) ([]byte, error) {
	path := p.path(addr)
	obj, size, why, err := readSmall(path, dst, pages.MaxObjectSize)
	switch {
	case err != nil:
		return nil, fmt.Errorf("block file %s: %w", path, err)
	case why != "":
		return nil, fmt.Errorf("block file %s is %s", path, why)
	case size > pages.MaxObjectSize:
		return nil, fmt.Errorf("block file %s is longer than any object (%d bytes)", path, size)
	}
	return obj, nil
}

// Sync implements pages.Syncer: it fsyncs the objects created since the
// last Sync, from several goroutines, then their directories.
func (p *blockPool) Sync() error {
	p.mu.Lock()
	files, dirs := p.pending, p.dirs
	p.pending, p.dirs = nil, make(map[string]bool)
	p.mu.Unlock()
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
				if err := syncFile(files[i]); err != nil {
					errMu.Lock()
					first = cmpErr(first, err)
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
	for d := range dirs { // each is synced: order does not matter
		if err := syncDir(d); err != nil {
			return err
		}
	}
	if len(dirs) > 0 {
		return syncDir(filepath.Join(p.root, blocksDir))
	}
	return nil
}

func cmpErr(first, err error) error {
	if first == nil {
		return err
	}
	return first
}

// syncWorkers is the number of concurrent fsyncs of blockPool.Sync: the
// device sees many requests at once.
const syncWorkers = 16

func syncFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("sync %s: %w", path, err)
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync %s: %w", path, err)
	}
	return nil
}
