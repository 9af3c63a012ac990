package sim

import (
	"time"

	"github.com/vnsnap/vnsnap/core"
	"github.com/vnsnap/vnsnap/core/cut"
)

// TCP parameters (Linux defaults where they matter here).
const (
	MinRTO     = 200 * time.Millisecond // Linux's TCP_RTO_MIN
	MaxRTO     = 120 * time.Second      // Linux's TCP_RTO_MAX
	InitialRTO = time.Second            // RFC 6298, Linux's TCP_TIMEOUT_INIT
	rwnd       = 4 << 20
	initCwnd   = 10 * MSS // RFC 6928, Linux's TCP_INIT_CWND
	// quickAcks is how many segments a receiver acknowledges at once
	// when a connection starts or wakes from a gap longer than its RTO
	// (Linux's TCP_MAX_QUICKACKS).
	quickAcks = 16
)

// genRun says that the stream's bytes from From on carry content generation
// Gen (until the next run).
type genRun struct {
	From uint64
	Gen  uint32
}

// tcpState is everything of one TCP endpoint that is part of its VM's image.
type tcpState struct {
	// sender
	SndUna, SndNxt, SndMax uint64
	Written                uint64 // bytes the application has written
	Cwnd, Ssthresh         float64
	DupAcks                int
	InRecovery             bool
	Recover                uint64
	SRTT, RTTVar, RTO      Time
	RTTSeq                 uint64
	RTTStart               Time
	RTTValid               bool
	TimerArmed             bool
	TimerAt                Time
	Gens                   []genRun // content generation of written bytes
	// Sacked is the SACK scoreboard: the ranges above SndUna the receiver
	// has SACKed, sorted and disjoint. HighRxt is the end of the last
	// retransmission of this recovery (RFC 6675).
	Sacked  []seqRange
	HighRxt uint64
	// PRR (RFC 6937) in SACK recovery: the bytes delivered and sent
	// since recovery began, and the cwnd it began with.
	PrrDelivered, PrrOut uint64
	RecoverFS            float64
	// Rexmits are this recovery's retransmissions not yet delivered;
	// RackTS is the latest send time of a segment the peer has received
	// (its timestamp echoed).
	Rexmits []rexmit
	RackTS  Time
	// receiver
	RcvNxt    uint64
	OOO       []segment
	Delivered []genRun   // content generation of delivered bytes
	Blocks    []seqRange // SACK blocks to report, most recent first
	// AckedNxt is RcvNxt as of the last segment sent (Linux's rcv_wup);
	// DelAckAt, if not zero, is when the delayed ACK is due; Quick counts
	// the quick ACKs left; LastRecv is when data last arrived.
	AckedNxt uint64
	DelAckAt Time
	Quick    int
	LastRecv Time
	GotData  bool
	TSRecent Time // TSVal of the last data segment received
}

type segment struct {
	Seq uint64
	Len uint32
	Gen uint32
}

func (s *tcpState) clone() tcpState {
	c := *s
	c.Gens = append([]genRun(nil), s.Gens...)
	c.OOO = append([]segment(nil), s.OOO...)
	c.Delivered = append([]genRun(nil), s.Delivered...)
	c.Sacked = append([]seqRange(nil), s.Sacked...)
	c.Blocks = append([]seqRange(nil), s.Blocks...)
	c.Rexmits = append([]rexmit(nil), s.Rexmits...)
	return c
}

// TCPStats counts an endpoint's sender events.
type TCPStats struct {
	Segments, Retransmits, Timeouts, FastRetransmits uint64
	// Acks counts the pure ACKs sent (segments without data).
	Acks       uint64
	MaxBackoff int
	// NeededRetx counts bytes this endpoint received, after a restore, for
	// the first time from a retransmitted segment although its peer had
	// sent them before its snapshot point: data lost with the network's
	// state, that logging would have replayed.
	NeededRetx uint64
}

// Conn is one endpoint of a packet-level TCP connection: a sender for its
// outgoing flow and a receiver for the incoming one.
//
// The receiver acknowledges as Linux does (TCPConfig.DelayedACK): at once
// for out-of-order or duplicate data, data that fills a hole, more than one
// full segment not yet acknowledged, and in quick-ACK mode (the first 16
// ACKs, and after a gap longer than its RTO); otherwise it delays the ACK by
// the timeout, or sends it with data going the other way. With SACK
// (TCPConfig.SACK) every segment carries up to three SACK blocks.
//
// The sender's congestion control is Reno's AIMD with Linux's byte
// counting: slow start from 10 segments (cwnd grows by the bytes acked) and
// congestion avoidance (by MSS per cwnd acked). Loss recovery starts on
// three duplicate ACKs (or, with SACK, more than two segments SACKed above
// the first hole): NewReno without SACK (RFC 6582: one retransmission per
// partial ACK), RFC 6675 with SACK (retransmit every hole presumed lost as
// the pipe allows). The RTO (RFC 6298, 200 ms minimum) doubles per timeout
// up to 120 s; at a timeout the sender goes back to the first
// unacknowledged byte, forgetting the scoreboard (RFC 6675 section 5.1).
type Conn struct {
	vm      *VM
	peer    *Conn
	remote  core.VMID
	flowOut uint32
	flowIn  uint32
	gen     uint32 // content generation the application writes now
	st      tcpState
	backoff int
	timerGn int64
	// timerPending says an engine event for the timer is outstanding, at
	// timerEvAt.
	timerPending bool
	timerEvAt    Time
	// delackGn names the outstanding delayed-ACK event (one at a time).
	delackGn      int64
	delackPending bool
	// restoredSndMax is SndMax in the image this endpoint was restored
	// from (0 if not restored).
	restoredSndMax uint64
	Stats          TCPStats
	// OnDeliver is called with the bytes newly delivered in order.
	OnDeliver func(n uint64)
	// OnAcked is called when acknowledged data frees send buffer.
	OnAcked func()
}

const (
	connEvRTO Kind = iota + 1
	connEvDelAck
)

// NewConnPair connects a and b with a TCP connection whose two directions
// are flows fa (a to b) and fb (b to a).
func NewConnPair(a, b *VM, fa, fb uint32) (*Conn, *Conn) {
	ca := &Conn{vm: a, remote: b.ID, flowOut: fa, flowIn: fb}
	cb := &Conn{vm: b, remote: a.ID, flowOut: fb, flowIn: fa}
	ca.peer, cb.peer = cb, ca
	for _, c := range []*Conn{ca, cb} {
		c.st.Cwnd = initCwnd
		c.st.Ssthresh = 1 << 30
		c.st.RTO = InitialRTO
		c.st.Gens = []genRun{{0, 0}}
	}
	return ca, cb
}

// Write makes n more bytes available to send.
func (c *Conn) Write(n uint64) {
	if n == 0 {
		return
	}
	if last := c.st.Gens[len(c.st.Gens)-1]; last.Gen != c.gen {
		c.st.Gens = append(c.st.Gens, genRun{c.st.Written, c.gen})
	}
	c.st.Written += n
	c.trySend()
}

// Unacked returns the bytes written but not yet acknowledged.
func (c *Conn) Unacked() uint64 { return c.st.Written - c.st.SndUna }

// Written returns the bytes written so far.
func (c *Conn) Written() uint64 { return c.st.Written }

// Received returns the bytes delivered in order so far.
func (c *Conn) Received() uint64 { return c.st.RcvNxt }

// Backoff returns how many consecutive timeouts the sender has taken.
func (c *Conn) Backoff() int { return c.backoff }

// segment returns the length and content generation of the segment that
// starts at off: at most MSS bytes, not past limit, and within one content
// generation.
func (c *Conn) segment(off, limit uint64) (uint64, uint32) {
	n := min(limit-off, MSS)
	for _, r := range c.st.Gens {
		if r.From > off && r.From < off+n {
			n = r.From - off
			break
		}
	}
	return n, c.genAt(off)
}

func (c *Conn) genAt(off uint64) uint32 {
	g := c.st.Gens[0].Gen
	for _, r := range c.st.Gens {
		if r.From > off {
			break
		}
		g = r.Gen
	}
	return g
}

func (c *Conn) sack() bool { return c.vm.net.cfg.TCP.SACK }

func (c *Conn) trySend() {
	if c.vm.paused {
		return
	}
	if c.sack() {
		c.sackSend()
		return
	}
	s := &c.st
	for s.SndNxt < s.Written {
		flight := s.SndNxt - s.SndUna
		win := uint64(s.Cwnd)
		if win > rwnd {
			win = rwnd
		}
		if flight >= win {
			break
		}
		n, g := c.segment(s.SndNxt, s.Written)
		retx := s.SndNxt < s.SndMax
		c.sendSegment(s.SndNxt, uint32(n), g, retx)
		if !retx && !s.RTTValid {
			s.RTTValid, s.RTTSeq, s.RTTStart = true, s.SndNxt+n, c.vm.eng.Now()
		}
		s.SndNxt += n
		if s.SndNxt > s.SndMax {
			s.SndMax = s.SndNxt
		}
		if !s.TimerArmed {
			c.armTimer(c.rto())
		}
	}
}

func (c *Conn) event(kind string) {
	if h := c.vm.net.onTCP; h != nil {
		h(TCPEvent{At: c.vm.eng.Now(), Flow: c.flowOut, Kind: kind, Backoff: c.backoff, CwndBytes: c.st.Cwnd})
	}
}

func (c *Conn) sendSegment(seq uint64, n uint32, gen uint32, retx bool) {
	c.Stats.Segments++
	kind := "send"
	if retx {
		c.Stats.Retransmits++
		kind = "retx"
	}
	c.event(kind)
	f := &Frame{
		Dst: c.remote, Size: int(n) + tcpHeader, Proto: cut.TCP, Flow: c.flowOut, RevFlow: c.flowIn,
		Seq: seq, Len: n, Ack: c.st.RcvNxt, Gen: gen, Retx: retx, To: c.peer,
	}
	c.ackSent(f)
	c.vm.Send(f)
}

// sendAck sends a pure ACK now.
func (c *Conn) sendAck() {
	c.Stats.Acks++
	f := &Frame{
		Dst: c.remote, Size: tcpHeader, Proto: cut.TCP, Flow: c.flowOut, RevFlow: c.flowIn,
		Seq: c.st.SndNxt, Ack: c.st.RcvNxt, To: c.peer,
	}
	c.ackSent(f)
	c.vm.Send(f)
}

// ackSent fills in a segment's SACK blocks and notes that it acknowledges
// everything received: a delayed ACK due is no longer, and a quick ACK is
// used up if one was due (Linux's tcp_event_ack_sent).
func (c *Conn) ackSent(f *Frame) {
	s := &c.st
	f.TSVal, f.TSEcr = c.vm.eng.Now(), s.TSRecent
	if c.sack() {
		f.NSack = uint8(copy(f.Sack[:], s.Blocks))
		f.Size += sackOptionBytes(int(f.NSack))
	}
	if s.Quick > 0 && (s.RcvNxt != s.AckedNxt || s.DelAckAt != 0) {
		s.Quick--
	}
	s.AckedNxt = s.RcvNxt
	s.DelAckAt = 0
}

func (c *Conn) rto() Time {
	r := c.st.RTO << c.backoff
	if r > MaxRTO || r <= 0 {
		r = MaxRTO
	}
	return r
}

// armTimer sets the retransmission deadline d from now. At most one engine
// event per endpoint is outstanding: when it fires early (the deadline moved
// later meanwhile) it re-schedules itself, so re-arming on every ACK costs
// no heap growth.
func (c *Conn) armTimer(d Time) {
	now := c.vm.eng.Now()
	c.st.TimerArmed = true
	c.st.TimerAt = now + d
	if !c.timerPending || c.timerEvAt > c.st.TimerAt {
		c.scheduleTimer(c.st.TimerAt)
	}
}

func (c *Conn) scheduleTimer(at Time) {
	c.timerGn++
	c.timerPending = true
	c.timerEvAt = at
	c.vm.After(at-c.vm.eng.Now(), c, connEvRTO, c.timerGn)
}

func (c *Conn) stopTimer() {
	c.st.TimerArmed = false
}

// Handle fires the retransmission or the delayed-ACK timer.
func (c *Conn) Handle(kind Kind, gen int64) {
	if kind == connEvDelAck {
		c.fireDelAck(gen)
		return
	}
	if kind != connEvRTO || gen != c.timerGn {
		return
	}
	c.timerPending = false
	s := &c.st
	if !s.TimerArmed {
		return
	}
	if now := c.vm.eng.Now(); now < s.TimerAt {
		c.scheduleTimer(s.TimerAt)
		return
	}
	s.TimerArmed = false
	if s.SndUna >= s.SndMax {
		return
	}
	c.Stats.Timeouts++
	flight := float64(s.SndMax - s.SndUna)
	s.Ssthresh = max(flight/2, 2*MSS)
	s.Cwnd = MSS
	s.SndNxt = s.SndUna
	s.DupAcks, s.InRecovery, s.RTTValid = 0, false, false
	s.Sacked, s.HighRxt, s.Rexmits = nil, 0, nil
	if c.backoff < 16 {
		c.backoff++
	}
	if c.backoff > c.Stats.MaxBackoff {
		c.Stats.MaxBackoff = c.backoff
	}
	c.event("timeout")
	c.armTimer(c.rto())
	c.trySend()
}

// Input processes a segment delivered to this endpoint.
func (c *Conn) Input(f *Frame) {
	c.processAck(f)
	if f.Len > 0 {
		c.acknowledge(c.receiveData(f))
	}
}

func (c *Conn) processAck(f *Frame) {
	s := &c.st
	ack := f.Ack
	una0, sacked0 := s.SndUna, uint64(0)
	s.RackTS = max(s.RackTS, f.TSEcr)
	if c.sack() {
		sacked0 = s.sackedBytes(0)
		if f.NSack > 0 {
			s.addSacked(f)
		}
	}
	switch {
	case ack > s.SndUna && ack <= s.SndMax:
		now := c.vm.eng.Now()
		if s.RTTValid && ack >= s.RTTSeq {
			c.sampleRTT(now - s.RTTStart)
			s.RTTValid = false
		}
		acked := float64(ack - s.SndUna)
		defer c.event("ack")
		s.SndUna = ack
		if s.SndNxt < s.SndUna {
			s.SndNxt = s.SndUna
		}
		s.pruneSacked()
		c.backoff = 0
		switch {
		case s.InRecovery && ack >= s.Recover:
			s.InRecovery = false
			s.Cwnd = s.Ssthresh
			s.HighRxt, s.Rexmits = 0, nil
		case s.InRecovery && c.sack():
			// RFC 6675: a partial ACK only moves HighRxt; PRR sets
			// cwnd, sackSend below fills the pipe.
			s.HighRxt = max(s.HighRxt, s.SndUna)
			c.prrAck(una0, sacked0)
		case s.InRecovery:
			// NewReno partial ACK: retransmit the next hole.
			c.retransmitHead()
		case s.Cwnd < s.Ssthresh:
			// Linux's tcp_slow_start: grow by the bytes acked up to
			// ssthresh, the rest by congestion avoidance.
			ss := min(acked, s.Ssthresh-s.Cwnd)
			s.Cwnd += ss
			s.Cwnd += MSS * (acked - ss) / s.Cwnd
		default:
			// Linux's tcp_cong_avoid_ai: one MSS per cwnd of bytes acked.
			s.Cwnd += MSS * acked / s.Cwnd
		}
		s.DupAcks = 0
		if s.SndUna >= s.SndMax {
			c.stopTimer()
		} else {
			c.armTimer(c.rto())
		}
		if c.OnAcked != nil {
			c.OnAcked()
		}
		c.trySend()
	case ack == s.SndUna && f.Len == 0 && s.SndMax > s.SndUna:
		s.DupAcks++
		switch {
		case c.sack() && !s.InRecovery && (s.DupAcks >= dupThresh || s.lostBelow() > s.SndUna):
			c.enterSACKRecovery(una0, sacked0)
		case c.sack():
			if s.InRecovery {
				c.prrAck(una0, sacked0)
			}
			c.trySend()
		case s.DupAcks == 3 && !s.InRecovery:
			s.Ssthresh = max(float64(s.SndMax-s.SndUna)/2, 2*MSS)
			s.Cwnd = s.Ssthresh + 3*MSS
			s.InRecovery, s.Recover = true, s.SndMax
			c.Stats.FastRetransmits++
			c.retransmitHead()
		case s.DupAcks > 3:
			s.Cwnd += MSS
			c.trySend()
		}
	}
}

func (c *Conn) retransmitHead() {
	s := &c.st
	if s.SndMax <= s.SndUna {
		return
	}
	n, g := c.segment(s.SndUna, s.SndMax)
	s.RTTValid = false
	c.sendSegment(s.SndUna, uint32(n), g, true)
}

func (c *Conn) sampleRTT(r Time) {
	s := &c.st
	if s.SRTT == 0 {
		s.SRTT, s.RTTVar = r, r/2
	} else {
		d := s.SRTT - r
		if d < 0 {
			d = -d
		}
		s.RTTVar = (3*s.RTTVar + d) / 4
		s.SRTT = (7*s.SRTT + r) / 8
	}
	s.RTO = max(s.SRTT+4*s.RTTVar, MinRTO)
	if s.RTO > MaxRTO {
		s.RTO = MaxRTO
	}
}

// receiveData takes a data segment in. It returns whether the ACK must go
// at once: for a duplicate, out-of-order data, or data that fills a hole.
func (c *Conn) receiveData(f *Frame) (now bool) {
	s := &c.st
	end := f.Seq + uint64(f.Len)
	c.noteData()
	s.TSRecent = f.TSVal
	if end <= s.RcvNxt {
		// A retransmission of data already here: Linux forces an
		// immediate ACK and quick-ACK mode (tcp_enter_quickack_mode).
		s.Quick = max(s.Quick, quickAcks)
		return true
	}
	if f.Seq > s.RcvNxt {
		c.insertOOO(segment{f.Seq, f.Len, f.Gen})
		if c.sack() {
			s.noteOOO(f.Seq, end)
		}
		return true
	}
	filled := len(s.OOO) > 0
	before := s.RcvNxt
	c.deliver(s.RcvNxt, end, f.Gen)
	if f.Retx {
		if limit := min(end, c.peer.restoredSndMax); limit > before {
			c.Stats.NeededRetx += limit - before
		}
	}
	for len(s.OOO) > 0 && s.OOO[0].Seq <= s.RcvNxt {
		o := s.OOO[0]
		s.OOO = s.OOO[1:]
		if e := o.Seq + uint64(o.Len); e > s.RcvNxt {
			c.deliver(s.RcvNxt, e, o.Gen)
		}
	}
	if filled {
		s.pruneBlocks()
	}
	c.vm.net.addGoodput(s.RcvNxt - before)
	if c.OnDeliver != nil {
		c.OnDeliver(s.RcvNxt - before)
	}
	return filled
}

func (c *Conn) deliver(from, to uint64, gen uint32) {
	s := &c.st
	if n := len(s.Delivered); n == 0 || s.Delivered[n-1].Gen != gen {
		s.Delivered = append(s.Delivered, genRun{from, gen})
	}
	s.RcvNxt = to
}

func (c *Conn) insertOOO(g segment) {
	s := &c.st
	i := 0
	for i < len(s.OOO) && s.OOO[i].Seq < g.Seq {
		i++
	}
	if i < len(s.OOO) && s.OOO[i].Seq == g.Seq && s.OOO[i].Len >= g.Len {
		return
	}
	s.OOO = append(s.OOO, segment{})
	copy(s.OOO[i+1:], s.OOO[i:])
	s.OOO[i] = g
}

// snapshot returns the endpoint's state as its VM's image holds it.
func (c *Conn) snapshot() tcpState { return c.st.clone() }

// restore loads an image's state into a fresh endpoint and re-arms its
// retransmission timer with the time it had left at the snapshot point
// (the guest's clock does not see the time between snapshot and restore).
func (c *Conn) restore(st tcpState, point Time, gen uint32) {
	c.st = st.clone()
	c.gen = gen
	c.restoredSndMax = st.SndMax
	if c.st.TimerArmed {
		left := c.st.TimerAt - point
		if left < 0 {
			left = 0
		}
		c.armTimer(left)
	}
	c.st.RTTValid = false
	// The guest's clock does not see the time between its snapshot point
	// and the restore: its receive timestamps and delayed ACK move along.
	now := c.vm.eng.Now()
	if c.st.GotData {
		c.st.LastRecv = now - (point - c.st.LastRecv)
	}
	if c.st.DelAckAt != 0 {
		c.st.DelAckAt = now + max(c.st.DelAckAt-point, 0)
		c.scheduleDelAck()
	}
}

// VerifyStream checks the in-order stream received by c against what its
// peer wrote: every byte delivered once, in order, with the content
// generation the peer's history says. It returns "" if intact, else a
// description of the first problem.
func VerifyStream(sender, receiver *Conn) string {
	s, r := &sender.st, &receiver.st
	if r.RcvNxt != s.Written {
		return sprintf("received %d bytes, sender wrote %d", r.RcvNxt, s.Written)
	}
	// Compare the generation runs over [0, Written), run boundary by run
	// boundary.
	for off := uint64(0); off < s.Written; {
		gs, gr := sender.genAt(off), receiver.deliveredGenAt(off)
		if gs != gr {
			return sprintf("byte %d: content generation %d received, %d written", off, gr, gs)
		}
		next := s.Written
		for _, runs := range [][]genRun{s.Gens, r.Delivered} {
			for _, run := range runs {
				if run.From > off {
					next = min(next, run.From)
					break
				}
			}
		}
		off = next
	}
	return ""
}

func (c *Conn) deliveredGenAt(off uint64) uint32 {
	var g uint32
	for _, r := range c.st.Delivered {
		if r.From > off {
			break
		}
		g = r.Gen
	}
	return g
}
