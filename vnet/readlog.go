package vnet

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"time"

	"github.com/vnsnap/vnsnap/core"
	"github.com/vnsnap/vnsnap/core/cut"
)

// ReadLogEntries decodes a whole frame log. Errors name the byte offset of
// the bad header field or record.
func ReadLogEntries(r io.Reader) (LogHeader, []LogEntry, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	var hb [LogHeaderSize]byte
	if _, err := io.ReadFull(br, hb[:]); err != nil {
		return LogHeader{}, nil, fmt.Errorf("frame log offset 0: header: %w", noEOF(err))
	}
	le := binary.LittleEndian
	if string(hb[:8]) != LogMagic {
		return LogHeader{}, nil, fmt.Errorf("frame log offset 0: bad magic %q", hb[:8])
	}
	h := LogHeader{Version: le.Uint16(hb[8:]), Switch: le.Uint16(hb[12:]), Start: time.Unix(0, int64(le.Uint64(hb[16:])))}
	if h.Version != LogVersion {
		return h, nil, fmt.Errorf("frame log offset 8: version %d, want %d", h.Version, LogVersion)
	}
	if rs := le.Uint16(hb[10:]); rs != LogRecordSize {
		return h, nil, fmt.Errorf("frame log offset 10: record size %d, want %d", rs, LogRecordSize)
	}
	var out []LogEntry
	var rb [LogRecordSize]byte
	var last time.Duration
	for off := int64(LogHeaderSize); ; off += LogRecordSize {
		n, err := io.ReadFull(br, rb[:])
		if err == io.EOF {
			return h, out, nil
		}
		if err != nil {
			return h, nil, fmt.Errorf("frame log offset %d: record %d truncated after %d bytes: %w", off, len(out), n, noEOF(err))
		}
		e := getLogEntry(rb[:])
		if err := checkEntry(e, last); err != nil {
			return h, nil, fmt.Errorf("frame log offset %d: record %d: %w", off, len(out), err)
		}
		if start := h.Start.UnixNano(); start > 0 && int64(e.Time) > math.MaxInt64-start {
			// Merging orders records by start plus time, which must not wrap.
			return h, nil, fmt.Errorf("frame log offset %d: record %d: time %v past the log's start overflows", off, len(out), e.Time)
		}
		last = e.Time
		out = append(out, e)
	}
}

func checkEntry(e LogEntry, last time.Duration) error {
	switch {
	case e.Action == 0 || e.Action >= numLogActions:
		return fmt.Errorf("unknown action %d", e.Action)
	case e.Time < last:
		return fmt.Errorf("time %v before previous record's %v", e.Time, last)
	case e.Src < NoVM || e.Dst < NoVM:
		return fmt.Errorf("bad vm src %d dst %d", e.Src, e.Dst)
	case e.Action != LogMark && e.Src == NoVM:
		// Every frame has a sender, and a cut is a VM's.
		return fmt.Errorf("%s without a source vm", e.Action)
	case e.Action != LogSend && e.Action != LogCut && e.Action != LogMark && e.Dst == NoVM:
		return fmt.Errorf("%s without a destination vm", e.Action)
	case e.Action == LogDrop && (e.Reason < cut.DropColour || e.Reason > cut.DropLoss):
		return fmt.Errorf("drop reason %d", e.Reason)
	}
	return nil
}

// ReadLog converts one switch's frame log to checker records. All frames it
// delivers must have been sent through the same switch; for a VNE spread over
// several switches use ReadLogs with every switch's log.
func ReadLog(r io.Reader) ([]cut.Record, error) { return ReadLogs(r) }

// ReadLogs merges the frame logs of the switches of a VNE and converts them
// to checker records, in an order the checker can consume:
//
//   - each log's own order is kept, so every VM's frame events stay on the
//     right side of its cut record;
//   - across logs, records are merged by time (the log's wall-clock start
//     plus the record's monotonic offset), except that a frame's receive,
//     drop, hold or log never comes before its send: clocks of different hosts
//     are not comparable, but the only cross-switch order the checker needs is
//     send before receipt of the same frame, which is causal, so the merge
//     enforces it instead of trusting the clocks.
//
// Mapping: a send record becomes one cut.Send per destination VM that has an
// event for the frame (a flooded frame reaching k VMs is k point-to-point
// frames for the checker; when k > 1 their ids are fresh ids with bit 63 set,
// else the switch's frame id). A send with no destination event but copies
// in a tunnel becomes one cut.Send that stays unresolved (lost in the
// network). deliver becomes cut.Receive, deliver-log becomes cut.Log and
// cut.Receive, drop becomes cut.Drop with its reason, cut becomes cut.Cut;
// hold and replay produce nothing. TCP sequence and acknowledgement numbers
// are unwrapped from 32 to 64 bits per flow.
func ReadLogs(rs ...io.Reader) ([]cut.Record, error) {
	streams := make([]logStream, len(rs))
	for i, r := range rs {
		h, es, err := ReadLogEntries(r)
		if err != nil {
			return nil, fmt.Errorf("log %d: %w", i, err)
		}
		streams[i] = logStream{h: h, es: es}
	}
	cutAtHorizon(streams)
	c := newConverter(streams)
	if err := c.scan(); err != nil {
		return nil, err
	}
	return c.merge()
}

// cutAtHorizon drops, when every log has a flush mark, the entries after the
// earliest of the logs' last marks: logs flushed one after another while
// frames flow would otherwise hold deliveries whose sends were written to
// another switch's log after that log was flushed. Up to the horizon every
// log is complete, so the prefix is a consistent trace.
func cutAtHorizon(ss []logStream) {
	if len(ss) < 2 {
		return
	}
	horizon := int64(-1)
	for _, s := range ss {
		last := int64(-1)
		for i := len(s.es) - 1; i >= 0; i-- {
			if s.es[i].Action == LogMark {
				last = s.h.Start.UnixNano() + int64(s.es[i].Time)
				break
			}
		}
		if last < 0 {
			return
		}
		if horizon < 0 || last < horizon {
			horizon = last
		}
	}
	for i := range ss {
		s := &ss[i]
		n := len(s.es)
		for n > 0 && s.h.Start.UnixNano()+int64(s.es[n-1].Time) > horizon {
			n--
		}
		s.es = s.es[:n]
	}
}

type logStream struct {
	h   LogHeader
	es  []LogEntry
	pos int
}

type dstKey struct {
	frame uint64
	vm    core.VMID
}

// sentInfo is the converted transport of a sent frame, for its receipts.
type sentInfo struct {
	seq, ack uint64
	emitted  bool
}

type converter struct {
	ss      []logStream
	sent    map[uint64]bool        // frame has a send record in some log
	dsts    map[uint64][]core.VMID // destinations with an event, in first-seen order
	ids     map[dstKey]uint64      // checker ids of multi-destination frames
	info    map[uint64]*sentInfo
	unwrap  map[uint32]uint64 // per flow: last unwrapped sequence value
	nextID  uint64
	records []cut.Record
}

func newConverter(ss []logStream) *converter {
	return &converter{
		ss: ss, sent: make(map[uint64]bool), dsts: make(map[uint64][]core.VMID),
		ids: make(map[dstKey]uint64), info: make(map[uint64]*sentInfo),
		unwrap: make(map[uint32]uint64), nextID: 1 << 63,
	}
}

func isFrameEvent(a LogAction) bool {
	return a == LogDeliver || a == LogDrop || a == LogHold || a == LogDeliverLog
}

// scan finds every frame's sends and destinations and gives multi-destination
// frames their checker ids.
func (c *converter) scan() error {
	seen := make(map[dstKey]bool) // a set, so that scanning stays linear
	for si, s := range c.ss {
		for i, e := range s.es {
			switch {
			case e.Action == LogSend:
				if c.sent[e.Frame] {
					return fmt.Errorf("log %d offset %d: frame %#x sent twice", si, entryOffset(i), e.Frame)
				}
				c.sent[e.Frame] = true
			case isFrameEvent(e.Action):
				if k := (dstKey{e.Frame, e.Dst}); !seen[k] {
					seen[k] = true
					c.dsts[e.Frame] = append(c.dsts[e.Frame], e.Dst)
				}
			}
		}
	}
	for si, s := range c.ss {
		for i, e := range s.es {
			if isFrameEvent(e.Action) && !c.sent[e.Frame] {
				return fmt.Errorf("log %d offset %d: frame %#x %s for vm %d was sent in no log given (pass every switch's log)",
					si, entryOffset(i), e.Frame, e.Action, e.Dst)
			}
			if e.Action != LogSend || len(c.dsts[e.Frame]) < 2 {
				continue
			}
			for _, vm := range c.dsts[e.Frame] {
				c.ids[dstKey{e.Frame, vm}] = c.nextID
				c.nextID++
			}
		}
	}
	return nil
}

func entryOffset(i int) int64 { return LogHeaderSize + int64(i)*LogRecordSize }

func (c *converter) id(frame uint64, vm core.VMID) uint64 {
	if id, ok := c.ids[dstKey{frame, vm}]; ok {
		return id
	}
	return frame
}

// blocked reports whether e must wait for its frame's send.
func (c *converter) blocked(e LogEntry) bool {
	if !isFrameEvent(e.Action) {
		return false
	}
	in := c.info[e.Frame]
	return in == nil || !in.emitted
}

// merge emits the records of all logs in a causal, time-ordered merge.
func (c *converter) merge() ([]cut.Record, error) {
	for {
		best, bestT := -1, int64(0)
		left := false
		for i := range c.ss {
			s := &c.ss[i]
			if s.pos == len(s.es) {
				continue
			}
			left = true
			e := s.es[s.pos]
			if c.blocked(e) {
				continue
			}
			t := s.h.Start.UnixNano() + int64(e.Time)
			if best < 0 || t < bestT {
				best, bestT = i, t
			}
		}
		if best < 0 {
			if left {
				return nil, c.stuck()
			}
			return c.records, nil
		}
		s := &c.ss[best]
		c.emit(s.es[s.pos])
		s.pos++
	}
}

func (c *converter) stuck() error {
	for i, s := range c.ss {
		if s.pos < len(s.es) {
			e := s.es[s.pos]
			return fmt.Errorf("log %d offset %d: frame %#x %s for vm %d precedes its send in every merge (logs inconsistent)",
				i, entryOffset(s.pos), e.Frame, e.Action, e.Dst)
		}
	}
	panic("vnet: merge stuck with nothing left")
}

// ext extends a 32-bit sequence value to 64 bits, choosing the value
// nearest to the flow's last one.
func (c *converter) ext(flow uint32, v uint32) uint64 {
	ref, ok := c.unwrap[flow]
	if !ok {
		x := 1<<32 + uint64(v)
		c.unwrap[flow] = x
		return x
	}
	x := ref&^0xffffffff | uint64(v)
	switch {
	case x+1<<31 < ref:
		x += 1 << 32
	case x > ref+1<<31:
		x -= 1 << 32
	}
	if x > ref {
		c.unwrap[flow] = x
	}
	return x
}

func (c *converter) emit(e LogEntry) {
	switch e.Action {
	case LogCut:
		c.records = append(c.records, cut.Record{Kind: cut.Cut, VM: e.Src, Epoch: e.FrameEpoch})
	case LogSend:
		in := &sentInfo{emitted: true}
		if e.Proto == cut.TCP {
			in.seq = c.ext(e.Flow, e.Seq)
			if e.TCPFlags&tcpACK != 0 {
				in.ack = c.ext(e.RevFlow, e.Ack)
			}
		}
		c.info[e.Frame] = in
		r := c.transport(e, in)
		r.Kind, r.VM, r.Epoch = cut.Send, e.Src, e.FrameEpoch
		dsts := c.dsts[e.Frame]
		if len(dsts) == 0 && e.Copies > 0 {
			r.Frame = e.Frame // still queued at the end, or lost in a tunnel
			c.records = append(c.records, r)
		}
		for _, vm := range dsts {
			r.Frame = c.id(e.Frame, vm)
			c.records = append(c.records, r)
		}
	case LogDeliver, LogDeliverLog:
		id := c.id(e.Frame, e.Dst)
		if e.Action == LogDeliverLog {
			c.records = append(c.records, cut.Record{Kind: cut.Log, VM: e.Dst, Frame: id})
		}
		r := c.transport(e, c.info[e.Frame])
		r.Kind, r.VM, r.Frame, r.Epoch = cut.Receive, e.Dst, id, e.FrameEpoch
		c.records = append(c.records, r)
	case LogDrop:
		c.records = append(c.records, cut.Record{Kind: cut.Drop, VM: e.Dst, Frame: c.id(e.Frame, e.Dst), Reason: e.Reason})
	case LogHold, LogReplay, LogMark:
	default:
		panic(fmt.Sprintf("vnet: unknown log action %d", e.Action))
	}
}

// transport fills a record's transport fields.
func (c *converter) transport(e LogEntry, in *sentInfo) cut.Record {
	r := cut.Record{Proto: e.Proto}
	if e.Proto == cut.Other {
		return r
	}
	r.Flow, r.Len = e.Flow, e.Len
	if e.Proto == cut.TCP {
		r.Seq, r.Ack, r.RevFlow = in.seq, in.ack, e.RevFlow
	}
	return r
}
