package vnet

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"sync"

	"github.com/vnsnap/vnsnap/core"
)

// In-transit log format (see doc.go). All fields are big-endian.
const (
	// InTransitMagic opens every in-transit log.
	InTransitMagic = "VNSNAPCH"
	// InTransitVersion is the in-transit log version.
	InTransitVersion = 1
	inTransitHeader  = 16
	inTransitRecord  = 28
)

// LoggedFrame is a frame recorded as channel state: a pre-snapshot frame
// delivered to a post-snapshot VM under vnsnap-log. Replaying it into the
// restored VM gives back what the VM's image is missing.
type LoggedFrame struct {
	// VM is the receiver.
	VM core.VMID
	// Epoch is the receiver's epoch when the frame arrived: the snapshot the
	// frame belongs to.
	Epoch core.Epoch
	// Src and FrameEpoch are the sender and the frame's colour.
	Src        core.VMID
	FrameEpoch core.Epoch
	// Frame is the frame id.
	Frame uint64
	// Data is the Ethernet frame.
	Data []byte
}

// inTransit holds the logged frames by snapshot epoch, in arrival order.
type inTransit struct {
	mu     sync.Mutex
	frames map[core.Epoch][]LoggedFrame
	bytes  int64
	max    int64
}

// add copies f into the log of snapshot ep for vm; false when the log is
// full.
func (t *inTransit) add(vm core.VMID, ep core.Epoch, f *frame) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.bytes+int64(f.n) > t.max {
		return false
	}
	if t.frames == nil {
		t.frames = make(map[core.Epoch][]LoggedFrame)
	}
	t.frames[ep] = append(t.frames[ep], LoggedFrame{
		VM: vm, Epoch: ep, Src: f.src, FrameEpoch: f.epoch, Frame: f.id,
		Data: slices.Clone(f.data()),
	})
	t.bytes += int64(f.n)
	return true
}

func (t *inTransit) size() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.bytes
}

// InTransit returns the frames recorded for snapshot e, grouped by receiving
// VM in ascending order and in arrival order within a VM. The Data slices are
// shared with the switch and must not be modified.
func (s *Switch) InTransit(e core.Epoch) []LoggedFrame {
	s.transit.mu.Lock()
	out := slices.Clone(s.transit.frames[e])
	s.transit.mu.Unlock()
	sort.SliceStable(out, func(i, j int) bool { return out[i].VM < out[j].VM })
	return out
}

// ForgetInTransit discards the frames recorded for snapshot e (its image is
// saved, or abandoned).
func (s *Switch) ForgetInTransit(e core.Epoch) {
	s.transit.mu.Lock()
	defer s.transit.mu.Unlock()
	for _, f := range s.transit.frames[e] {
		s.transit.bytes -= int64(len(f.Data))
	}
	delete(s.transit.frames, e)
}

// WriteInTransit writes the frames recorded for snapshot e to w in the
// in-transit log format and returns how many it wrote.
func (s *Switch) WriteInTransit(w io.Writer, e core.Epoch) (int, error) {
	fs := s.InTransit(e)
	if err := WriteInTransit(w, fs); err != nil {
		return 0, err
	}
	return len(fs), nil
}

// WriteInTransit writes frames to w in the in-transit log format.
func WriteInTransit(w io.Writer, frames []LoggedFrame) error {
	bw := bufio.NewWriter(w)
	hdr := append([]byte(InTransitMagic), 0, InTransitVersion, 0, 0)
	hdr = binary.BigEndian.AppendUint32(hdr, uint32(len(frames)))
	bw.Write(hdr)
	var rec [inTransitRecord]byte
	for _, f := range frames {
		binary.BigEndian.PutUint32(rec[0:], uint32(f.VM))
		binary.BigEndian.PutUint32(rec[4:], uint32(f.Epoch))
		binary.BigEndian.PutUint32(rec[8:], uint32(f.Src))
		binary.BigEndian.PutUint32(rec[12:], uint32(f.FrameEpoch))
		binary.BigEndian.PutUint64(rec[16:], f.Frame)
		binary.BigEndian.PutUint32(rec[24:], uint32(len(f.Data)))
		bw.Write(rec[:])
		bw.Write(f.Data)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write in-transit log: %w", err)
	}
	return nil
}

// ReadInTransit reads an in-transit log written by WriteInTransit. The log
// is untrusted (it comes from a snapshot store or over the control
// protocol): memory grows only with the bytes actually read, never with the
// counts the log announces. Errors name the byte offset of the bad field.
func ReadInTransit(r io.Reader) ([]LoggedFrame, error) {
	br := bufio.NewReader(r)
	var hdr [inTransitHeader]byte
	if _, err := io.ReadFull(br, hdr[:]); err != nil {
		return nil, fmt.Errorf("in-transit log offset 0: header: %w", noEOF(err))
	}
	if string(hdr[:8]) != InTransitMagic {
		return nil, fmt.Errorf("in-transit log offset 0: bad magic %q", hdr[:8])
	}
	if v := binary.BigEndian.Uint16(hdr[8:]); v != InTransitVersion {
		return nil, fmt.Errorf("in-transit log offset 8: version %d, want %d", v, InTransitVersion)
	}
	n := binary.BigEndian.Uint32(hdr[12:])
	off := int64(inTransitHeader)
	// The count is untrusted: allocate as records arrive, not up front.
	out := make([]LoggedFrame, 0, min(n, 256))
	var rec [inTransitRecord]byte
	for i := uint32(0); i < n; i++ {
		if _, err := io.ReadFull(br, rec[:]); err != nil {
			return nil, fmt.Errorf("in-transit log offset %d: record %d of %d: %w", off, i, n, noEOF(err))
		}
		l := binary.BigEndian.Uint32(rec[24:])
		if l < MinFrame || l > MaxFrame {
			return nil, fmt.Errorf("in-transit log offset %d: frame length %d out of [%d,%d]", off+24, l, MinFrame, MaxFrame)
		}
		vm, src := core.VMID(int32(binary.BigEndian.Uint32(rec[0:]))), core.VMID(int32(binary.BigEndian.Uint32(rec[8:])))
		if vm < 0 || src < 0 {
			return nil, fmt.Errorf("in-transit log offset %d: record %d: vm %d src %d, want ids >= 0", off, i, vm, src)
		}
		f := LoggedFrame{
			VM:         vm,
			Epoch:      core.Epoch(binary.BigEndian.Uint32(rec[4:])),
			Src:        src,
			FrameEpoch: core.Epoch(binary.BigEndian.Uint32(rec[12:])),
			Frame:      binary.BigEndian.Uint64(rec[16:]),
			Data:       make([]byte, l),
		}
		if _, err := io.ReadFull(br, f.Data); err != nil {
			return nil, fmt.Errorf("in-transit log offset %d: frame data: %w", off+inTransitRecord, noEOF(err))
		}
		off += inTransitRecord + int64(l)
		out = append(out, f)
	}
	return out, nil
}

func noEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// Replay queues frames from an in-transit log for delivery to their VMs'
// ports on this switch, ahead of any other frame, bypassing the colour rule;
// frames for VMs without a port here are skipped. It returns how many frames
// it queued. Call it at restore, before or right after the VMs resume: a
// paused VM's NIC does not read, so frames written before resume wait in the
// socket and reach the guest as it resumes. Frames for a port with no QEMU
// connected wait for the connection. WaitReplayed tells when they are
// written.
func (s *Switch) Replay(frames []LoggedFrame) (int, error) {
	if s.isClosed() {
		return 0, ErrClosed
	}
	for _, f := range frames {
		if len(f.Data) < MinFrame || len(f.Data) > MaxFrame {
			return 0, fmt.Errorf("vnet: replay frame %#x for vm %d: length %d out of [%d,%d]", f.Frame, f.VM, len(f.Data), MinFrame, MaxFrame)
		}
	}
	n := 0
	for _, lf := range frames {
		p, err := s.port(lf.VM)
		if err != nil {
			continue
		}
		f := s.pool.get(len(lf.Data))
		copy(f.data(), lf.Data)
		f.id, f.src, f.epoch, f.replay = lf.Frame, lf.Src, lf.FrameEpoch, true
		f.meta = parseFlow(f.data())
		f.putHeader()
		p.mu.Lock()
		p.replay = append(p.replay, f)
		p.mu.Unlock()
		p.replayLeft.Add(1)
		p.c.replayed.Add(1)
		p.kickWriter()
		n++
	}
	return n, nil
}

// WaitReplayed waits until every frame Replay queued for vm has been written
// to its socket.
func (s *Switch) WaitReplayed(ctx context.Context, vm core.VMID) error {
	p, err := s.port(vm)
	if err != nil {
		return err
	}
	return poll(ctx, func() bool { return p.replayLeft.Load() <= 0 })
}
