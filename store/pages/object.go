package pages

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"

	"github.com/klauspost/compress/zstd"
)

// Object encoding: one codec byte, the CRC-32C (little-endian) of the codec
// byte and the payload, the payload. The codec is raw when zstd would not make the block
// smaller (random pages), so such blocks cost no decompression on restore.
const (
	objRaw    = 0
	objZstd   = 1
	objHeader = 5
	// codecZstd is the index's codec byte: objects are objRaw or objZstd.
	codecZstd = 1
)

// maxObject bounds the encoded size of a block of n raw bytes.
func maxObject(n int) int { return n + objHeader }

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

// encodeObject appends the object for data to dst[:0]: zstd if that saves at
// least 1/32 of the bytes, raw otherwise, or always raw if enc is nil.
func encodeObject(enc *zstd.Encoder, dst, data []byte) []byte {
	dst = append(dst[:0], objZstd, 0, 0, 0, 0)
	if enc != nil {
		dst = enc.EncodeAll(data, dst)
	}
	if enc == nil || len(dst)-objHeader > len(data)-len(data)/32 {
		dst = append(dst[:objHeader], data...)
		dst[0] = objRaw
	}
	binary.LittleEndian.PutUint32(dst[1:], objectCRC(dst))
	return dst
}

// objectCRC is the CRC-32C of an object's codec byte and payload.
func objectCRC(obj []byte) uint32 {
	return crc32.Update(crc32.Checksum(obj[:1], castagnoli), castagnoli, obj[objHeader:])
}

// decodeObject checks obj and returns its content (n bytes with address
// addr), decompressed into dst[:0] or, for a raw object, a slice of obj; or
// the reason it is damaged. skipHash leaves out the SHA-256 check: the CRC
// still catches damage, but not a wrong object stored under the address.
func decodeObject(dec *zstd.Decoder, dst, obj []byte, n int, addr Addr, skipHash bool) ([]byte, error) {
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
	default:
		return nil, fmt.Errorf("object codec %d unknown", obj[0])
	}
	if len(data) != n {
		return nil, fmt.Errorf("object decodes to %d bytes, want %d", len(data), n)
	}
	if !skipHash && sha256.Sum256(data) != addr {
		return nil, errors.New("object content does not hash to its address")
	}
	return data, nil
}
