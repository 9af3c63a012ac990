package sim

import (
	"math/rand/v2"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestInsertRangeAgainstBitmap checks the scoreboard's range merging
// against a naive bitmap over random insertions.
func TestInsertRangeAgainstBitmap(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for trial := 0; trial < 500; trial++ {
		var rs []seqRange
		var bits [64]bool
		for k := 0; k < 1+r.IntN(10); k++ {
			a := uint64(r.IntN(60))
			b := a + 1 + uint64(r.IntN(8))
			b = min(b, 64)
			rs = insertRange(rs, seqRange{a, b})
			for i := a; i < b; i++ {
				bits[i] = true
			}
		}
		var want []seqRange
		for i := 0; i < 64; i++ {
			if bits[i] && (i == 0 || !bits[i-1]) {
				want = append(want, seqRange{uint64(i), 0})
			}
			if bits[i] && (i == 63 || !bits[i+1]) {
				want[len(want)-1].End = uint64(i + 1)
			}
		}
		if d := cmp.Diff(want, rs); d != "" {
			t.Fatalf("trial %d: ranges (-bitmap +insertRange):\n%s", trial, d)
		}
	}
}

// TestSACKBlocksOrder checks the receiver's SACK blocks (RFC 2018 section
// 4): the block holding the latest segment first, then the others most
// recent first, merged when they touch, at most four kept, and those below
// RcvNxt forgotten.
func TestSACKBlocksOrder(t *testing.T) {
	var s tcpState
	for _, seg := range []seqRange{{10, 20}, {30, 40}, {50, 60}, {20, 30}} {
		s.noteOOO(seg.Start, seg.End)
	}
	if d := cmp.Diff([]seqRange{{10, 40}, {50, 60}}, s.Blocks); d != "" {
		t.Errorf("after filling 20..30 (-want +got):\n%s", d)
	}
	for _, seg := range []seqRange{{70, 80}, {90, 100}, {110, 120}, {130, 140}} {
		s.noteOOO(seg.Start, seg.End)
	}
	if d := cmp.Diff([]seqRange{{130, 140}, {110, 120}, {90, 100}, {70, 80}}, s.Blocks); d != "" {
		t.Errorf("after six blocks (-want +got):\n%s", d)
	}
	s.RcvNxt = 100
	s.pruneBlocks()
	if d := cmp.Diff([]seqRange{{130, 140}, {110, 120}}, s.Blocks); d != "" {
		t.Errorf("after RcvNxt 100 (-want +got):\n%s", d)
	}
}

// TestPipeAndLoss checks RFC 6675's IsLost boundary and pipe on a hand-made
// scoreboard: segments 0..9 sent, 2, 5, 6 and 8 SACKed.
func TestPipeAndLoss(t *testing.T) {
	seg := func(i uint64) uint64 { return i * MSS }
	s := tcpState{SndUna: 0, SndNxt: seg(10), SndMax: seg(10)}
	for _, b := range []seqRange{{seg(2), seg(3)}, {seg(5), seg(7)}, {seg(8), seg(9)}} {
		s.Sacked = insertRange(s.Sacked, b)
	}
	// Above segment 4 lie 3 SACKed segments (5, 6, 8): 4 and every hole
	// below it are lost; 7 (one SACKed above) and 9 are not.
	if got, want := s.lostBelow(), seg(5); got != want {
		t.Errorf("lostBelow %d, want %d (segment 5)", got/MSS, want/MSS)
	}
	// Not lost and not SACKed: 7 and 9. Nothing retransmitted yet.
	if got, want := s.pipe(), seg(2); got != want {
		t.Errorf("pipe %d segments, want %d", got/MSS, want/MSS)
	}
	// Retransmitted 0 and 1: they are in the network again.
	s.HighRxt = seg(2)
	if got, want := s.pipe(), seg(4); got != want {
		t.Errorf("pipe after retransmitting 0 and 1: %d segments, want %d", got/MSS, want/MSS)
	}
	if x, e, ok := s.firstHole(seg(2), seg(10)); !ok || x != seg(3) || e != seg(5) {
		t.Errorf("first hole from 2: %d..%d (%v), want 3..5", x/MSS, e/MSS, ok)
	}
}
