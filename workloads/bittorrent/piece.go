package bittorrent

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"time"
)

// DefaultPieceSize is the default piece length, 256 KiB.
const DefaultPieceSize = 256 << 10

// Errors for caller mistakes; test with errors.Is.
var (
	ErrConfig       = errors.New("bittorrent: invalid config")
	ErrPieceRange   = errors.New("bittorrent: piece index out of range")
	ErrBadHash      = errors.New("bittorrent: piece hash mismatch")
	ErrUnknownPeer  = errors.New("bittorrent: unknown remote peer")
	ErrNotRequested = errors.New("bittorrent: piece was not requested from this remote")
)

// Config holds the swarm parameters shared by every peer.
type Config struct {
	FileID             uint64
	FileSize           int64 // bytes
	PieceSize          int64 // bytes; the last piece may be shorter
	RegularSlots       int   // unchoke slots given by rate
	RechokeInterval    time.Duration
	OptimisticInterval time.Duration
}

// DefaultConfig returns the standard parameters for a file: 256 KiB pieces,
// 4 regular unchokes, rechoke every 10 s, optimistic rotation every 30 s.
func DefaultConfig(fileID uint64, fileSize int64) Config {
	return Config{
		FileID:             fileID,
		FileSize:           fileSize,
		PieceSize:          DefaultPieceSize,
		RegularSlots:       4,
		RechokeInterval:    10 * time.Second,
		OptimisticInterval: 30 * time.Second,
	}
}

// Validate reports whether c is usable.
func (c Config) Validate() error {
	switch {
	case c.FileSize <= 0:
		return fmt.Errorf("%w: file size %d", ErrConfig, c.FileSize)
	case c.PieceSize <= 0:
		return fmt.Errorf("%w: piece size %d", ErrConfig, c.PieceSize)
	case c.RegularSlots < 0:
		return fmt.Errorf("%w: %d regular slots", ErrConfig, c.RegularSlots)
	case c.OptimisticInterval <= 0:
		return fmt.Errorf("%w: optimistic interval %v", ErrConfig, c.OptimisticInterval)
	}
	return nil
}

// NumPieces is the number of pieces of the file.
func (c Config) NumPieces() int {
	return int((c.FileSize + c.PieceSize - 1) / c.PieceSize)
}

// PieceLen is the length in bytes of piece i (the last may be shorter).
func (c Config) PieceLen(i int) int64 {
	if i == c.NumPieces()-1 {
		if r := c.FileSize % c.PieceSize; r != 0 {
			return r
		}
	}
	return c.PieceSize
}

// Hash is a piece digest.
type Hash [sha256.Size]byte

// PieceHash is the digest a correct copy of piece index of file fileID has:
// SHA-256 of the two values, big-endian. The simulator carries no payload,
// so this stands in for hashing the piece's bytes.
func PieceHash(fileID uint64, index int) Hash {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], fileID)
	binary.BigEndian.PutUint64(b[8:], uint64(index))
	return sha256.Sum256(b[:])
}

// Bitfield is a set of piece indices in [0, Len()). The zero value is empty
// with length 0; use NewBitfield.
type Bitfield struct {
	n int
	w []uint64
}

// NewBitfield returns an empty bitfield for n pieces.
func NewBitfield(n int) Bitfield {
	return Bitfield{n: n, w: make([]uint64, (n+63)/64)}
}

// FullBitfield returns a bitfield with all n pieces set (a seed's).
func FullBitfield(n int) Bitfield {
	b := NewBitfield(n)
	for i := 0; i < n; i++ {
		b.Set(i)
	}
	return b
}

// Len is the number of pieces the bitfield covers.
func (b Bitfield) Len() int { return b.n }

// Has reports whether piece i is set; out-of-range indices are not.
func (b Bitfield) Has(i int) bool {
	return i >= 0 && i < b.n && b.w[i/64]&(1<<(uint(i)%64)) != 0
}

// Set adds piece i; it panics if i is out of range (a broken invariant).
func (b Bitfield) Set(i int) {
	if i < 0 || i >= b.n {
		panic(fmt.Sprintf("bittorrent: Bitfield.Set(%d) on %d pieces", i, b.n))
	}
	b.w[i/64] |= 1 << (uint(i) % 64)
}

// Count is the number of pieces set.
func (b Bitfield) Count() int {
	c := 0
	for _, w := range b.w {
		c += bits.OnesCount64(w)
	}
	return c
}

// Full reports whether every piece is set.
func (b Bitfield) Full() bool { return b.Count() == b.n }

// Clone returns an independent copy.
func (b Bitfield) Clone() Bitfield {
	return Bitfield{n: b.n, w: append([]uint64(nil), b.w...)}
}
