package vnet

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net/netip"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/vnsnap/vnsnap/core"
	"github.com/vnsnap/vnsnap/core/cut"
)

// Fuzz targets for everything vnet decodes from the network or from disk:
// tunnel datagrams (FuzzParseHeader, FuzzTunnelReceive), the Ethernet frames
// the switch looks into (FuzzParseFlow), QEMU's stream records
// (FuzzStreamRecords), frame logs (FuzzReadLogEntries, FuzzReadLogs) and
// in-transit logs (FuzzReadInTransit). Each checks that malformed input is an
// error, never a panic, and that what decodes re-encodes to itself. Seeds are
// values encoded by the package's own writers; crashers found are kept in
// testdata/fuzz/<target>. CI runs each for a bounded time:
//
//	go test ./vnet -run XXX -fuzz '^FuzzParseHeader$' -fuzztime 60s

// seedFrames are real Ethernet frames of the kinds the switch parses.
func seedFrames() [][]byte {
	a, b := vmMAC(0), vmMAC(1)
	v6 := append(append(append([]byte{}, b[:]...), a[:]...), 0x86, 0xdd)
	v6 = append(v6, 0x60, 0, 0, 0, 0, 8, 17, 64)
	v6 = append(v6, make([]byte, 32)...)
	v6 = append(v6, 0x0f, 0xa0, 0x13, 0x88, 0, 8, 0, 0)
	vlan := tcpFrame(b, a, 7, 9, "tagged")
	vlan = append(append(bytes.Clone(vlan[:12]), 0x81, 0x00, 0, 5), vlan[12:]...)
	return [][]byte{
		ethFrame(b, a, "hello"),
		ethFrame(broadcast, a, "flood"),
		udpFrame(b, a, "datagram"),
		tcpFrame(b, a, 1000, 2000, "segment"),
		tcpFrame(a, b, 0xfffffff0, 1000, ""),
		arpRequest(a),
		v6,
		vlan,
	}
}

func FuzzParseHeader(f *testing.F) {
	for i, fr := range seedFrames() {
		h := Header{Epoch: core.Epoch(i), Frame: 3<<48 | uint64(i), Src: core.VMID(i), Len: uint32(len(fr))}
		f.Add(append(AppendHeader(nil, h), fr...))
	}
	f.Add(AppendHeader(nil, Header{Len: MinFrame})) // header only
	f.Fuzz(func(t *testing.T, d []byte) {
		h, err := ParseHeader(d)
		if err != nil {
			if !errors.Is(err, ErrBadHeader) {
				t.Fatalf("error %v does not wrap ErrBadHeader", err)
			}
			return
		}
		if int(h.Len) != len(d)-HeaderLen || h.Len < MinFrame || h.Len > MaxFrame {
			t.Fatalf("accepted frame length %d in a %d-byte datagram, want %d in [%d,%d]",
				h.Len, len(d), len(d)-HeaderLen, MinFrame, MaxFrame)
		}
		if h.Src < 0 {
			t.Fatalf("accepted source vm %d", h.Src)
		}
		if got := AppendHeader(nil, h); !bytes.Equal(got, d[:HeaderLen]) {
			t.Fatalf("re-encoded header %x, want %x", got, d[:HeaderLen])
		}
	})
}

func FuzzParseFlow(f *testing.F) {
	for _, fr := range seedFrames() {
		f.Add(fr)
	}
	f.Fuzz(func(t *testing.T, d []byte) {
		m := parseFlow(d)
		switch m.proto {
		case cut.Other:
			if m != (flowMeta{}) {
				t.Fatalf("no transport but meta %+v", m)
			}
		case cut.TCP, cut.UDP:
			if m.flow == 0 || m.rev == 0 {
				t.Fatalf("%v frame without a flow id: %+v", m.proto, m)
			}
			if int(m.plen) > len(d) {
				t.Fatalf("payload %d bytes in a %d-byte frame", m.plen, len(d))
			}
			if m.proto == cut.UDP && (m.flags != 0 || m.seq != 0 || m.ack != 0) {
				t.Fatalf("UDP frame with TCP fields %+v", m)
			}
		default:
			t.Fatalf("protocol %d", m.proto)
		}
	})
}

// refRecord is a naive decoder of one stream record, the reference for
// FuzzStreamRecords: the length, and the frame if it is within bounds.
func refRecord(d []byte) (n int, frame []byte, err error) {
	if len(d) < 4 {
		if len(d) == 0 {
			return 0, nil, io.EOF
		}
		return 0, nil, io.ErrUnexpectedEOF
	}
	l := binary.BigEndian.Uint32(d)
	switch {
	case l > MaxFrame:
		return 0, nil, errLongRecord
	case uint64(len(d)-4) < uint64(l):
		return 0, nil, io.ErrUnexpectedEOF
	case l < MinFrame:
		return 4 + int(l), nil, nil
	}
	return 4 + int(l), d[4 : 4+l], nil
}

func FuzzStreamRecords(f *testing.F) {
	var all []byte
	for _, fr := range seedFrames() {
		rec := append(binary.BigEndian.AppendUint32(nil, uint32(len(fr))), fr...)
		f.Add(rec)
		all = append(all, rec...)
	}
	f.Add(all)
	f.Add(append(binary.BigEndian.AppendUint32(nil, 3), "abc"...)) // a runt, skipped
	s, err := New(Config{ID: 1})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { s.Close() })
	f.Fuzz(func(t *testing.T, d []byte) {
		br := bufio.NewReader(bytes.NewReader(d))
		rest := d
		for i := 0; ; i++ {
			fr, err := s.readRecord(br)
			n, want, werr := refRecord(rest)
			if werr != nil {
				if !errors.Is(err, werr) {
					t.Fatalf("record %d: got error %v, want %v", i, err, werr)
				}
				return
			}
			if err != nil {
				t.Fatalf("record %d: %v, want a record of %d bytes", i, err, n)
			}
			switch {
			case want == nil && fr != nil:
				t.Fatalf("record %d: runt of %d bytes decoded as a frame", i, n-4)
			case want != nil && (fr == nil || !bytes.Equal(fr.data(), want)):
				t.Fatalf("record %d: frame differs from the stream's %d bytes", i, len(want))
			}
			if fr != nil {
				if fr.n < MinFrame || fr.n > MaxFrame {
					t.Fatalf("record %d: frame of %d bytes", i, fr.n)
				}
				fr.release()
			}
			rest = rest[n:]
		}
	})
}

// logChecker is a frame log sink that decodes and checks every record as
// the switch writes it, keeping only a partial record.
type logChecker struct {
	mu      sync.Mutex
	pending []byte
	header  bool
	last    time.Duration
	err     error
}

func (c *logChecker) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pending = append(c.pending, p...)
	if !c.header && len(c.pending) >= LogHeaderSize {
		if _, _, err := ReadLogEntries(bytes.NewReader(c.pending[:LogHeaderSize])); err != nil && c.err == nil {
			c.err = err
		}
		c.pending, c.header = c.pending[LogHeaderSize:], true
	}
	for c.header && len(c.pending) >= LogRecordSize {
		e := getLogEntry(c.pending[:LogRecordSize])
		if err := checkEntry(e, c.last); err != nil && c.err == nil {
			c.err = err
		}
		c.last = e.Time
		c.pending = c.pending[LogRecordSize:]
	}
	c.pending = append(c.pending[:0:0], c.pending...) // keep no history
	return len(p), nil
}

// check returns the first bad record's error since the last check.
func (c *logChecker) check() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	err := c.err
	c.err = nil
	return err
}

// FuzzTunnelReceive feeds datagrams from a tunnel peer into a switch with
// two ports and checks that a bad datagram is counted and dropped, a good
// one is forwarded, the frame log stays readable, and the MAC table stays
// within its bound.
func FuzzTunnelReceive(f *testing.F) {
	for i, fr := range seedFrames() {
		h := Header{Epoch: core.Epoch(i % 2), Frame: 2<<48 | uint64(i+1), Src: 5, Len: uint32(len(fr))}
		f.Add(append(AppendHeader(nil, h), fr...))
	}
	lc := &logChecker{}
	s, err := New(Config{ID: 1, Algorithm: core.VNsnapLog, TunnelAddr: "127.0.0.1:0", FrameLog: lc, LogFlushInterval: -1, MaxMACs: 64})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { s.Close() })
	dir := shortDir(f)
	for vm := range core.VMID(2) {
		if err := s.AddPort(PortConfig{VM: vm, Name: "p", Path: filepath.Join(dir, string(rune('a'+vm)))}); err != nil {
			f.Fatal(err)
		}
	}
	peer := netip.MustParseAddrPort("127.0.0.1:9")
	if err := s.AddTunnel("peer", peer); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, d []byte) {
		if err := s.FlushLog(); err != nil {
			t.Fatal(err)
		}
		if err := lc.check(); err != nil {
			t.Fatalf("frame log unreadable before this datagram: %v", err)
		}
		before := s.Counters()
		_, perr := ParseHeader(d)
		s.receive(peer, d)
		after := s.Counters()
		rx := after.Tunnels[0].RxFrames - before.Tunnels[0].RxFrames
		bad := after.BadHeaders - before.BadHeaders
		if perr != nil && (rx != 0 || bad != 1) {
			t.Fatalf("bad datagram (%v): rx %d bad headers %d, want 0 1", perr, rx, bad)
		}
		if perr == nil && (rx != 1 || bad != 0) {
			t.Fatalf("good datagram: rx %d bad headers %d, want 1 0", rx, bad)
		}
		if err := s.FlushLog(); err != nil {
			t.Fatal(err)
		}
		if err := lc.check(); err != nil {
			t.Fatalf("frame log unreadable after this datagram: %v", err)
		}
		s.fdb.mu.RLock()
		n := len(s.fdb.m)
		s.fdb.mu.RUnlock()
		if n > 64 {
			t.Fatalf("MAC table holds %d addresses, bound 64", n)
		}
	})
}

// recordedLogs runs traffic with snapshots through two switches under
// vnsnap-log and returns their frame logs and the in-transit log of
// snapshot 1: real encoded values to seed the log fuzzers.
func recordedLogs(tb testing.TB) (logs [][]byte, transit []byte) {
	b := newBed(tb, 2, core.VNsnapLog, true)
	v0, v1, v2 := b.vm(0, 0), b.vm(1, 1), b.vm(0, 2)
	v0.send(tcpFrame(v1.mac, v0.mac, 100, 1, "before"))
	v1.expect("before")
	v1.send(tcpFrame(v0.mac, v1.mac, 1, 106, "reply"))
	v0.expect("reply")
	v2.sendTo(broadcast, "flood")
	v0.expect("flood")
	v1.expect("flood")
	b.setEpoch(0, 1)
	v1.send(udpFrame(v0.mac, v1.mac, "white to red"))
	v0.expect("white to red")
	b.setEpoch(1, 1)
	b.setEpoch(2, 1)
	v0.send(tcpFrame(v1.mac, v0.mac, 106, 6, "after"))
	v1.expect("after")
	var buf bytes.Buffer
	if _, err := b.sw[0].WriteInTransit(&buf, 1); err != nil {
		tb.Fatal(err)
	}
	b.closeAll()
	for _, l := range b.logs {
		logs = append(logs, bytes.Clone(l.Bytes()))
	}
	return logs, buf.Bytes()
}

func FuzzReadLogEntries(f *testing.F) {
	logs, _ := recordedLogs(f)
	for _, l := range logs {
		f.Add(l)
	}
	f.Add(logs[0][:LogHeaderSize])
	f.Fuzz(func(t *testing.T, d []byte) {
		h, es, err := ReadLogEntries(bytes.NewReader(d))
		if err != nil {
			return
		}
		if n := (len(d) - LogHeaderSize) / LogRecordSize; len(d) < LogHeaderSize || (len(d)-LogHeaderSize)%LogRecordSize != 0 || len(es) != n {
			t.Fatalf("%d entries from %d bytes", len(es), len(d))
		}
		h2, es2, err := ReadLogEntries(bytes.NewReader(buildLog(h.Switch, h.Start, es...)))
		if err != nil {
			t.Fatalf("re-encoded log: %v", err)
		}
		if d := cmp.Diff([]any{h, es}, []any{h2, es2}); d != "" {
			t.Fatalf("re-encoded log differs (-first +second):\n%s", d)
		}
		_, _ = ReadLogs(bytes.NewReader(d)) // converts without panicking
	})
}

func FuzzReadLogs(f *testing.F) {
	logs, _ := recordedLogs(f)
	f.Add(logs[0], logs[1])
	f.Add(logs[1], logs[0])
	f.Fuzz(func(t *testing.T, a, b []byte) {
		recs, err := ReadLogs(bytes.NewReader(a), bytes.NewReader(b))
		if err != nil {
			return
		}
		// Each entry yields at most three records (a send per destination
		// event, a log and a receive for a deliver-log).
		if n := (len(a) + len(b)) / LogRecordSize; len(recs) > 3*n {
			t.Fatalf("%d records from %d log bytes", len(recs), len(a)+len(b))
		}
		for i, r := range recs {
			if r.VM < 0 {
				t.Fatalf("record %d: vm %d", i, r.VM)
			}
		}
	})
}

func FuzzReadInTransit(f *testing.F) {
	_, transit := recordedLogs(f)
	f.Add(transit)
	var buf bytes.Buffer
	var lfs []LoggedFrame
	for i, fr := range seedFrames() {
		lfs = append(lfs, LoggedFrame{VM: core.VMID(i % 3), Epoch: 2, Src: 1, FrameEpoch: 1, Frame: 1<<48 | uint64(i), Data: fr})
	}
	if err := WriteInTransit(&buf, lfs); err != nil {
		f.Fatal(err)
	}
	f.Add(buf.Bytes())
	f.Fuzz(func(t *testing.T, d []byte) {
		fs, err := ReadInTransit(bytes.NewReader(d))
		if err != nil {
			return
		}
		total := 0
		for i, lf := range fs {
			if lf.VM < 0 || lf.Src < 0 {
				t.Fatalf("frame %d: vm %d src %d", i, lf.VM, lf.Src)
			}
			total += len(lf.Data)
		}
		if total > len(d) {
			t.Fatalf("%d frame bytes from a %d-byte log", total, len(d))
		}
		var out bytes.Buffer
		if err := WriteInTransit(&out, fs); err != nil {
			t.Fatal(err)
		}
		fs2, err := ReadInTransit(&out)
		if err != nil {
			t.Fatalf("re-encoded log: %v", err)
		}
		if d := cmp.Diff(fs, fs2); d != "" {
			t.Fatalf("re-encoded log differs (-first +second):\n%s", d)
		}
	})
}
