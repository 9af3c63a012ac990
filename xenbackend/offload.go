package xenbackend

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// A domU's netfront hands netback packets with offloads (checksum left to
// the backend, TCP segmentation), as it would to a bridge in dom0. The
// relay reads them from the vif with a virtio_net_hdr in front
// (PACKET_VNET_HDR) and turns each into the plain Ethernet frames a wire
// (and the vnet switch, and a QEMU VM behind it) carries: checksums filled
// in, TCP super-packets cut at their MSS.

// vnetHdr is struct virtio_net_hdr (include/uapi/linux/virtio_net.h), in
// host (little-endian) byte order on x86.
type vnetHdr struct {
	Flags      uint8
	GSOType    uint8
	HdrLen     uint16
	GSOSize    uint16
	CsumStart  uint16
	CsumOffset uint16
}

const (
	vnetHdrLen       = 10
	vnetNeedsCsum    = 1
	gsoNone          = 0
	gsoTCPv4         = 1
	gsoTCPv6         = 4
	gsoECN           = 0x80
	ethHdrLen        = 14
	etherTypeIPv4    = 0x0800
	etherTypeIPv6    = 0x86dd
	ipProtoTCP       = 6
	tcpFlagFIN       = 0x01
	tcpFlagPSH       = 0x08
	tcpFlagCWR       = 0x80
	maxSegmentsPerSK = 1024
)

func parseVnetHdr(b []byte) vnetHdr {
	return vnetHdr{
		Flags: b[0], GSOType: b[1],
		HdrLen:     binary.LittleEndian.Uint16(b[2:]),
		GSOSize:    binary.LittleEndian.Uint16(b[4:]),
		CsumStart:  binary.LittleEndian.Uint16(b[6:]),
		CsumOffset: binary.LittleEndian.Uint16(b[8:]),
	}
}

// errOffload is a packet whose offload the relay cannot carry out.
var errOffload = errors.New("unsupported offload")

// wireFrames turns one packet read from a vif (after its vnetHdr) into the
// frames it stands for. pkt is modified; the frames may alias it.
func wireFrames(h vnetHdr, pkt []byte) ([][]byte, error) {
	switch h.GSOType &^ gsoECN {
	case gsoNone:
		if h.Flags&vnetNeedsCsum != 0 {
			if err := completeCsum(pkt, int(h.CsumStart), int(h.CsumOffset)); err != nil {
				return nil, err
			}
		}
		return [][]byte{pkt}, nil
	case gsoTCPv4:
		return segmentTCP4(pkt, int(h.GSOSize))
	default:
		return nil, fmt.Errorf("%w: gso type %#x", errOffload, h.GSOType)
	}
}

// completeCsum does what a NIC does for CHECKSUM_PARTIAL: the 16-bit field
// at start+off holds the pseudo-header's sum; the checksum of everything
// from start on goes there.
func completeCsum(pkt []byte, start, off int) error {
	if start < 0 || off < 0 || start+off+2 > len(pkt) {
		return fmt.Errorf("%w: checksum at %d+%d past a %d-byte packet", errOffload, start, off, len(pkt))
	}
	binary.BigEndian.PutUint16(pkt[start+off:], ^fold(sum16(pkt[start:], 0)))
	return nil
}

// sum16 adds b as big-endian 16-bit words to s (ones' complement, unfolded).
func sum16(b []byte, s uint32) uint32 {
	for len(b) >= 2 {
		s += uint32(b[0])<<8 | uint32(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		s += uint32(b[0]) << 8
	}
	return s
}

func fold(s uint32) uint16 {
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return uint16(s)
}

// segmentTCP4 cuts an IPv4 TCP super-packet (Ethernet, IPv4, TCP headers,
// then the payload) into segments of at most mss payload bytes, each with
// its own IP length, ID and checksum and TCP sequence number and checksum;
// FIN and PSH stay on the last segment only, CWR on the first.
func segmentTCP4(pkt []byte, mss int) ([][]byte, error) {
	if len(pkt) < ethHdrLen+20 || binary.BigEndian.Uint16(pkt[12:]) != etherTypeIPv4 {
		return nil, fmt.Errorf("%w: TCPv4 segmentation of a non-IPv4 frame", errOffload)
	}
	ip := pkt[ethHdrLen:]
	ihl := int(ip[0]&0x0f) * 4
	if ip[0]>>4 != 4 || ihl < 20 || len(ip) < ihl+20 || ip[9] != ipProtoTCP {
		return nil, fmt.Errorf("%w: TCPv4 segmentation: bad IPv4 header", errOffload)
	}
	tcp := ip[ihl:]
	thl := int(tcp[12]>>4) * 4
	if thl < 20 || len(tcp) < thl {
		return nil, fmt.Errorf("%w: TCPv4 segmentation: bad TCP header", errOffload)
	}
	hdr := ethHdrLen + ihl + thl
	payload := pkt[hdr:]
	if mss <= 0 || len(payload) > mss*maxSegmentsPerSK {
		return nil, fmt.Errorf("%w: TCPv4 segmentation: mss %d for %d bytes", errOffload, mss, len(payload))
	}
	id := binary.BigEndian.Uint16(ip[4:])
	seq := binary.BigEndian.Uint32(tcp[4:])
	flags := tcp[13]
	var out [][]byte
	for off, i := 0, 0; off < len(payload) || i == 0; i++ {
		n := min(mss, len(payload)-off)
		seg := make([]byte, hdr+n)
		copy(seg, pkt[:hdr])
		copy(seg[hdr:], payload[off:off+n])
		sip, stcp := seg[ethHdrLen:], seg[ethHdrLen+ihl:]
		binary.BigEndian.PutUint16(sip[2:], uint16(ihl+thl+n))
		binary.BigEndian.PutUint16(sip[4:], id+uint16(i))
		binary.BigEndian.PutUint16(sip[10:], 0)
		binary.BigEndian.PutUint16(sip[10:], ^fold(sum16(sip[:ihl], 0)))
		binary.BigEndian.PutUint32(stcp[4:], seq+uint32(off))
		f := flags
		if off+n < len(payload) {
			f &^= tcpFlagFIN | tcpFlagPSH
		}
		if i > 0 {
			f &^= tcpFlagCWR
		}
		stcp[13] = f
		binary.BigEndian.PutUint16(stcp[16:], 0)
		ps := sum16(sip[12:20], 0) + ipProtoTCP + uint32(thl+n)
		binary.BigEndian.PutUint16(stcp[16:], ^fold(sum16(stcp[:thl+n], ps)))
		out = append(out, seg)
		off += n
	}
	return out, nil
}
