package sim

import "math"

// Selective acknowledgements: the receiver's SACK blocks (RFC 2018, kept as
// Linux's tcp_sack_new_ofo_skb keeps them) and the sender's scoreboard, pipe
// and next-segment rules (RFC 6675).

const (
	// maxSackBlocks is how many SACK blocks fit in a segment's options
	// beside the timestamps option (40 bytes of options: 12 for
	// timestamps, 4+8n for n SACK blocks).
	maxSackBlocks = 3
	// keptSackBlocks is how many blocks a receiver remembers (Linux's
	// TCP_NUM_SACKS).
	keptSackBlocks = 4
	// dupThresh is RFC 6675's DupThresh (Linux's default reordering, 3).
	dupThresh = 3
)

// seqRange is the byte range [Start, End) of a stream.
type seqRange struct{ Start, End uint64 }

// sackOptionBytes returns the wire size of n SACK blocks' option (with its
// two NOPs of padding).
func sackOptionBytes(n int) int {
	if n == 0 {
		return 0
	}
	return 4 + 8*n
}

// noteOOO records an out-of-order segment [seq, end) in the receiver's SACK
// blocks: the block it extends (merged with any other it now touches), or
// a new one, moves to the front, so the first block reported is the one
// holding the latest segment (RFC 2018 section 4); the oldest block beyond
// keptSackBlocks is forgotten.
func (s *tcpState) noteOOO(seq, end uint64) {
	cur := seqRange{seq, end}
	rest := s.Blocks[:0:0]
	for _, b := range s.Blocks {
		if b.Start <= cur.End && cur.Start <= b.End {
			cur = seqRange{min(b.Start, cur.Start), max(b.End, cur.End)}
			continue
		}
		rest = append(rest, b)
	}
	if len(rest) >= keptSackBlocks {
		rest = rest[:keptSackBlocks-1]
	}
	s.Blocks = append(append(s.Blocks[:0], cur), rest...)
}

// pruneBlocks forgets the SACK blocks that in-order delivery has covered.
func (s *tcpState) pruneBlocks() {
	out := s.Blocks[:0]
	for _, b := range s.Blocks {
		if b.Start > s.RcvNxt {
			out = append(out, b)
		}
	}
	s.Blocks = out
}

// addSacked merges the SACK blocks of an ACK into the scoreboard, clamped
// to the data outstanding, [SndUna, SndMax).
func (s *tcpState) addSacked(f *Frame) {
	for _, b := range f.Sack[:f.NSack] {
		lo, hi := max(b.Start, s.SndUna), min(b.End, s.SndMax)
		if lo >= hi {
			continue
		}
		s.Sacked = insertRange(s.Sacked, seqRange{lo, hi})
	}
}

// insertRange adds r to a sorted list of disjoint ranges, merging what it
// touches.
func insertRange(rs []seqRange, r seqRange) []seqRange {
	i := 0
	for i < len(rs) && rs[i].End < r.Start {
		i++
	}
	j := i
	for j < len(rs) && rs[j].Start <= r.End {
		r = seqRange{min(r.Start, rs[j].Start), max(r.End, rs[j].End)}
		j++
	}
	if i == j {
		rs = append(rs, seqRange{})
		copy(rs[i+1:], rs[i:])
		rs[i] = r
		return rs
	}
	rs[i] = r
	return append(rs[:i+1], rs[j:]...)
}

// pruneSacked drops the scoreboard's ranges below SndUna.
func (s *tcpState) pruneSacked() {
	i := 0
	for i < len(s.Sacked) && s.Sacked[i].End <= s.SndUna {
		i++
	}
	s.Sacked = s.Sacked[i:]
	if len(s.Sacked) > 0 && s.Sacked[0].Start < s.SndUna {
		s.Sacked[0].Start = s.SndUna
	}
	if len(s.Sacked) == 0 {
		s.Sacked = nil
	}
}

// sackedBytes returns the bytes SACKed at or above seq.
func (s *tcpState) sackedBytes(seq uint64) uint64 {
	var n uint64
	for i := len(s.Sacked) - 1; i >= 0 && s.Sacked[i].End > seq; i-- {
		n += s.Sacked[i].End - max(s.Sacked[i].Start, seq)
	}
	return n
}

// lostBelow returns the boundary of RFC 6675's IsLost: an unSACKed byte
// below it has more than (DupThresh-1)*MSS SACKed bytes above it and is
// presumed lost; one at or above it is not. SndUna means nothing is lost.
func (s *tcpState) lostBelow() uint64 {
	var n uint64
	for i := len(s.Sacked) - 1; i >= 0; i-- {
		n += s.Sacked[i].End - s.Sacked[i].Start
		if n > (dupThresh-1)*MSS {
			return s.Sacked[i].Start
		}
	}
	return s.SndUna
}

// overlap returns the length of [a, b) within [lo, hi).
func overlap(a, b, lo, hi uint64) uint64 {
	a, b = max(a, lo), min(b, hi)
	if a >= b {
		return 0
	}
	return b - a
}

// pipe returns RFC 6675's estimate of the bytes in the network: over the
// data sent, [SndUna, SndNxt), every unSACKed byte not presumed lost, plus
// every unSACKed byte retransmitted in this recovery (below HighRxt).
func (s *tcpState) pipe() uint64 {
	lost := s.lostBelow()
	hole := func(a, b uint64) uint64 {
		return overlap(a, b, lost, s.SndNxt) + overlap(a, b, s.SndUna, s.HighRxt)
	}
	var p uint64
	x := s.SndUna
	for _, r := range s.Sacked {
		if r.Start >= s.SndNxt {
			break
		}
		if r.Start > x {
			p += hole(x, r.Start)
		}
		x = max(x, r.End)
	}
	if x < s.SndNxt {
		p += hole(x, s.SndNxt)
	}
	return p
}

// firstHole returns the first unSACKed byte at or after from, below limit,
// and the end of its hole (the next SACKed range, or limit).
func (s *tcpState) firstHole(from, limit uint64) (uint64, uint64, bool) {
	x := from
	for _, r := range s.Sacked {
		if r.End <= x {
			continue
		}
		if r.Start > x {
			break
		}
		x = r.End
	}
	if x >= limit {
		return 0, 0, false
	}
	end := limit
	for _, r := range s.Sacked {
		if r.Start > x {
			end = min(end, r.Start)
			break
		}
	}
	return x, end, true
}

// skipSacked moves SndNxt past SACKed data: after a timeout the sender
// goes back to SndUna but resends nothing the receiver has SACKed since.
func (s *tcpState) skipSacked() {
	for _, r := range s.Sacked {
		if r.Start <= s.SndNxt && s.SndNxt < r.End {
			s.SndNxt = r.End
		}
	}
}

// nextSeg picks the next segment to send with SACK (RFC 6675's NextSeg):
// (1) the first unSACKed data above HighRxt presumed lost, retransmitted;
// (2) otherwise the data at SndNxt, new or (after a timeout) resent, if the
// receive window allows; (3) otherwise, in recovery, the first unSACKed
// data above HighRxt below the highest SACKed byte. Rules 1 and 3 apply in
// recovery only, and RFC 6675's rescue retransmission (rule 4) is left to
// the RTO. It returns the start and end of the segment and whether it is a
// recovery retransmission (rules 1 and 3).
func (c *Conn) nextSeg() (seq, end uint64, rescue, ok bool) {
	s := &c.st
	for i := range s.Rexmits {
		if r := &s.Rexmits[i]; r.Lost {
			if x, e, ok := s.firstHole(max(r.Start, s.SndUna), r.End); ok {
				n, _ := c.segment(x, e)
				return x, x + n, true, true
			}
		}
	}
	if s.InRecovery {
		from := max(s.HighRxt, s.SndUna)
		if x, e, ok := s.firstHole(from, min(s.lostBelow(), s.SndNxt)); ok {
			n, _ := c.segment(x, e)
			return x, x + n, true, true
		}
	}
	s.skipSacked()
	if s.SndNxt < s.Written && s.SndNxt-s.SndUna < rwnd {
		_, e, _ := s.firstHole(s.SndNxt, s.Written)
		n, _ := c.segment(s.SndNxt, e)
		return s.SndNxt, s.SndNxt + n, false, true
	}
	if s.InRecovery && len(s.Sacked) > 0 {
		from := max(s.HighRxt, s.SndUna)
		if x, e, ok := s.firstHole(from, min(s.Sacked[len(s.Sacked)-1].End, s.SndNxt)); ok {
			n, _ := c.segment(x, e)
			return x, x + n, true, true
		}
	}
	return 0, 0, false, false
}

// sackSend is trySend with SACK: it sends while the pipe is below the
// window, each segment as nextSeg picks it. Without losses it sends exactly
// what trySend sends without SACK.
func (c *Conn) sackSend() {
	s := &c.st
	win := uint64(min(s.Cwnd, rwnd))
	pipe := s.pipe()
	for pipe < win {
		seq, end, rescue, ok := c.nextSeg()
		if !ok {
			break
		}
		n := end - seq
		if rescue {
			s.noteRexmit(seq, end, c.vm.eng.Now())
			s.RTTValid = false
			c.sendSegment(seq, uint32(n), c.genAt(seq), true)
		} else {
			retx := seq < s.SndMax
			c.sendSegment(seq, uint32(n), c.genAt(seq), retx)
			if !retx && !s.RTTValid {
				s.RTTValid, s.RTTSeq, s.RTTStart = true, end, c.vm.eng.Now()
			}
			s.SndNxt = end
			s.SndMax = max(s.SndMax, end)
		}
		pipe += n
		if s.InRecovery {
			s.PrrOut += n
		}
		if !s.TimerArmed {
			c.armTimer(c.rto())
		}
	}
}

// enterSACKRecovery starts RFC 6675 loss recovery with Linux's PRR
// (RFC 6937): ssthresh halves cwnd (Linux's Reno) or the flight (RFC
// 5681), whichever is smaller (an application-limited sender's cwnd can
// outgrow its flight: cwnd validation is not modelled), the first unacknowledged segment
// is retransmitted at once, then PRR sets cwnd on each ACK (prrAck) so the
// sender sends about ssthresh/cwnd of what the receiver reports delivered
// until the pipe falls to ssthresh, then no more than slow start would up
// to ssthresh. The ACK that started recovery (with the sequence and SACKed
// bytes before it, una0 and sacked0) is the first PRR counts.
func (c *Conn) enterSACKRecovery(una0, sacked0 uint64) {
	s := &c.st
	s.Ssthresh = max(min(s.Cwnd, float64(s.SndMax-s.SndUna))/2, 2*MSS)
	s.RecoverFS = max(s.Cwnd, MSS)
	s.PrrDelivered, s.PrrOut = 0, 0
	s.InRecovery, s.Recover = true, s.SndMax
	c.Stats.FastRetransmits++
	_, e, _ := s.firstHole(s.SndUna, s.SndMax)
	n, g := c.segment(s.SndUna, e)
	s.noteRexmit(s.SndUna, s.SndUna+n, c.vm.eng.Now())
	s.RTTValid = false
	s.PrrOut += n
	c.sendSegment(s.SndUna, uint32(n), g, true)
	c.prrAck(una0, sacked0)
	c.sackSend()
}

// prrAck sets cwnd for an ACK in SACK recovery by PRR with Linux's
// slow-start reduction bound (tcp_cwnd_reduction). una0 and sacked0 are
// SndUna and the SACKed bytes before the ACK.
func (c *Conn) prrAck(una0, sacked0 uint64) {
	s := &c.st
	s.checkRexmits()
	delivered := int64(s.SndUna-una0) + int64(s.sackedBytes(0)) - int64(sacked0)
	if delivered > 0 {
		s.PrrDelivered += uint64(delivered)
	}
	pipe := float64(s.pipe())
	var sndcnt float64
	if pipe > s.Ssthresh {
		sndcnt = math.Ceil(float64(s.PrrDelivered)*s.Ssthresh/s.RecoverFS) - float64(s.PrrOut)
	} else {
		limit := max(float64(s.PrrDelivered)-float64(s.PrrOut), float64(max(delivered, 0))) + MSS
		sndcnt = min(s.Ssthresh-pipe, limit)
	}
	s.Cwnd = pipe + max(sndcnt, 0)
}

// rexmit is a retransmission of recovery, [Start, End) sent at At; Lost
// says it is presumed lost and due again.
type rexmit struct {
	Start, End uint64
	At         Time
	Lost       bool
}

// noteRexmit records a recovery retransmission of [seq, end) sent now: a
// lost one sent again moves its record, a new one raises HighRxt.
func (s *tcpState) noteRexmit(seq, end uint64, now Time) {
	for i := range s.Rexmits {
		if r := &s.Rexmits[i]; r.Lost && seq >= r.Start && seq < r.End {
			r.Start, r.End, r.At, r.Lost = seq, end, now, false
			return
		}
	}
	s.HighRxt = max(s.HighRxt, end)
	s.Rexmits = append(s.Rexmits, rexmit{seq, end, now, false})
}

// checkRexmits forgets the retransmissions delivered (acknowledged or
// SACKed) and presumes lost those sent before a segment the receiver has
// since received (Linux's RACK, RFC 8985, for retransmissions, with no
// reordering window and no timer): this network keeps a flow's segments in
// order, so a retransmission overtaken by a later segment was lost.
func (s *tcpState) checkRexmits() {
	out := s.Rexmits[:0]
	for _, r := range s.Rexmits {
		if _, _, missing := s.firstHole(max(r.Start, s.SndUna), r.End); !missing {
			continue
		}
		if r.At < s.RackTS {
			r.Lost = true
		}
		out = append(out, r)
	}
	s.Rexmits = out
}
