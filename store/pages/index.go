package pages

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"math/bits"
	"unicode/utf8"

	"github.com/zeebo/blake3"
)

// PageSize is the guest page size every image is cut in.
const PageSize = 4096

const pageShift = 12

// Block sizes an index may use: 1 to 64 pages, so a block's page mask fits a
// uint64.
const (
	MinBlockSize = PageSize
	MaxBlockSize = 64 * PageSize
)

// Version is the index format version this package writes by default
// (HashBLAKE3); it reads MinVersion to Version.
const (
	Version    = 2
	MinVersion = 1
)

// Hash is the hash that addresses an image's blocks, given by its index's
// version: 1 for SHA-256, 2 for BLAKE3.
type Hash uint8

const (
	// HashBLAKE3 (index version 2, the default): BLAKE3-256, which hashes a
	// 64 KiB block about twice as fast as SHA-256 with the CPU's SHA
	// extensions, using AVX2 (github.com/zeebo/blake3).
	HashBLAKE3 Hash = iota
	// HashSHA256 (index version 1): SHA-256, what images written before
	// BLAKE3 use; still read, and written on request (Options.Hash).
	HashSHA256
)

func (h Hash) String() string {
	switch h {
	case HashBLAKE3:
		return "blake3"
	case HashSHA256:
		return "sha256"
	}
	return fmt.Sprintf("Hash(%d)", int(h))
}

// version is the index version that records h.
func (h Hash) version() uint16 {
	if h == HashSHA256 {
		return 1
	}
	return 2
}

// sum returns the address of the packed pages data.
func (h Hash) sum(data []byte) Addr {
	if h == HashSHA256 {
		return sha256.Sum256(data)
	}
	return blake3.Sum256(data)
}

// sumParts returns the address of the packed pages held in parts, in order.
func (h Hash) sumParts(parts [][]byte) Addr {
	var d hash.Hash = blake3.New()
	if h == HashSHA256 {
		d = sha256.New()
	}
	for _, p := range parts {
		d.Write(p)
	}
	var a Addr
	d.Sum(a[:0])
	return a
}

const (
	indexMagic  = "VNPI"
	headerFixed = 4 + 2 + 1 + 1 + 8 + 1 + 1 // magic, version, page shift, block shift, length, codec, name length
	entrySize   = 8 + 32                    // mask, address
	sumSize     = sha256.Size
	// MaxLength bounds an image: 2^46 bytes (64 TiB) of guest memory.
	MaxLength = 1 << 46
	// maxNameLen bounds an image name.
	maxNameLen = 255
)

// Addr is a block's content address: the hash (its index's Hash) of its
// non-zero pages, concatenated in order.
type Addr [sha256.Size]byte

// String returns the address in hex.
func (a Addr) String() string { return hex.EncodeToString(a[:]) }

// IsZero reports whether a is the all-zero address, which no stored block
// has (the index uses it for blocks whose pages are all zero).
func (a Addr) IsZero() bool { return a == Addr{} }

// BlockRef is an index entry: which pages of the block are stored (bit i of
// Mask is page i of the block; a clear bit is a zero page) and the address of
// the object holding them. A block of zero pages has Mask 0 and the zero
// Addr.
type BlockRef struct {
	Mask uint64
	Addr Addr
}

// Pages returns the number of non-zero pages the block stores.
func (r BlockRef) Pages() int { return bits.OnesCount64(r.Mask) }

// Index describes one image: its name, length, block size and one BlockRef
// per block, at fixed positions, so block i covers guest-physical bytes
// [i*BlockSize, (i+1)*BlockSize) and can be located without reading the rest.
type Index struct {
	Name      string
	Length    int64 // bytes, a multiple of PageSize
	BlockSize int   // a power of two from MinBlockSize to MaxBlockSize
	Hash      Hash  // what addresses the blocks (the index version)
	Blocks    []BlockRef
}

// NumBlocks returns how many blocks an image of length bytes has.
func NumBlocks(length int64, blockSize int) int {
	return int((length + int64(blockSize) - 1) / int64(blockSize))
}

// blockPages returns the number of pages block i has (the last may be short).
func (x *Index) blockPages(i int) int {
	return blockPagesOf(x.Length, x.BlockSize, i)
}

func blockPagesOf(length int64, blockSize, i int) int {
	per := blockSize / PageSize
	left := (length - int64(i)*int64(blockSize)) / PageSize
	return int(min(int64(per), left))
}

// Offset returns the guest-physical byte offset of block i.
func (x *Index) Offset(i int) int64 { return int64(i) * int64(x.BlockSize) }

// ErrIndex marks a malformed or damaged index.
var ErrIndex = errors.New("malformed index")

// checkGeometry validates name, length and block size.
func checkGeometry(name string, length int64, blockSize int) error {
	switch {
	case len(name) > maxNameLen:
		return fmt.Errorf("name: %d bytes, at most %d", len(name), maxNameLen)
	case !utf8.ValidString(name):
		return errors.New("name: not valid UTF-8")
	case length < 0 || length > MaxLength:
		return fmt.Errorf("length %d: outside [0, %d]", length, int64(MaxLength))
	case length%PageSize != 0:
		return fmt.Errorf("length %d: not a multiple of the page size %d", length, PageSize)
	case blockSize < MinBlockSize || blockSize > MaxBlockSize || blockSize&(blockSize-1) != 0:
		return fmt.Errorf("block size %d: not a power of two from %d to %d", blockSize, MinBlockSize, MaxBlockSize)
	}
	return nil
}

// check validates every entry against the geometry.
func (x *Index) check() error {
	if err := checkGeometry(x.Name, x.Length, x.BlockSize); err != nil {
		return err
	}
	if x.Hash != HashBLAKE3 && x.Hash != HashSHA256 {
		return fmt.Errorf("hash %v unknown", x.Hash)
	}
	if n := NumBlocks(x.Length, x.BlockSize); len(x.Blocks) != n {
		return fmt.Errorf("%d block entries, want %d", len(x.Blocks), n)
	}
	for i, b := range x.Blocks {
		np := x.blockPages(i)
		if np < 64 && b.Mask>>np != 0 {
			return fmt.Errorf("block %d: mask %#x has bits beyond its %d pages", i, b.Mask, np)
		}
		if (b.Mask == 0) != b.Addr.IsZero() {
			return fmt.Errorf("block %d: mask %#x with address %s: a block has an address exactly when it has a non-zero page", i, b.Mask, b.Addr)
		}
	}
	return nil
}

// MarshalBinary encodes the index (format in the package doc). It fails if
// the index is inconsistent.
func (x *Index) MarshalBinary() ([]byte, error) {
	if err := x.check(); err != nil {
		return nil, fmt.Errorf("pages: encode index %q: %w", x.Name, err)
	}
	b := make([]byte, 0, headerFixed+len(x.Name)+len(x.Blocks)*entrySize+sumSize)
	b = append(b, indexMagic...)
	b = binary.LittleEndian.AppendUint16(b, x.Hash.version())
	b = append(b, pageShift, byte(bits.TrailingZeros(uint(x.BlockSize))))
	b = binary.LittleEndian.AppendUint64(b, uint64(x.Length))
	b = append(b, codecSet, byte(len(x.Name)))
	b = append(b, x.Name...)
	for _, e := range x.Blocks {
		b = binary.LittleEndian.AppendUint64(b, e.Mask)
		b = append(b, e.Addr[:]...)
	}
	sum := sha256.Sum256(b)
	return append(b, sum[:]...), nil
}

// Sum returns the image checksum: the SHA-256 of the encoded index before
// its trailing checksum. Since the index holds every block's content
// address, it covers the whole image; it doubles as the image's ID.
func (x *Index) Sum() (Addr, error) {
	b, err := x.MarshalBinary()
	if err != nil {
		return Addr{}, err
	}
	return Addr(b[len(b)-sumSize:]), nil
}

// DecodeIndex decodes and verifies an encoded index. what names the index in
// errors (a file name, say), since a damaged index cannot be trusted to name
// itself. Errors wrap ErrIndex and give the byte offset of the problem.
func DecodeIndex(what string, b []byte) (*Index, error) {
	x, off, err := decodeIndex(b)
	if err != nil {
		return nil, fmt.Errorf("pages: index %s: byte %d: %w: %w", what, off, ErrIndex, err)
	}
	return x, nil
}

func decodeIndex(b []byte) (*Index, int, error) {
	if len(b) < headerFixed+sumSize {
		return nil, 0, fmt.Errorf("%d bytes, shorter than the smallest index", len(b))
	}
	if string(b[:4]) != indexMagic {
		return nil, 0, fmt.Errorf("magic %q, want %q", b[:4], indexMagic)
	}
	v := binary.LittleEndian.Uint16(b[4:])
	if v < MinVersion || v > Version {
		return nil, 4, fmt.Errorf("version %d, this build reads %d to %d", v, MinVersion, Version)
	}
	body := b[:len(b)-sumSize]
	if sum := sha256.Sum256(body); string(sum[:]) != string(b[len(body):]) {
		return nil, len(body), errors.New("checksum mismatch (the index is damaged)")
	}
	if b[6] != pageShift {
		return nil, 6, fmt.Errorf("page shift %d, want %d", b[6], pageShift)
	}
	if b[7] < 12 || b[7] > 18 {
		return nil, 7, fmt.Errorf("block shift %d outside [12, 18]", b[7])
	}
	x := &Index{BlockSize: 1 << b[7], Hash: HashBLAKE3}
	if v == 1 {
		x.Hash = HashSHA256
	}
	l := binary.LittleEndian.Uint64(b[8:])
	if l > MaxLength {
		return nil, 8, fmt.Errorf("length %d exceeds %d", l, int64(MaxLength))
	}
	x.Length = int64(l)
	if b[16] != codecSet {
		return nil, 16, fmt.Errorf("codec %d unknown", b[16])
	}
	nl := int(b[17])
	off := headerFixed
	if len(body) < off+nl {
		return nil, 17, fmt.Errorf("name of %d bytes past the end", nl)
	}
	x.Name = string(body[off : off+nl])
	off += nl
	n := NumBlocks(x.Length, x.BlockSize)
	if err := checkGeometry(x.Name, x.Length, x.BlockSize); err != nil {
		return nil, 8, err
	}
	if rest := len(body) - off; rest != n*entrySize {
		return nil, off, fmt.Errorf("%d bytes of entries, want %d for %d blocks", rest, n*entrySize, n)
	}
	x.Blocks = make([]BlockRef, n)
	for i := range x.Blocks {
		e := body[off+i*entrySize:]
		r := &x.Blocks[i]
		r.Mask = binary.LittleEndian.Uint64(e)
		copy(r.Addr[:], e[8:40])
	}
	if err := x.check(); err != nil {
		// Name the entry: "block N" in the message; point at the table.
		return nil, off, err
	}
	return x, 0, nil
}

// EncodedSize returns the size in bytes of the encoded index of an image
// called name, of length bytes cut in blocks of blockSize: what
// MarshalBinary returns for it. A store checks an index file's size with it
// before reading the file.
func EncodedSize(name string, length int64, blockSize int) int64 {
	return int64(headerFixed+len(name)+sumSize) + int64(NumBlocks(length, blockSize))*entrySize
}
