package vnet

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/vnsnap/vnsnap/core"
	"github.com/vnsnap/vnsnap/core/cut"
)

// Tunnel header layout (see doc.go). All fields are big-endian.
const (
	// HeaderLen is the size of the tunnel header that precedes every frame
	// in a tunnel datagram.
	HeaderLen = 24
	// HeaderMagic is the first byte of every tunnel datagram ('V').
	HeaderMagic = 0x56
	// HeaderVersion is the tunnel header version this package speaks.
	HeaderVersion = 1
	// headerTypeFrame is the only datagram type: an Ethernet frame.
	headerTypeFrame = 0

	// MaxFrame is the largest Ethernet frame the switch carries: a tunnel
	// datagram (header and frame) must fit one IPv4 UDP payload.
	MaxFrame = 65507 - HeaderLen
	// MinFrame is the smallest frame accepted: an Ethernet header.
	MinFrame = 14

	smallFrame = 2048 // size class covering 1518-byte frames with a VLAN tag
)

// Header is the tunnel header carried in front of every frame sent between
// switches.
type Header struct {
	Flags uint8
	// Epoch is the sending VM's epoch when the frame left it: the frame's
	// colour.
	Epoch core.Epoch
	// Frame is the frame id, unique per switch (the switch id is in bits
	// 48..62).
	Frame uint64
	// Src is the sending VM.
	Src core.VMID
	// Len is the length of the Ethernet frame that follows the header.
	Len uint32
}

// ErrBadHeader is wrapped by every error ParseHeader returns.
var ErrBadHeader = errors.New("vnet: bad tunnel header")

// AppendHeader appends h's wire form to b.
func AppendHeader(b []byte, h Header) []byte {
	b = append(b, HeaderMagic, HeaderVersion, 0, h.Flags)
	b = binary.BigEndian.AppendUint32(b, uint32(h.Epoch))
	b = binary.BigEndian.AppendUint64(b, h.Frame)
	b = binary.BigEndian.AppendUint32(b, uint32(h.Src))
	return binary.BigEndian.AppendUint32(b, h.Len)
}

// ParseHeader decodes the header at the start of datagram d and checks
// everything a receiver relies on: magic, version, type (a frame), a source
// VM id that is not negative, a frame id within the switch-id layout (bit 63
// clear), and a frame length that matches the rest of d and lies in
// [MinFrame, MaxFrame]. d comes from the network and is untrusted.
func ParseHeader(d []byte) (Header, error) {
	if len(d) < HeaderLen {
		return Header{}, fmt.Errorf("%w: %d bytes, want at least %d", ErrBadHeader, len(d), HeaderLen)
	}
	if d[0] != HeaderMagic || d[1] != HeaderVersion {
		return Header{}, fmt.Errorf("%w: magic %#x version %d, want %#x version %d", ErrBadHeader, d[0], d[1], HeaderMagic, HeaderVersion)
	}
	if d[2] != headerTypeFrame {
		return Header{}, fmt.Errorf("%w: type %d, want %d (frame)", ErrBadHeader, d[2], headerTypeFrame)
	}
	h := Header{
		Flags: d[3],
		Epoch: core.Epoch(binary.BigEndian.Uint32(d[4:])),
		Frame: binary.BigEndian.Uint64(d[8:]),
		Src:   core.VMID(int32(binary.BigEndian.Uint32(d[16:]))),
		Len:   binary.BigEndian.Uint32(d[20:]),
	}
	switch {
	case h.Src < 0:
		return Header{}, fmt.Errorf("%w: source vm %d", ErrBadHeader, h.Src)
	case h.Frame>>63 != 0:
		return Header{}, fmt.Errorf("%w: frame id %#x has bit 63 set", ErrBadHeader, h.Frame)
	case uint64(h.Len) != uint64(len(d)-HeaderLen):
		return Header{}, fmt.Errorf("%w: frame length %d in a %d-byte datagram", ErrBadHeader, h.Len, len(d))
	case h.Len < MinFrame || h.Len > MaxFrame:
		return Header{}, fmt.Errorf("%w: frame length %d out of [%d,%d]", ErrBadHeader, h.Len, MinFrame, MaxFrame)
	}
	return h, nil
}

// frame is a pooled Ethernet frame with headroom for the tunnel header. The
// buffer is laid out so that both wire forms are slices of it: b[:HeaderLen+n]
// is a tunnel datagram and b[HeaderLen-4:HeaderLen+n] (the header's length
// field followed by the frame) is a stream record for QEMU. The header is
// written once, by the goroutine that read the frame, before the frame is
// shared; afterwards the buffer is read-only until the last reference is
// released.
type frame struct {
	b      []byte
	n      int
	refs   atomic.Int32
	id     uint64
	src    core.VMID
	epoch  core.Epoch
	meta   flowMeta
	replay bool
	pool   *framePool
}

func (f *frame) data() []byte   { return f.b[HeaderLen : HeaderLen+f.n] }
func (f *frame) wire() []byte   { return f.b[:HeaderLen+f.n] }
func (f *frame) stream() []byte { return f.b[HeaderLen-4 : HeaderLen+f.n] }

// putHeader writes the tunnel header (and so the stream length prefix).
func (f *frame) putHeader() {
	AppendHeader(f.b[:0], Header{Epoch: f.epoch, Frame: f.id, Src: f.src, Len: uint32(f.n)})
}

// release drops one reference and returns the frame to its pool after the
// last one.
func (f *frame) release() {
	switch r := f.refs.Add(-1); {
	case r == 0:
		f.pool.put(f)
	case r < 0:
		panic(fmt.Sprintf("vnet: frame %#x released too often", f.id))
	}
}

// framePool recycles frames in two size classes so that steady-state
// forwarding allocates nothing.
type framePool struct {
	small, large sync.Pool
}

func newFramePool() *framePool {
	p := &framePool{}
	p.small.New = func() any { return &frame{b: make([]byte, HeaderLen+smallFrame), pool: p} }
	p.large.New = func() any { return &frame{b: make([]byte, HeaderLen+MaxFrame), pool: p} }
	return p
}

// get returns a frame of length n with one reference.
func (p *framePool) get(n int) *frame {
	var f *frame
	if n <= smallFrame {
		f = p.small.Get().(*frame)
	} else {
		f = p.large.Get().(*frame)
	}
	f.n = n
	f.refs.Store(1)
	f.id, f.src, f.epoch, f.meta, f.replay = 0, 0, 0, flowMeta{}, false
	return f
}

func (p *framePool) put(f *frame) {
	if len(f.b) == HeaderLen+smallFrame {
		p.small.Put(f)
	} else {
		p.large.Put(f)
	}
}

// flowMeta is what the frame log records about a frame's transport, so that
// the checker can tell whether TCP recovers an in-transit frame.
type flowMeta struct {
	proto     cut.Proto
	flags     uint8 // TCP flags
	flow, rev uint32
	seq, ack  uint32
	plen      uint32 // transport payload bytes
}

// TCP flag bits recorded in the log.
const (
	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpACK = 0x10
)

// parseFlow extracts transport details from an Ethernet frame without
// allocating. Anything it does not understand is cut.Other with flow 0.
func parseFlow(d []byte) flowMeta {
	var m flowMeta
	if len(d) < MinFrame {
		return m
	}
	et := binary.BigEndian.Uint16(d[12:])
	l3 := d[14:]
	if et == 0x8100 && len(l3) >= 4 { // one VLAN tag
		et = binary.BigEndian.Uint16(l3[2:])
		l3 = l3[4:]
	}
	var src, dst []byte
	var proto uint8
	var l4 []byte
	switch et {
	case 0x0800:
		if len(l3) < 20 || l3[0]>>4 != 4 {
			return m
		}
		ihl := int(l3[0]&0x0f) * 4
		total := int(binary.BigEndian.Uint16(l3[2:]))
		if ihl < 20 || total < ihl || total > len(l3) {
			return m
		}
		if binary.BigEndian.Uint16(l3[6:])&0x1fff != 0 { // a later fragment
			return m
		}
		proto, src, dst, l4 = l3[9], l3[12:16], l3[16:20], l3[ihl:total]
	case 0x86dd:
		if len(l3) < 40 {
			return m
		}
		pl := int(binary.BigEndian.Uint16(l3[4:]))
		if 40+pl > len(l3) {
			return m
		}
		proto, src, dst, l4 = l3[6], l3[8:24], l3[24:40], l3[40:40+pl]
	default:
		return m
	}
	switch proto {
	case 6:
		if len(l4) < 20 {
			return m
		}
		off := int(l4[12]>>4) * 4
		if off < 20 || off > len(l4) {
			return m
		}
		m.proto = cut.TCP
		m.flags = l4[13]
		m.seq = binary.BigEndian.Uint32(l4[4:])
		if m.flags&tcpACK != 0 {
			m.ack = binary.BigEndian.Uint32(l4[8:])
		}
		m.plen = uint32(len(l4) - off)
	case 17:
		if len(l4) < 8 {
			return m
		}
		m.proto = cut.UDP
		m.plen = uint32(len(l4) - 8)
	default:
		return m
	}
	m.flow = flowHash(proto, src, dst, l4[0:2], l4[2:4])
	m.rev = flowHash(proto, dst, src, l4[2:4], l4[0:2])
	return m
}

// flowHash is FNV-1a over one direction of a 5-tuple; 0 is reserved for "no
// flow".
func flowHash(proto uint8, src, dst, sport, dport []byte) uint32 {
	h := uint32(2166136261)
	mix := func(b []byte) {
		for _, c := range b {
			h ^= uint32(c)
			h *= 16777619
		}
	}
	mix([]byte{proto})
	mix(src)
	mix(dst)
	mix(sport)
	mix(dport)
	if h == 0 {
		h = 1
	}
	return h
}
