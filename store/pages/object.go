package pages

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"

	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
)

// Object encoding: one codec byte, the CRC-32C (little-endian) of the codec
// byte and the payload, the payload. The codec is raw when compression would
// not make the block smaller (random pages), so such blocks cost no
// decompression on restore.
const (
	objRaw    = 0
	objZstd   = 1
	objS2     = 2
	objHeader = 5
	// codecSet is the index's codec byte: objects are objRaw, objZstd or
	// objS2. Objects are shared by every image that holds the same block,
	// whichever codec the ingester that stored it used, so a reader must
	// know them all.
	codecSet = 1
)

// Codec is the compression of new blocks.
type Codec int

const (
	// CodecRaw stores blocks uncompressed, the default: on this project's
	// machine compression, not the disk, limited ingest, flush and restore
	// (see the package doc's measurements), and zero pages and dedup keep
	// the stored size within the targets without it.
	CodecRaw Codec = iota
	// CodecS2 compresses with S2 (klauspost/compress/s2, an extension of
	// Snappy): on VM memory it stores within 1 % of zstd's fastest level at
	// 2.5 x its rate (BenchmarkLevel), a quarter less than raw, for disks
	// slower than S2 (about 0.5 GB/s per core on text pages).
	CodecS2
	// CodecZstd compresses with zstd at Options.Level.
	CodecZstd
)

func (c Codec) String() string {
	switch c {
	case CodecZstd:
		return "zstd"
	case CodecS2:
		return "s2"
	case CodecRaw:
		return "raw"
	}
	return fmt.Sprintf("Codec(%d)", int(c))
}

// encoder compresses blocks for one worker goroutine.
type encoder struct {
	codec Codec
	zstd  *zstd.Encoder
}

func newBlockEncoder(c Codec, level Level) *encoder {
	e := &encoder{codec: c}
	if c == CodecZstd {
		e.zstd = newEncoder(level)
	}
	return e
}

func (e *encoder) close() {
	if e.zstd != nil {
		e.zstd.Close()
	}
}

// maxObject bounds the encoded size of a block of n raw bytes (a stored
// object is never larger than n+objHeader); it is also the room an
// S2 encoder needs to compress into.
func maxObject(n int) int { return objHeader + max(n, s2.MaxEncodedLen(n)) }

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Level is a zstd compression level for new blocks.
type Level = zstd.EncoderLevel

// newEncoder returns a single-goroutine encoder at level.
func newEncoder(level Level) *zstd.Encoder {
	enc, err := zstd.NewWriter(nil,
		zstd.WithEncoderLevel(level),
		zstd.WithEncoderConcurrency(1),
		zstd.WithEncoderCRC(false), // the object's CRC and the address cover it
		zstd.WithZeroFrames(true),
		zstd.WithWindowSize(max(zstd.MinWindowSize, MaxBlockSize)))
	if err != nil {
		panic(fmt.Sprintf("pages: zstd encoder: %v", err)) // fixed valid options
	}
	return enc
}

func newDecoder() *zstd.Decoder {
	dec, err := zstd.NewReader(nil,
		zstd.WithDecoderConcurrency(1),
		zstd.WithDecoderMaxMemory(MaxBlockSize),
		zstd.WithDecodeAllCapLimit(true))
	if err != nil {
		panic(fmt.Sprintf("pages: zstd decoder: %v", err)) // fixed valid options
	}
	return dec
}

// encodeObject appends the object for data to dst[:0]: compressed if that
// saves at least 1/32 of the bytes, raw otherwise, or always raw if enc is
// nil or CodecRaw.
func encodeObject(enc *encoder, dst, data []byte) []byte {
	if obj := compressObject(enc, dst, data); obj != nil {
		return obj
	}
	dst = append(dst[:0], objRaw, 0, 0, 0, 0)
	dst = append(dst, data...)
	binary.LittleEndian.PutUint32(dst[1:], objectCRC(dst))
	return dst
}

// compressObject returns the compressed object for data, in dst's room if
// it has enough, or nil if enc stores blocks raw (nil or CodecRaw) or the
// codec does not save at least 1/32 of the bytes: then the caller stores
// data raw, without having copied it.
func compressObject(enc *encoder, dst, data []byte) []byte {
	switch {
	case enc == nil || enc.codec == CodecRaw:
		return nil
	case enc.codec == CodecS2:
		n := objHeader + s2.MaxEncodedLen(len(data))
		if cap(dst) < n {
			dst = make([]byte, n) // not with the Ingester's buffers: maxObject
		}
		dst = dst[:n]
		c := s2.Encode(dst[objHeader:], data)
		dst = dst[:objHeader+len(c)]
		dst[0] = objS2
	default:
		dst = append(dst[:0], objZstd, 0, 0, 0, 0)
		dst = enc.zstd.EncodeAll(data, dst)
	}
	if len(dst)-objHeader > len(data)-len(data)/32 {
		return nil
	}
	binary.LittleEndian.PutUint32(dst[1:], objectCRC(dst))
	return dst
}

// objectCRC is the CRC-32C of an object's codec byte and payload.
func objectCRC(obj []byte) uint32 {
	return crc32.Update(crc32.Checksum(obj[:1], castagnoli), castagnoli, obj[objHeader:])
}

// decodeObject checks obj and returns its content (n bytes with address
// addr under hash h), decompressed into dst[:0] or, for a raw object, a
// slice of obj; or the reason it is damaged. skipHash leaves out the hash
// check: the CRC still catches damage, but not a wrong object stored under
// the address.
func decodeObject(dec *zstd.Decoder, dst, obj []byte, n int, h Hash, addr Addr, skipHash bool) ([]byte, error) {
	if len(obj) < objHeader {
		return nil, fmt.Errorf("object is %d bytes, shorter than its header", len(obj))
	}
	payload := obj[objHeader:]
	if got, want := objectCRC(obj), binary.LittleEndian.Uint32(obj[1:]); got != want {
		return nil, fmt.Errorf("object CRC-32C %08x, want %08x", got, want)
	}
	var data []byte
	switch obj[0] {
	case objRaw:
		data = payload // no copy: valid as long as obj is
	case objZstd:
		var err error
		if data, err = dec.DecodeAll(payload, dst[:0]); err != nil {
			return nil, fmt.Errorf("object does not decode: %w", err)
		}
	case objS2:
		// The length comes first: check it before s2 allocates for it.
		m, err := s2.DecodedLen(payload)
		if err != nil {
			return nil, fmt.Errorf("object does not decode: %w", err)
		}
		if m != n {
			return nil, fmt.Errorf("object decodes to %d bytes, want %d", m, n)
		}
		if cap(dst) < n {
			dst = make([]byte, n)
		}
		if data, err = s2.Decode(dst[:n], payload); err != nil {
			return nil, fmt.Errorf("object does not decode: %w", err)
		}
	default:
		return nil, fmt.Errorf("object codec %d unknown", obj[0])
	}
	if len(data) != n {
		return nil, fmt.Errorf("object decodes to %d bytes, want %d", len(data), n)
	}
	if !skipHash && h.sum(data) != addr {
		return nil, errors.New("object content does not hash to its address")
	}
	return data, nil
}

// MaxObjectSize bounds the size of any stored object (one that compression
// would not shrink is stored raw): a raw block of
// MaxBlockSize bytes and its header.
const MaxObjectSize = MaxBlockSize + objHeader

// CheckObject checks what can be checked of an object without its index
// entry: its header, codec and CRC-32C. A store uses it before it trusts an
// object it finds already stored (a flipped or cut byte fails it); the
// content's size and address are checked on every read.
func CheckObject(obj []byte) error {
	switch {
	case len(obj) <= objHeader:
		return fmt.Errorf("object is %d bytes, no longer than its header", len(obj))
	case len(obj) > MaxObjectSize:
		return fmt.Errorf("object is %d bytes, longer than any object (%d)", len(obj), MaxObjectSize)
	case obj[0] != objRaw && obj[0] != objZstd && obj[0] != objS2:
		return fmt.Errorf("object codec %d unknown", obj[0])
	}
	if got, want := objectCRC(obj), binary.LittleEndian.Uint32(obj[1:]); got != want {
		return fmt.Errorf("object CRC-32C %08x, want %08x", got, want)
	}
	return nil
}
