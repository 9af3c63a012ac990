package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// Snapshot is an open, complete snapshot whose manifest has been verified.
// It holds a shared lock on the store so that GC cannot remove its chunks
// while it is open; Close it when done. Its methods are safe for concurrent
// use.
type Snapshot struct {
	root, name string
	m          *Manifest
	lock       *rootLock
}

// Open opens the snapshot called name in the store at root and verifies its
// manifest. It fails with ErrNotFound if there is no such snapshot, including
// a directory without a manifest (an unfinished write), with a *CorruptError
// if the manifest is damaged, and with ErrSchema for a manifest of another
// schema version.
func Open(root, name string) (*Snapshot, error) {
	if err := checkRoot(root); err != nil {
		return nil, err
	}
	if err := checkName("snapshot name", name); err != nil {
		return nil, err
	}
	lock, err := lockRoot(root, false, true)
	if err != nil {
		return nil, err
	}
	m, err := readManifest(root, name)
	if err != nil {
		lock.unlock()
		return nil, err
	}
	return &Snapshot{root: root, name: name, m: m, lock: lock}, nil
}

// readManifest loads and verifies the manifest of snapshot name, whose name
// has been validated. The snapshot directory must be a directory and the
// manifest a regular file of at most maxManifest bytes; anything else is a
// *CorruptError naming the file, found without blocking or reading it.
func readManifest(root, name string) (*Manifest, error) {
	dir := filepath.Join(root, snapshotsDir, name)
	path := filepath.Join(dir, manifestFile)
	corrupt := func(path, reason string, err error) error {
		return &CorruptError{Snapshot: name, Chunk: -1, Path: path, Reason: reason, Err: err}
	}
	fi, err := os.Lstat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("store: snapshot %q: %w", name, ErrNotFound)
	case err != nil:
		return nil, fmt.Errorf("store: snapshot %q: %w", name, err)
	case !fi.IsDir():
		return nil, corrupt(dir, "snapshot directory is "+notDirKind(fi.Mode()), nil)
	}
	f, size, reason, err := openRegular(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("store: snapshot %q: %w (directory %s has no manifest: unfinished write)", name, ErrNotFound, dir)
	case err != nil:
		return nil, corrupt(path, "manifest: cannot open", err)
	case reason != "":
		return nil, corrupt(path, "manifest is "+reason, nil)
	}
	defer f.Close()
	if size > maxManifest {
		return nil, corrupt(path, fmt.Sprintf("manifest: %d bytes, larger than the %d-byte limit", size, maxManifest), nil)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxManifest+1))
	if err != nil {
		return nil, corrupt(path, "manifest: cannot read", err)
	}
	return decodeManifest(name, path, data)
}

// Close releases the snapshot's lock on the store. Readers obtained from the
// snapshot must not be used after Close.
func (s *Snapshot) Close() error {
	s.lock.unlock()
	return nil
}

// Name returns the snapshot's name.
func (s *Snapshot) Name() string { return s.name }

// Manifest returns the verified manifest. The caller must not modify it.
func (s *Snapshot) Manifest() *Manifest { return s.m }

// Reader returns a reader of the stream called stream of VM vm. See
// StreamReader for what it verifies. It fails with ErrNoStream if the
// snapshot has no such stream.
func (s *Snapshot) Reader(vm, stream string) (*StreamReader, error) {
	if vm == "" {
		return nil, fmt.Errorf("store: snapshot %q: vm name: %w: empty", s.name, ErrInvalidName)
	}
	return s.reader(vm, stream)
}

// ExtraReader returns a reader of the per-snapshot stream called stream (see
// Writer.Extra). It behaves as Reader.
func (s *Snapshot) ExtraReader(stream string) (*StreamReader, error) {
	return s.reader("", stream)
}

func (s *Snapshot) reader(vm, stream string) (*StreamReader, error) {
	st := s.m.find(vm, stream)
	if st == nil {
		return nil, fmt.Errorf("store: snapshot %q %s: %w", s.name, streamKey{vm, stream}, ErrNoStream)
	}
	return &StreamReader{snap: s, vm: vm, s: st, ld: newChunkLoader(s.root), image: sha256.New()}, nil
}

// StreamReader reads one stored stream. Every chunk is checked (CRC of the
// chunk file, zstd decoding, size, SHA-256 against its address) before any of
// its bytes are returned; after the last chunk the stream's length and
// SHA-256 are checked, and only then does Read return io.EOF. A failed check
// returns a *CorruptError naming the snapshot, VM, stream and chunk, and every
// later Read returns it again. It is for one goroutine at a time.
type StreamReader struct {
	snap  *Snapshot
	vm    string
	s     *Stream
	ld    *chunkLoader
	next  int    // index of the next chunk to load
	cur   []byte // unread bytes of the current chunk
	read  int64
	image hash.Hash
	err   error // sticky: io.EOF, a CorruptError or ErrFinished
}

// Len returns the stream's length according to the manifest.
func (r *StreamReader) Len() int64 { return r.s.Length }

// Read implements io.Reader.
func (r *StreamReader) Read(p []byte) (int, error) {
	for len(r.cur) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		r.advance()
	}
	n := copy(p, r.cur)
	r.cur = r.cur[n:]
	return n, nil
}

// WriteTo implements io.WriterTo, saving a copy per chunk in io.Copy.
func (r *StreamReader) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for {
		if len(r.cur) > 0 {
			n, err := w.Write(r.cur)
			total += int64(n)
			r.cur = r.cur[n:]
			if err != nil {
				return total, err
			}
			continue
		}
		if r.err == io.EOF {
			return total, nil
		}
		if r.err != nil {
			return total, r.err
		}
		r.advance()
	}
}

// advance loads the next chunk into r.cur or sets r.err.
func (r *StreamReader) advance() {
	if r.next == len(r.s.Chunks) {
		r.err = io.EOF
		if sum := hex.EncodeToString(r.image.Sum(nil)); r.read != r.s.Length || sum != r.s.SHA256 {
			r.err = r.snap.corrupt(r.vm, r.s.Name, -1, ChunkRef{}, "",
				fmt.Sprintf("stream is %d bytes with SHA-256 %s, want %d bytes with %s", r.read, sum, r.s.Length, r.s.SHA256), nil)
		}
		return
	}
	ref := r.s.Chunks[r.next]
	data, path, reason, err := r.ld.load(ref)
	if reason != "" {
		r.err = r.snap.corrupt(r.vm, r.s.Name, r.next, ref, path, reason, err)
		return
	}
	r.image.Write(data)
	r.read += int64(len(data))
	r.cur = data
	r.next++
}

// Close releases the reader's buffers. Reads after Close fail with
// ErrFinished.
func (r *StreamReader) Close() error {
	if r.ld != nil {
		r.ld.close()
		r.ld = nil
	}
	r.cur = nil
	r.err = ErrFinished
	return nil
}

func (s *Snapshot) corrupt(vm, stream string, idx int, ref ChunkRef, path, reason string, err error) *CorruptError {
	return &CorruptError{Snapshot: s.name, VM: vm, Stream: stream, Chunk: idx, Addr: ref.Addr, Path: path, Reason: reason, Err: err}
}

// Verify reads back the whole snapshot and returns every problem it finds,
// in manifest order: the manifest on disk is re-read and must still verify
// and match the open one; every chunk reference of every stream is checked as
// StreamReader checks it (a damaged chunk shared by several streams is
// reported once per reference, so each report names its VM and stream); and
// the length and SHA-256 of every stream whose chunks are all sound; then
// every page image's index and every block it references (a damaged block
// is named by VM, image, block and offset, once per image). An
// empty result means the snapshot is intact. The error is non-nil only if ctx
// ends first.
func (s *Snapshot) Verify(ctx context.Context) ([]*CorruptError, error) {
	var problems []*CorruptError
	if m, err := readManifest(s.root, s.name); err != nil {
		ce := new(CorruptError)
		if !errors.As(err, &ce) {
			ce = &CorruptError{Snapshot: s.name, Chunk: -1, Reason: "manifest unreadable", Err: err}
		}
		problems = append(problems, ce)
	} else if m.Checksum != s.m.Checksum {
		problems = append(problems, &CorruptError{Snapshot: s.name, Chunk: -1,
			Path: filepath.Join(s.root, snapshotsDir, s.name, manifestFile), Reason: "manifest changed since Open"})
	}
	ld := newChunkLoader(s.root)
	defer ld.close()
	var err error
	s.m.eachStream(func(vm string, st *Stream) {
		if err != nil {
			return
		}
		image := sha256.New()
		sound := true
		var n int64
		for i, ref := range st.Chunks {
			if err = ctx.Err(); err != nil {
				return
			}
			data, path, reason, lerr := ld.load(ref)
			if reason != "" {
				problems = append(problems, s.corrupt(vm, st.Name, i, ref, path, reason, lerr))
				sound = false
				continue
			}
			image.Write(data)
			n += int64(len(data))
		}
		if sum := hex.EncodeToString(image.Sum(nil)); sound && (n != st.Length || sum != st.SHA256) {
			problems = append(problems, s.corrupt(vm, st.Name, -1, ChunkRef{}, "",
				fmt.Sprintf("stream is %d bytes with SHA-256 %s, want %d bytes with %s", n, sum, st.Length, st.SHA256), nil))
		}
	})
	if err != nil {
		return problems, fmt.Errorf("store: verify snapshot %q: %w", s.name, err)
	}
	problems = append(problems, s.verifyImages()...)
	if err := ctx.Err(); err != nil {
		return problems, fmt.Errorf("store: verify snapshot %q: %w", s.name, err)
	}
	return problems, nil
}
