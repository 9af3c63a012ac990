package vnet

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/vnsnap/vnsnap/core"
	"github.com/vnsnap/vnsnap/core/cut"
)

// Frame log format (see doc.go). All fields are little-endian.
const (
	// LogMagic opens every frame log.
	LogMagic = "VNSNAPFL"
	// LogVersion is the frame log version this package writes and reads.
	LogVersion = 1
	// LogHeaderSize is the size of the frame log's file header.
	LogHeaderSize = 32
	// LogRecordSize is the size of every frame log record.
	LogRecordSize = 64
)

// LogAction is what a frame log record says happened.
type LogAction uint8

// The frame log actions.
const (
	// LogSend: the switch read frame Frame from VM Src (its ingress port) and
	// tagged it with Src's epoch FrameEpoch.
	LogSend LogAction = iota + 1
	// LogDeliver: the frame was written to VM Dst's socket.
	LogDeliver
	// LogDrop: the frame, bound for Dst, was dropped; Reason says why.
	LogDrop
	// LogHold: the frame, bound for Dst, is held until Dst's epoch reaches
	// FrameEpoch (vnsnap-log); a LogDeliver follows when it is released.
	LogHold
	// LogDeliverLog: the frame was written to Dst's socket and recorded as
	// channel state of snapshot DstEpoch (vnsnap-log, white to red).
	LogDeliverLog
	// LogCut: VM Src passed its snapshot point; its port entered epoch
	// FrameEpoch (DstEpoch holds the previous epoch).
	LogCut
	// LogReplay: a frame from an in-transit log was written to Dst at
	// restore. It belongs to the previous run and is not a checker event.
	LogReplay
	// LogMark: the log was flushed; every event of this switch up to this
	// time is in the log. Readers of several logs captured while traffic
	// flows cut them all at the earliest last mark (see ReadLogs).
	LogMark
	numLogActions
)

var logActionNames = [...]string{
	LogSend: "send", LogDeliver: "deliver", LogDrop: "drop", LogHold: "hold",
	LogDeliverLog: "deliver-log", LogCut: "cut", LogReplay: "replay", LogMark: "mark",
}

// String returns the action's name.
func (a LogAction) String() string {
	if a > 0 && a < numLogActions {
		return logActionNames[a]
	}
	return fmt.Sprintf("LogAction(%d)", uint8(a))
}

// NoVM is the Dst of a send record whose destination is not a local port
// (flooded, or sent into a tunnel).
const NoVM core.VMID = -1

// LogEntry is one decoded frame log record.
type LogEntry struct {
	// Time is the host's monotonic time since the log's start.
	Time   time.Duration
	Frame  uint64
	Src    core.VMID // sender (or the VM of a cut)
	Dst    core.VMID // receiver, or NoVM
	Action LogAction
	// FrameEpoch is the frame's colour (for a cut: the new epoch).
	FrameEpoch core.Epoch
	// DstEpoch is the receiver port's epoch when the action was taken (for
	// a send: the epoch of the local destination, or 0; for a cut: the
	// previous epoch).
	DstEpoch core.Epoch
	Reason   cut.DropReason
	Proto    cut.Proto
	TCPFlags uint8
	Size     uint16 // Ethernet frame bytes
	// Copies is, for a send, the number of ports and tunnels the frame was
	// forwarded to (0: it went nowhere).
	Copies  uint16
	Flow    uint32
	RevFlow uint32
	Seq     uint32 // TCP sequence number (32-bit, as on the wire)
	Ack     uint32 // TCP acknowledgement, 0 without the ACK flag
	Len     uint32 // transport payload bytes
}

// LogHeader is the frame log's file header.
type LogHeader struct {
	Version uint16
	Switch  uint16
	// Start is the wall-clock time the log started; record times are
	// monotonic offsets from it.
	Start time.Time
}

func appendLogHeader(b []byte, h LogHeader) []byte {
	b = append(b, LogMagic...)
	b = binary.LittleEndian.AppendUint16(b, h.Version)
	b = binary.LittleEndian.AppendUint16(b, LogRecordSize)
	b = binary.LittleEndian.AppendUint16(b, h.Switch)
	b = binary.LittleEndian.AppendUint16(b, 0)
	b = binary.LittleEndian.AppendUint64(b, uint64(h.Start.UnixNano()))
	return binary.LittleEndian.AppendUint64(b, 0)
}

func putLogEntry(b *[LogRecordSize]byte, e *LogEntry) {
	le := binary.LittleEndian
	le.PutUint64(b[0:], uint64(e.Time))
	le.PutUint64(b[8:], e.Frame)
	le.PutUint32(b[16:], uint32(e.Src))
	le.PutUint32(b[20:], uint32(e.Dst))
	le.PutUint32(b[24:], uint32(e.FrameEpoch))
	le.PutUint32(b[28:], uint32(e.DstEpoch))
	b[32], b[33], b[34], b[35] = byte(e.Action), byte(e.Reason), byte(e.Proto), e.TCPFlags
	le.PutUint16(b[36:], e.Size)
	le.PutUint16(b[38:], e.Copies)
	le.PutUint32(b[40:], e.Flow)
	le.PutUint32(b[44:], e.RevFlow)
	le.PutUint32(b[48:], e.Seq)
	le.PutUint32(b[52:], e.Ack)
	le.PutUint32(b[56:], e.Len)
	le.PutUint32(b[60:], 0)
}

func getLogEntry(b []byte) LogEntry {
	le := binary.LittleEndian
	return LogEntry{
		Time:       time.Duration(le.Uint64(b[0:])),
		Frame:      le.Uint64(b[8:]),
		Src:        core.VMID(int32(le.Uint32(b[16:]))),
		Dst:        core.VMID(int32(le.Uint32(b[20:]))),
		FrameEpoch: core.Epoch(le.Uint32(b[24:])),
		DstEpoch:   core.Epoch(le.Uint32(b[28:])),
		Action:     LogAction(b[32]),
		Reason:     cut.DropReason(b[33]),
		Proto:      cut.Proto(b[34]),
		TCPFlags:   b[35],
		Size:       le.Uint16(b[36:]),
		Copies:     le.Uint16(b[38:]),
		Flow:       le.Uint32(b[40:]),
		RevFlow:    le.Uint32(b[44:]),
		Seq:        le.Uint32(b[48:]),
		Ack:        le.Uint32(b[52:]),
		Len:        le.Uint32(b[56:]),
	}
}

// frameLog is the writing side of a frame log: one ordered stream per
// switch. Every record is stamped and appended under mu, so the file order
// is the order in which the switch took its decisions, and times never go
// backwards in it.
type frameLog struct {
	mu    sync.Mutex
	w     *bufio.Writer
	start time.Time
	err   error // first write error; later records are discarded
	rec   [LogRecordSize]byte
}

func newFrameLog(w io.Writer, sw uint16) (*frameLog, error) {
	l := &frameLog{w: bufio.NewWriterSize(w, 256<<10), start: time.Now()}
	hdr := appendLogHeader(make([]byte, 0, LogHeaderSize), LogHeader{Version: LogVersion, Switch: sw, Start: l.start})
	if _, err := l.w.Write(hdr); err != nil {
		return nil, fmt.Errorf("write frame log header: %w", err)
	}
	return l, nil
}

// add stamps e with the current time and appends it. A nil log discards.
func (l *frameLog) add(e LogEntry) {
	if l == nil {
		return
	}
	l.mu.Lock()
	if l.err == nil {
		e.Time = time.Since(l.start)
		putLogEntry(&l.rec, &e)
		_, l.err = l.w.Write(l.rec[:])
	}
	l.mu.Unlock()
}

// flush writes buffered records out and returns the first write error.
func (l *frameLog) flush() error {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err == nil {
		e := LogEntry{Action: LogMark, Src: NoVM, Dst: NoVM, Time: time.Since(l.start)}
		putLogEntry(&l.rec, &e)
		_, l.err = l.w.Write(l.rec[:])
	}
	if l.err == nil {
		l.err = l.w.Flush()
	}
	if l.err != nil {
		return fmt.Errorf("frame log: %w", l.err)
	}
	return nil
}

// frameEntry fills the frame fields of a record for f.
func frameEntry(a LogAction, f *frame, dst core.VMID, dstEpoch core.Epoch) LogEntry {
	return LogEntry{
		Frame: f.id, Src: f.src, Dst: dst, Action: a,
		FrameEpoch: f.epoch, DstEpoch: dstEpoch,
		Proto: f.meta.proto, TCPFlags: f.meta.flags, Size: uint16(f.n),
		Flow: f.meta.flow, RevFlow: f.meta.rev, Seq: f.meta.seq, Ack: f.meta.ack, Len: f.meta.plen,
	}
}
