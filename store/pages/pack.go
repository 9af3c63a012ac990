package pages

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
)

// PackSink appends objects to pack files, so that ingest writes one
// sequential stream per sink (in the order the ingester commits) and pays
// one fsync per Sync rather than one file and one fsync per object. A pack
// is a sequence of records: the object's address (32 bytes), its length
// (uint32, little-endian) and the object. Opening a PackSink scans its packs
// to rebuild the address table; a record cut short by a crash ends its pack,
// is ignored and is cut off the last pack, so an object is whole or absent. A pack is closed and a
// new one started after packLimit bytes.
type PackSink struct {
	dir string

	mu    sync.RWMutex
	locs  map[Addr]packLoc
	packs []*os.File // by pack number; the last one is being appended to
	size  int64      // bytes in the last pack
	dirty bool       // the last pack has unsynced records
	rec   []byte     // record buffer, reused under mu
}

type packLoc struct {
	pack int
	off  int64 // of the object, after its record header
	n    uint32
}

var (
	_ Syncer  = (*PackSink)(nil)
	_ InOrder = (*PackSink)(nil)
)

const (
	packRecHeader = 32 + 4
	packLimit     = 1 << 30
	packSuffix    = ".pack"
)

// OpenPackSink opens the pack sink in the existing directory dir, reading
// the records of every pack already there.
func OpenPackSink(dir string) (*PackSink, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("pages: pack sink: %w", err)
	}
	s := &PackSink{dir: dir, locs: make(map[Addr]packLoc)}
	var names []string
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), packSuffix) {
			names = append(names, e.Name())
		}
	}
	slices.Sort(names)
	for i, name := range names {
		if want := packName(i); name != want {
			s.Close()
			return nil, fmt.Errorf("pages: pack sink %s: pack %s, want %s", dir, name, want)
		}
		f, err := os.OpenFile(filepath.Join(dir, name), os.O_RDWR, 0)
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("pages: pack sink: %w", err)
		}
		s.packs = append(s.packs, f)
		end, err := s.scan(i, f)
		if err != nil {
			s.Close()
			return nil, err
		}
		s.size = end
		if i == len(names)-1 {
			// Drop a torn tail, so the next record follows the last whole one.
			if err := f.Truncate(end); err != nil {
				s.Close()
				return nil, fmt.Errorf("pages: pack sink: %w", err)
			}
		}
	}
	return s, nil
}

func packName(i int) string { return fmt.Sprintf("%08d%s", i, packSuffix) }

// scan reads pack i's records and returns where the last whole one ends.
func (s *PackSink) scan(i int, f *os.File) (int64, error) {
	fi, err := f.Stat()
	if err != nil {
		return 0, fmt.Errorf("pages: pack %s: %w", f.Name(), err)
	}
	var hdr [packRecHeader]byte
	var off int64
	for off+packRecHeader <= fi.Size() {
		if _, err := f.ReadAt(hdr[:], off); err != nil {
			return 0, fmt.Errorf("pages: pack %s: %w", f.Name(), err)
		}
		n := binary.LittleEndian.Uint32(hdr[32:])
		if off+packRecHeader+int64(n) > fi.Size() {
			break // cut short by a crash
		}
		if _, ok := s.locs[Addr(hdr[:32])]; !ok {
			s.locs[Addr(hdr[:32])] = packLoc{pack: i, off: off + packRecHeader, n: n}
		}
		off += packRecHeader + int64(n)
	}
	return off, nil
}

// Has implements Sink.
func (s *PackSink) Has(addr Addr) (bool, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	_, ok := s.locs[addr]
	return ok, nil
}

// PutsInOrder implements InOrder: a pack is one append stream.
func (s *PackSink) PutsInOrder() {}

// Put implements Sink: it appends a record to the current pack.
func (s *PackSink) Put(addr Addr, obj []byte) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.locs[addr]; ok {
		return false, nil
	}
	if len(s.packs) == 0 || s.size+packRecHeader+int64(len(obj)) > packLimit {
		if err := s.rotate(); err != nil {
			return false, err
		}
	}
	f := s.packs[len(s.packs)-1]
	rec := append(s.rec[:0], addr[:]...)
	rec = binary.LittleEndian.AppendUint32(rec, uint32(len(obj)))
	rec = append(rec, obj...)
	s.rec = rec
	if _, err := f.WriteAt(rec, s.size); err != nil {
		return false, fmt.Errorf("pages: pack %s: put object %s: %w", f.Name(), addr, err)
	}
	s.locs[addr] = packLoc{pack: len(s.packs) - 1, off: s.size + packRecHeader, n: uint32(len(obj))}
	s.size += int64(len(rec))
	s.dirty = true
	return true, nil
}

// rotate syncs the current pack, if any, and starts a new one.
func (s *PackSink) rotate() error {
	if len(s.packs) > 0 && s.dirty {
		if err := s.packs[len(s.packs)-1].Sync(); err != nil {
			return fmt.Errorf("pages: pack sink: %w", err)
		}
	}
	f, err := os.OpenFile(filepath.Join(s.dir, packName(len(s.packs))), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("pages: pack sink: %w", err)
	}
	s.packs = append(s.packs, f)
	s.size, s.dirty = 0, false
	return syncPath(s.dir)
}

// Get implements Sink.
func (s *PackSink) Get(addr Addr, dst []byte) ([]byte, error) {
	s.mu.RLock()
	loc, ok := s.locs[addr]
	var f *os.File
	if ok {
		f = s.packs[loc.pack]
	}
	s.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("pages: get object %s: %w", addr, fs.ErrNotExist)
	}
	if cap(dst) < int(loc.n) {
		dst = make([]byte, loc.n)
	}
	dst = dst[:loc.n]
	if _, err := f.ReadAt(dst, loc.off); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("pages: pack %s: get object %s: %w", f.Name(), addr, err)
	}
	return dst, nil
}

// Sync implements Syncer: it fsyncs the pack being appended to.
func (s *PackSink) Sync() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.dirty {
		return nil
	}
	if err := s.packs[len(s.packs)-1].Sync(); err != nil {
		return fmt.Errorf("pages: pack sink: %w", err)
	}
	s.dirty = false
	return nil
}

// Locate returns the pack file and byte offset of object addr, for tools
// and tests that need to find it on disk.
func (s *PackSink) Locate(addr Addr) (path string, off int64, ok bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	loc, ok := s.locs[addr]
	if !ok {
		return "", 0, false
	}
	return s.packs[loc.pack].Name(), loc.off, true
}

// Close syncs and closes the packs.
func (s *PackSink) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for i, f := range s.packs {
		if i == len(s.packs)-1 && s.dirty {
			errs = append(errs, f.Sync())
		}
		errs = append(errs, f.Close())
	}
	s.packs = nil
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("pages: pack sink: %w", err)
	}
	return nil
}
