package sim

// Delayed ACKs, as Linux's receiver sends them (net/ipv4/tcp_input.c:
// __tcp_ack_snd_check, tcp_event_data_recv; tcp_output.c:
// tcp_send_delayed_ack). In a LAN, where the smoothed RTT is below 40 ms,
// Linux's delayed-ACK timeout is TCP_ATO_MIN, 40 ms: tcp_send_delayed_ack
// caps the adaptive ATO at max(SRTT, 40 ms). The model keeps the timeout
// fixed at TCPConfig.DelayedACK and does not model the interactive
// (pingpong) mode beyond piggybacking ACKs on data.

// delack returns the delayed-ACK timeout, 0 if ACKs are not delayed.
func (c *Conn) delack() Time { return c.vm.net.cfg.TCP.DelayedACK }

// noteData notes that data arrived: the first data of a connection, or data
// after a gap longer than the RTO, puts the receiver in quick-ACK mode
// (tcp_event_data_recv's tcp_incr_quickack; the count is min(16,
// rcv_wnd/(2*MSS)), 16 for any window this model has).
func (c *Conn) noteData() {
	s := &c.st
	now := c.vm.eng.Now()
	if !s.GotData || now-s.LastRecv > c.rto() {
		s.Quick = max(s.Quick, quickAcks)
	}
	s.GotData, s.LastRecv = true, now
}

// acknowledge sends or schedules the ACK for data just received: at once if
// now, in quick-ACK mode, or with more than one full segment unacknowledged
// (__tcp_ack_snd_check); otherwise after the delayed-ACK timeout, unless
// data going back carries it first.
func (c *Conn) acknowledge(now bool) {
	s := &c.st
	if now || c.delack() == 0 || s.Quick > 0 || s.RcvNxt-s.AckedNxt > MSS {
		c.sendAck()
		return
	}
	if s.DelAckAt == 0 {
		s.DelAckAt = c.vm.eng.Now() + c.delack()
		c.scheduleDelAck()
	}
}

// scheduleDelAck puts the delayed-ACK timer's event on the engine, as a
// timer of the VM (a paused VM's fires at resume). One event is outstanding
// at a time; an ACK sent meanwhile leaves it to find nothing due.
func (c *Conn) scheduleDelAck() {
	if c.delackPending {
		return
	}
	c.delackGn++
	c.delackPending = true
	c.vm.After(c.st.DelAckAt-c.vm.eng.Now(), c, connEvDelAck, c.delackGn)
}

// fireDelAck sends the delayed ACK if one is still due, or re-schedules the
// event for a later deadline set after it was scheduled.
func (c *Conn) fireDelAck(gen int64) {
	if gen != c.delackGn {
		return
	}
	c.delackPending = false
	s := &c.st
	switch now := c.vm.eng.Now(); {
	case s.DelAckAt == 0:
	case now < s.DelAckAt:
		c.scheduleDelAck()
	default:
		c.sendAck()
	}
}
