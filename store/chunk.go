package store

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/klauspost/compress/zstd"
	"github.com/restic/chunker"
)

// Chunking parameters. The average of 1 MiB keeps the pool at about a
// thousand files per GiB and the manifest at about 100 bytes per MiB, while a
// few dirtied pages still invalidate only one or two chunks; the minimum stops
// runs of tiny chunks in low-entropy regions, the maximum bounds the memory a
// stream needs (two chunk buffers) when no boundary is found, as in zero or
// constant regions.
const (
	minChunk = 256 << 10
	avgBits  = 20 // 1 MiB average spacing of cut points after minChunk
	maxChunk = 4 << 20
	// polynomial is the fixed irreducible Rabin polynomial. It must never
	// change: chunk boundaries, hence deduplication across snapshots,
	// depend on it.
	polynomial = chunker.Pol(0x3DA3358B4DC173)
)

// Chunk file format: magic, CRC-32C of the zstd frame, the frame. The frame
// carries zstd's own content checksum, and the content's SHA-256 is the file's
// name; the CRC is there because some bytes of a zstd frame header do not
// change what it decodes to, and a flipped byte anywhere must be caught.
const (
	chunkMagic  = "VNC1"
	chunkHeader = 8 // magic and CRC
	// maxStored bounds a chunk file: zstd's worst-case expansion of a
	// maxChunk chunk is far below this.
	maxStored = maxChunk + maxChunk/8 + chunkHeader
	// tmpPrefix marks temporary files and directories, which readers ignore
	// and GC removes.
	tmpPrefix = ".tmp-"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func chunkingInfo() Chunking {
	return Chunking{
		Algorithm:  "rabin-restic",
		Polynomial: fmt.Sprintf("%#x", uint64(polynomial)),
		MinSize:    minChunk,
		AvgSize:    1 << avgBits,
		MaxSize:    maxChunk,
		Codec:      chunkCodec,
	}
}

// chunkPath is where the chunk with address addr lives.
func chunkPath(root, addr string) string {
	return filepath.Join(root, chunksDir, addr[:2], addr)
}

// newEncoder returns a single-threaded encoder. SpeedFastest: stream writes
// are on the snapshot's critical path (a disk-paced writer lengthens pre-copy
// rounds), and memory pages compress well even at the fastest level.
func newEncoder() *zstd.Encoder {
	enc, err := zstd.NewWriter(nil,
		zstd.WithEncoderLevel(zstd.SpeedFastest),
		zstd.WithEncoderConcurrency(1),
		zstd.WithEncoderCRC(true),
		zstd.WithLowerEncoderMem(true))
	if err != nil {
		panic(fmt.Sprintf("store: zstd encoder: %v", err)) // fixed valid options
	}
	return enc
}

func newDecoder() *zstd.Decoder {
	dec, err := zstd.NewReader(nil,
		zstd.WithDecoderConcurrency(1),
		zstd.WithDecoderMaxMemory(maxChunk),
		zstd.WithDecodeAllCapLimit(true))
	if err != nil {
		panic(fmt.Sprintf("store: zstd decoder: %v", err)) // fixed valid options
	}
	return dec
}

// encodeChunk appends the chunk file bytes for data to dst[:0].
func encodeChunk(enc *zstd.Encoder, dst, data []byte) []byte {
	dst = append(dst[:0], chunkMagic...)
	dst = append(dst, 0, 0, 0, 0)
	dst = enc.EncodeAll(data, dst)
	binary.BigEndian.PutUint32(dst[len(chunkMagic):], crc32.Checksum(dst[chunkHeader:], castagnoli))
	return dst
}

// pool writes chunk files for one write worker, reusing its buffers.
type pool struct {
	root string
	enc  *zstd.Encoder
	dec  *zstd.Decoder // created on first reuse
	out  []byte        // the chunk file encoded from the data in hand
	file []byte        // an existing chunk file, read back to verify it
	data []byte        // its decoded content
}

func newPool(root string) *pool { return &pool{root: root, enc: newEncoder()} }

func (p *pool) close() {
	p.enc.Close()
	if p.dec != nil {
		p.dec.Close()
	}
}

// put makes sure the pool holds a sound chunk file for addr, whose content is
// data, and returns its size and whether this call wrote it. A chunk file
// already in the pool is trusted only after it has been read back, decoded
// and compared with data; one that fails (damaged, truncated, empty, a FIFO,
// a symlink...) is replaced atomically by a file written from data. A new
// chunk file is written to a temporary name, synced, and hard-linked to its
// address, so it appears complete or not at all; two writers racing on one
// address both succeed and agree on the stored size. put calls release, once,
// as soon as it no longer needs data (before a new file's write and fsync),
// so that the caller can reuse the buffer.
func (p *pool) put(addr string, data []byte, release func()) (stored int64, created bool, err error) {
	released := false
	done := func() {
		if !released {
			released = true
			release()
		}
	}
	defer done()
	path := chunkPath(p.root, addr)
	if err := p.shard(path); err != nil {
		return 0, false, fmt.Errorf("store: chunk %s: %w", addr, err)
	}
	size, sound, missing, err := p.check(path, data, "")
	switch {
	case err != nil:
		return 0, false, fmt.Errorf("store: chunk %s: %w", addr, err)
	case sound:
		return size, false, nil
	}
	p.out = encodeChunk(p.enc, p.out, data)
	done()
	if missing {
		err := p.publish(path, p.out, false)
		if err == nil {
			return int64(len(p.out)), true, nil
		}
		if !errors.Is(err, fs.ErrExist) {
			return 0, false, fmt.Errorf("store: publish chunk %s: %w", addr, err)
		}
		// Another writer published it first: verify theirs by address.
		size, sound, _, err = p.check(path, nil, addr)
		switch {
		case err != nil:
			return 0, false, fmt.Errorf("store: chunk %s: %w", addr, err)
		case sound:
			return size, false, nil
		}
	}
	if err := p.publish(path, p.out, true); err != nil {
		return 0, false, fmt.Errorf("store: repair damaged chunk %s: %w", addr, err)
	}
	return int64(len(p.out)), true, nil
}

// shard creates the chunk's shard directory and makes sure it is one, not a
// symlink that would put chunk files outside the store.
func (p *pool) shard(path string) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("chunk dir: %w", err)
	}
	return checkRealDir(dir)
}

// check reads the chunk file at path, if any, and reports whether it is
// sound: its content is data if data is non-nil, else hashes to addr. An
// error is returned only for a path that cannot be examined at all.
func (p *pool) check(path string, data []byte, addr string) (size int64, sound, missing bool, err error) {
	f, size, reason, err := openRegular(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return 0, false, true, nil
	case err != nil:
		return 0, false, false, err
	case reason != "":
		return 0, false, false, nil // to be replaced
	}
	defer f.Close()
	if size > maxStored {
		return 0, false, false, nil
	}
	if cap(p.file) < maxStored+1 {
		p.file = make([]byte, 0, maxStored+1)
	}
	n, err := io.ReadFull(f, p.file[:size+1])
	if !errors.Is(err, io.ErrUnexpectedEOF) || int64(n) != size {
		return 0, false, false, nil // changed size while read, or unreadable
	}
	if p.dec == nil {
		p.dec = newDecoder()
		p.data = make([]byte, 0, maxChunk)
	}
	if _, reason, _ := decodeChunk(p.dec, p.file[:n], p.data, data, addr); reason != "" {
		return 0, false, false, nil
	}
	return size, true, false, nil
}

// publish writes file to a temporary name in path's directory, syncs it and
// links it to path, or with replace renames it over whatever path is.
func (p *pool) publish(path string, file []byte, replace bool) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, tmpPrefix+"*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	_, err = f.Write(file)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if replace {
		return os.Rename(tmp, path)
	}
	return os.Link(tmp, path)
}

// decodeChunk checks a chunk file's magic and CRC and decodes it into dst,
// which must have room for maxChunk bytes. The content must be want if want is
// non-nil, else hash to addr. A failure is a reason (and perhaps an
// underlying error); the file's bytes are untrusted, and no input makes it
// allocate more than dst or panic.
func decodeChunk(dec *zstd.Decoder, file, dst, want []byte, addr string) (data []byte, reason string, err error) {
	if len(file) < chunkHeader || !bytes.HasPrefix(file, []byte(chunkMagic)) {
		return nil, "bad chunk file magic", nil
	}
	frame := file[chunkHeader:]
	if got, want := crc32.Checksum(frame, castagnoli), binary.BigEndian.Uint32(file[len(chunkMagic):]); got != want {
		return nil, fmt.Sprintf("chunk file CRC-32C %08x, want %08x", got, want), nil
	}
	data, err = dec.DecodeAll(frame, dst[:0])
	if err != nil {
		return nil, "chunk does not decode", err
	}
	if want != nil {
		if !bytes.Equal(data, want) {
			return nil, "chunk content differs", nil
		}
		return data, "", nil
	}
	sum := sha256.Sum256(data)
	if got := hex.EncodeToString(sum[:]); got != addr {
		return nil, fmt.Sprintf("chunk content hashes to %s", got), nil
	}
	return data, "", nil
}

// chunkLoader reads and verifies chunk files, reusing its buffers.
type chunkLoader struct {
	root string
	dec  *zstd.Decoder
	file []byte
	data []byte
}

func newChunkLoader(root string) *chunkLoader {
	return &chunkLoader{root: root, dec: newDecoder(), data: make([]byte, 0, maxChunk)}
}

// load returns the verified content of chunk ref, valid until the next call.
// A failure is a reason string (and perhaps an underlying error) for the
// caller to wrap in a CorruptError carrying the location. ref has passed the
// manifest's checks, so ref.Stored bounds the read.
func (l *chunkLoader) load(ref ChunkRef) (data []byte, path, reason string, err error) {
	path = chunkPath(l.root, ref.Addr)
	f, _, reason, err := openRegular(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, path, "missing chunk file", err
	case err != nil:
		return nil, path, "cannot open chunk file", err
	case reason != "":
		return nil, path, "chunk file is " + reason, nil
	}
	defer f.Close()
	// Read one byte past the expected size to notice a longer file without
	// trusting Stat.
	if cap(l.file) < int(ref.Stored)+1 {
		l.file = make([]byte, ref.Stored+1)
	}
	buf := l.file[:ref.Stored+1]
	n, err := io.ReadFull(f, buf)
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF):
		if int64(n) != ref.Stored {
			return nil, path, fmt.Sprintf("chunk file is %d bytes, want %d (truncated)", n, ref.Stored), nil
		}
	case err != nil:
		return nil, path, "cannot read chunk file", err
	default:
		return nil, path, fmt.Sprintf("chunk file is longer than %d bytes", ref.Stored), nil
	}
	data, reason, err = decodeChunk(l.dec, buf[:n], l.data, nil, ref.Addr)
	if reason != "" {
		return nil, path, reason, err
	}
	if int64(len(data)) != ref.Size {
		return nil, path, fmt.Sprintf("chunk decodes to %d bytes, want %d", len(data), ref.Size), nil
	}
	return data, path, "", nil
}

func (l *chunkLoader) close() { l.dec.Close() }
