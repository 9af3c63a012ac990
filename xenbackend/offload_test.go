package xenbackend

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
)

// tcp4Packet builds an Ethernet/IPv4/TCP packet with payload, its TCP
// checksum field holding the pseudo-header sum only (CHECKSUM_PARTIAL), as
// netfront hands it over.
func tcp4Packet(payload []byte, flags byte) []byte {
	p := make([]byte, ethHdrLen+20+20+len(payload))
	binary.BigEndian.PutUint16(p[12:], etherTypeIPv4)
	ip := p[ethHdrLen:]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(40+len(payload)))
	binary.BigEndian.PutUint16(ip[4:], 100)
	ip[8], ip[9] = 64, ipProtoTCP
	copy(ip[12:], []byte{10, 0, 0, 1, 10, 0, 0, 2})
	tcp := ip[20:]
	binary.BigEndian.PutUint16(tcp[0:], 5001)
	binary.BigEndian.PutUint16(tcp[2:], 80)
	binary.BigEndian.PutUint32(tcp[4:], 0xfffff000) // wraps within the packet
	tcp[12], tcp[13] = 5<<4, flags
	copy(tcp[20:], payload)
	ps := fold(sum16(ip[12:20], 0) + ipProtoTCP + uint32(20+len(payload)))
	binary.BigEndian.PutUint16(tcp[16:], ps)
	return p
}

// checkTCP4 verifies a wire frame's IPv4 and TCP checksums from scratch.
func checkTCP4(t *testing.T, f []byte) {
	t.Helper()
	ip := f[ethHdrLen:]
	if got := fold(sum16(ip[:20], 0)); got != 0xffff {
		t.Errorf("IPv4 header checksum does not verify (sum %#x)", got)
	}
	n := int(binary.BigEndian.Uint16(ip[2:]))
	if n != len(ip) {
		t.Errorf("IPv4 total length %d, frame carries %d", n, len(ip))
	}
	if got := fold(sum16(ip[20:n], sum16(ip[12:20], 0)+ipProtoTCP+uint32(n-20))); got != 0xffff {
		t.Errorf("TCP checksum does not verify (sum %#x)", got)
	}
}

func TestSegmentTCP4(t *testing.T) {
	payload := make([]byte, 2500)
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	pkt := tcp4Packet(payload, tcpFlagPSH|tcpFlagFIN|tcpFlagCWR|0x10)
	h := vnetHdr{Flags: vnetNeedsCsum, GSOType: gsoTCPv4, HdrLen: 54, GSOSize: 1000, CsumStart: 34, CsumOffset: 16}
	frames, err := wireFrames(h, pkt)
	if err != nil {
		t.Fatal(err)
	}
	if len(frames) != 3 {
		t.Fatalf("got %d segments, want 3 (2500 bytes at mss 1000)", len(frames))
	}
	var got []byte
	for i, f := range frames {
		checkTCP4(t, f)
		ip := f[ethHdrLen:]
		tcp := ip[20:]
		if id := binary.BigEndian.Uint16(ip[4:]); id != 100+uint16(i) {
			t.Errorf("segment %d: IP id %d, want %d", i, id, 100+i)
		}
		if seq := binary.BigEndian.Uint32(tcp[4:]); seq != 0xfffff000+uint32(i*1000) {
			t.Errorf("segment %d: seq %#x, want %#x", i, seq, 0xfffff000+uint32(i*1000))
		}
		wantFlags := byte(0x10)
		if i == 0 {
			wantFlags |= tcpFlagCWR
		}
		if i == 2 {
			wantFlags |= tcpFlagPSH | tcpFlagFIN
		}
		if tcp[13] != wantFlags {
			t.Errorf("segment %d: flags %#x, want %#x", i, tcp[13], wantFlags)
		}
		got = append(got, tcp[20:]...)
	}
	if !bytes.Equal(got, payload) {
		t.Error("segments' payloads do not add up to the super-packet's")
	}
}

func TestCompleteChecksum(t *testing.T) {
	payload := []byte("hello, checksum offload")
	pkt := tcp4Packet(payload, 0x18)
	// The IPv4 header checksum is the sender's (netfront fills it); only
	// the TCP one is partial.
	ip := pkt[ethHdrLen:]
	binary.BigEndian.PutUint16(ip[10:], ^fold(sum16(ip[:20], 0)))
	frames, err := wireFrames(vnetHdr{Flags: vnetNeedsCsum, CsumStart: 34, CsumOffset: 16}, pkt)
	if err != nil || len(frames) != 1 {
		t.Fatalf("got %d frames, %v; want 1", len(frames), err)
	}
	checkTCP4(t, frames[0])
	// Without NEEDS_CSUM the frame passes unchanged.
	plain := append([]byte(nil), frames[0]...)
	frames, err = wireFrames(vnetHdr{}, plain)
	if err != nil || !bytes.Equal(frames[0], plain) {
		t.Errorf("plain frame changed: %v", err)
	}
}

func TestOffloadRefusals(t *testing.T) {
	pkt := tcp4Packet(make([]byte, 100), 0)
	for name, h := range map[string]vnetHdr{
		"csum past the end": {Flags: vnetNeedsCsum, CsumStart: 150, CsumOffset: 16},
		"tcpv6 gso":         {GSOType: gsoTCPv6, GSOSize: 1000},
		"udp gso":           {GSOType: 3, GSOSize: 1000},
		"zero mss":          {GSOType: gsoTCPv4},
	} {
		if _, err := wireFrames(h, append([]byte(nil), pkt...)); !errors.Is(err, errOffload) {
			t.Errorf("%s: got %v, want errOffload", name, err)
		}
	}
	if _, err := wireFrames(vnetHdr{GSOType: gsoTCPv4, GSOSize: 100}, make([]byte, 20)); !errors.Is(err, errOffload) {
		t.Errorf("short frame: got %v, want errOffload", err)
	}
}

func FuzzWireFrames(f *testing.F) {
	f.Add([]byte{1, 1, 0, 0, 0xe8, 3, 34, 0, 16, 0}, tcp4Packet(make([]byte, 3000), 0x18))
	f.Add([]byte{1, 0, 0, 0, 0, 0, 34, 0, 16, 0}, tcp4Packet([]byte("x"), 0x18))
	f.Fuzz(func(t *testing.T, hdr, pkt []byte) {
		if len(hdr) < vnetHdrLen {
			return
		}
		frames, err := wireFrames(parseVnetHdr(hdr), pkt)
		if err != nil {
			return
		}
		for _, fr := range frames {
			if len(fr) > len(pkt) {
				t.Fatalf("a %d-byte frame out of a %d-byte packet", len(fr), len(pkt))
			}
		}
	})
}
