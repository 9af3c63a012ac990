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
		Codec:      "zstd-fastest+crc32c",
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

// writeChunk publishes the chunk file for addr unless it already exists. It
// returns the size of the chunk file in the pool and whether this call
// created it. A chunk file is written to a temporary name, synced, and
// hard-linked to its address, so it appears complete or not at all, and an
// existing chunk file is never replaced (two writers racing on one address
// both succeed and agree on the stored size).
func writeChunk(root, addr string, file []byte) (stored int64, created bool, err error) {
	path := chunkPath(root, addr)
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return 0, false, fmt.Errorf("store: chunk dir: %w", err)
	}
	f, err := os.CreateTemp(dir, tmpPrefix+"*")
	if err != nil {
		return 0, false, fmt.Errorf("store: chunk %s: %w", addr, err)
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
		return 0, false, fmt.Errorf("store: write chunk %s: %w", addr, err)
	}
	switch err := os.Link(tmp, path); {
	case err == nil:
		return int64(len(file)), true, nil
	case errors.Is(err, fs.ErrExist):
		fi, err := os.Stat(path)
		if err != nil {
			return 0, false, fmt.Errorf("store: chunk %s: %w", addr, err)
		}
		return fi.Size(), false, nil
	default:
		return 0, false, fmt.Errorf("store: publish chunk %s: %w", addr, err)
	}
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
// caller to wrap in a CorruptError carrying the location.
func (l *chunkLoader) load(ref ChunkRef) (data []byte, path, reason string, err error) {
	path = chunkPath(l.root, ref.Addr)
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, path, "missing chunk file", err
		}
		return nil, path, "cannot open chunk file", err
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
	buf = buf[:n]
	if !bytes.HasPrefix(buf, []byte(chunkMagic)) {
		return nil, path, "bad chunk file magic", nil
	}
	frame := buf[chunkHeader:]
	if got, want := crc32.Checksum(frame, castagnoli), binary.BigEndian.Uint32(buf[len(chunkMagic):]); got != want {
		return nil, path, fmt.Sprintf("chunk file CRC-32C %08x, want %08x", got, want), nil
	}
	data, err = l.dec.DecodeAll(frame, l.data[:0])
	if err != nil {
		return nil, path, "chunk does not decode", err
	}
	if int64(len(data)) != ref.Size {
		return nil, path, fmt.Sprintf("chunk decodes to %d bytes, want %d", len(data), ref.Size), nil
	}
	sum := sha256.Sum256(data)
	if got := hex.EncodeToString(sum[:]); got != ref.Addr {
		return nil, path, fmt.Sprintf("chunk content hashes to %s", got), nil
	}
	return data, path, "", nil
}

func (l *chunkLoader) close() { l.dec.Close() }
