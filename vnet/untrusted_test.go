package vnet

import (
	"bytes"
	"context"
	"errors"
	"math"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vnsnap/vnsnap/core"
	"github.com/vnsnap/vnsnap/internal/regfile"
)

// Regression tests for malformed input found by the fuzz targets (see
// fuzz_test.go) and by review of the decoders.

func TestParseHeaderRejects(t *testing.T) {
	fr := ethFrame(vmMAC(1), vmMAC(0), "payload")
	good := append(AppendHeader(nil, Header{Epoch: 1, Frame: 1<<48 | 1, Src: 0, Len: uint32(len(fr))}), fr...)
	if _, err := ParseHeader(good); err != nil {
		t.Fatalf("good datagram: %v", err)
	}
	mod := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	big := make([]byte, MaxFrame+1)
	copy(big, fr)
	for _, tc := range []struct {
		name string
		d    []byte
		want string
	}{
		{"short", good[:HeaderLen-1], "23 bytes"},
		{"magic", mod(func(b []byte) []byte { b[0] = 'X'; return b }), "magic"},
		{"version", mod(func(b []byte) []byte { b[1] = 2; return b }), "version 2"},
		{"type", mod(func(b []byte) []byte { b[2] = 1; return b }), "type 1"},
		{"negative-src", mod(func(b []byte) []byte { b[16] = 0xff; return b }), "source vm -"},
		{"frame-bit-63", mod(func(b []byte) []byte { b[8] |= 0x80; return b }), "bit 63"},
		{"length-mismatch", mod(func(b []byte) []byte { return b[:len(b)-1] }), "frame length"},
		{"runt", append(AppendHeader(nil, Header{Len: MinFrame - 1}), fr[:MinFrame-1]...), "out of [14,"},
		{"oversized", append(AppendHeader(nil, Header{Len: MaxFrame + 1}), big...), "out of [14,"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseHeader(tc.d)
			if !errors.Is(err, ErrBadHeader) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want ErrBadHeader mentioning %q", err, tc.want)
			}
		})
	}
}

// TestTunnelOversizedDatagram sends, over IPv6 (whose UDP payload may exceed
// IPv4's), a datagram whose header announces one byte more than MaxFrame:
// the switch used to slice past its frame buffer and panic.
func TestTunnelOversizedDatagram(t *testing.T) {
	s, err := New(Config{ID: 1, TunnelAddr: "[::1]:0"})
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	defer s.Close()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv6loopback})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := s.AddTunnel("peer", c.LocalAddr().(*net.UDPAddr).AddrPort()); err != nil {
		t.Fatal(err)
	}
	big := make([]byte, MaxFrame+1)
	copy(big, ethFrame(broadcast, vmMAC(3), "x"))
	d := append(AppendHeader(nil, Header{Src: 3, Frame: 1, Len: MaxFrame + 1}), big...)
	if _, err := c.WriteToUDPAddrPort(d, s.TunnelAddr()); err != nil {
		t.Fatalf("send %d-byte datagram: %v", len(d), err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := poll(ctx, func() bool { return s.Counters().BadHeaders == 1 }); err != nil {
		t.Fatalf("bad headers %d, want 1: %v", s.Counters().BadHeaders, err)
	}
	if rx := s.Counters().Tunnels[0].RxFrames; rx != 0 {
		t.Errorf("tunnel rx %d, want 0", rx)
	}
}

// TestReceiveOversizedDatagram is TestTunnelOversizedDatagram without the
// socket, so that hosts (and CI runners) without IPv6 loopback check the
// receive path too.
func TestReceiveOversizedDatagram(t *testing.T) {
	s, err := New(Config{ID: 1, TunnelAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	peer := s.TunnelAddr() // any registered address will do
	if err := s.AddTunnel("peer", peer); err != nil {
		t.Fatal(err)
	}
	big := make([]byte, MaxFrame+1)
	copy(big, ethFrame(broadcast, vmMAC(3), "x"))
	s.receive(peer, append(AppendHeader(nil, Header{Src: 3, Frame: 1, Len: MaxFrame + 1}), big...))
	if c := s.Counters(); c.BadHeaders != 1 || c.Tunnels[0].RxFrames != 0 {
		t.Errorf("bad headers %d, tunnel rx %d; want 1, 0", c.BadHeaders, c.Tunnels[0].RxFrames)
	}
}

// TestMACTableBound floods a switch with frames from distinct source
// addresses: the table stops at MaxMACs and counts the rest.
func TestMACTableBound(t *testing.T) {
	s, err := New(Config{ID: 1, TunnelAddr: "127.0.0.1:0", MaxMACs: 8})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	peer := s.TunnelAddr() // any registered address will do
	if err := s.AddTunnel("peer", peer); err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		src := mac{0x52, 0x54, 0, 0, byte(i >> 8), byte(i)}
		fr := ethFrame(broadcast, src, "flood")
		s.receive(peer, append(AppendHeader(nil, Header{Src: 1, Frame: uint64(i + 1), Len: uint32(len(fr))}), fr...))
	}
	s.fdb.mu.RLock()
	n := len(s.fdb.m)
	s.fdb.mu.RUnlock()
	if c := s.Counters(); n != 8 || c.MACTableFull != 92 || c.Tunnels[0].RxFrames != 100 {
		t.Errorf("table %d, full %d, rx %d; want 8, 92, 100", n, c.MACTableFull, c.Tunnels[0].RxFrames)
	}
	if _, err := New(Config{MaxMACs: -1}); err == nil || !strings.Contains(err.Error(), "MaxMACs") {
		t.Errorf("MaxMACs -1: got %v, want an error naming MaxMACs", err)
	}
}

// TestMACTableSweep: with aging, a full table makes room by removing
// expired addresses.
func TestMACTableSweep(t *testing.T) {
	tb := fdb{age: time.Millisecond, max: 2, m: make(map[mac]fdbEntry)}
	tb.learn(mac{2, 0, 0, 0, 0, 1}, loc{})
	tb.learn(mac{2, 0, 0, 0, 0, 2}, loc{})
	time.Sleep(5 * time.Millisecond)
	tb.learn(mac{2, 0, 0, 0, 0, 3}, loc{})
	if _, ok := tb.m[mac{2, 0, 0, 0, 0, 3}]; !ok || len(tb.m) != 1 || tb.full.Load() != 0 {
		t.Errorf("table %v full %d, want only the new address", tb.m, tb.full.Load())
	}
}

func TestReadInTransitRejectsNegativeVM(t *testing.T) {
	fr := ethFrame(vmMAC(1), vmMAC(0), "logged")
	for _, lf := range []LoggedFrame{{VM: -2, Src: 0, Data: fr}, {VM: 1, Src: -5, Data: fr}} {
		var buf bytes.Buffer
		if err := WriteInTransit(&buf, []LoggedFrame{lf}); err != nil {
			t.Fatal(err)
		}
		if _, err := ReadInTransit(&buf); err == nil || !strings.Contains(err.Error(), "offset 16: record 0") {
			t.Errorf("vm %d src %d: got %v, want an error at offset 16", lf.VM, lf.Src, err)
		}
	}
}

// TestReadInTransitCountIsNotTrusted: a 16-byte log announcing 2^32-1
// frames fails on the missing record without reserving room for them.
func TestReadInTransitCountIsNotTrusted(t *testing.T) {
	hdr := append([]byte(InTransitMagic), 0, InTransitVersion, 0, 0, 0xff, 0xff, 0xff, 0xff)
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	_, err := ReadInTransit(bytes.NewReader(hdr))
	runtime.ReadMemStats(&m1)
	if err == nil || !strings.Contains(err.Error(), "record 0 of 4294967295") {
		t.Fatalf("got %v, want a truncated record 0", err)
	}
	if grown := m1.TotalAlloc - m0.TotalAlloc; grown > 1<<20 {
		t.Errorf("allocated %d bytes for a 16-byte log, want under 1 MiB", grown)
	}
}

func TestReadLogTimeOverflow(t *testing.T) {
	start := time.Unix(0, math.MaxInt64-10)
	l := buildLog(1, start, LogEntry{Time: 11, Src: 0, Dst: NoVM, Action: LogSend, Frame: 1})
	if _, _, err := ReadLogEntries(bytes.NewReader(l)); err == nil || !strings.Contains(err.Error(), "offset 32: record 0: time") {
		t.Errorf("got %v, want an overflow error at offset 32", err)
	}
}

// TestReplayPathRefusesSpecialFiles: a replay request naming a FIFO or a
// device fails at once instead of hanging or reading without end.
func TestReplayPathRefusesSpecialFiles(t *testing.T) {
	s, err := New(Config{ID: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{fifo, "/dev/zero"} {
		done := make(chan ControlResponse, 1)
		go func() { done <- s.handle(ControlRequest{Op: OpReplay, Path: path}) }()
		select {
		case r := <-done:
			if r.Error == "" || !strings.Contains(r.Error, "not a regular file") {
				t.Errorf("replay from %s: got %+v, want not a regular file", path, r)
			}
		case <-time.After(waitFor):
			t.Fatalf("replay from %s did not return", path)
		}
	}
	big := filepath.Join(t.TempDir(), "big")
	if err := os.WriteFile(big, make([]byte, 100), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := regfile.ReadFile(big, 99); err == nil || !strings.Contains(err.Error(), "limit of 99") {
		t.Errorf("100-byte file capped at 99: got %v", err)
	}
	if b, err := regfile.ReadFile(big, 100); err != nil || len(b) != 100 {
		t.Errorf("100-byte file capped at 100: %d bytes, %v", len(b), err)
	}
}

// TestReadLogsManyDestinations: one frame dropped for many VMs converts to
// a send and a drop per VM (the destination set used to be a list scanned
// per event, quadratic in a crafted log).
func TestReadLogsManyDestinations(t *testing.T) {
	const n = 20000
	es := []LogEntry{{Time: 1, Frame: 1, Src: 0, Dst: NoVM, Action: LogSend, Copies: n}}
	for i := range n {
		es = append(es, LogEntry{Time: 2, Frame: 1, Src: 0, Dst: core.VMID(i + 1), Action: LogDrop, Reason: 2})
	}
	recs, err := ReadLogs(bytes.NewReader(buildLog(1, time.Unix(1, 0), es...)))
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 2*n {
		t.Errorf("%d records, want %d", len(recs), 2*n)
	}
}
