package vnet

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/vnsnap/vnsnap/core/cut"
)

// buildLog encodes a frame log with the given start and entries.
func buildLog(sw uint16, start time.Time, es ...LogEntry) []byte {
	b := appendLogHeader(nil, LogHeader{Version: LogVersion, Switch: sw, Start: start})
	var rec [LogRecordSize]byte
	for i := range es {
		putLogEntry(&rec, &es[i])
		b = append(b, rec[:]...)
	}
	return b
}

func TestLogRoundTrip(t *testing.T) {
	start := time.Unix(1700000000, 5)
	es := []LogEntry{
		{Time: 1, Frame: 1<<48 | 1, Src: 0, Dst: NoVM, Action: LogSend, FrameEpoch: 1, Proto: cut.TCP, TCPFlags: tcpACK,
			Size: 80, Copies: 2, Flow: 7, RevFlow: 8, Seq: 100, Ack: 200, Len: 26},
		{Time: 2, Frame: 1<<48 | 1, Src: 0, Dst: 1, Action: LogDrop, FrameEpoch: 1, Reason: cut.DropColour},
		{Time: 2, Src: 3, Dst: 3, Action: LogCut, FrameEpoch: 4, DstEpoch: 3},
	}
	h, got, err := ReadLogEntries(bytes.NewReader(buildLog(3, start, es...)))
	if err != nil {
		t.Fatal(err)
	}
	if h.Switch != 3 || !h.Start.Equal(start) {
		t.Errorf("header %+v, want switch 3 start %v", h, start)
	}
	if d := cmp.Diff(es, got); d != "" {
		t.Errorf("entries (-want +got):\n%s", d)
	}
}

func TestReadLogErrors(t *testing.T) {
	send := LogEntry{Time: 5, Frame: 1, Dst: NoVM, Action: LogSend}
	good := buildLog(1, time.Unix(0, 0), send, send)
	mod := func(off int, b byte) []byte {
		c := bytes.Clone(good)
		c[off] = b
		return c
	}
	for _, tc := range []struct {
		name string
		log  []byte
		want string
	}{
		{"empty", nil, "offset 0: header"},
		{"magic", mod(0, 'X'), "offset 0: bad magic"},
		{"version", mod(8, 9), "offset 8: version 9"},
		{"record size", mod(10, 32), "offset 10: record size 32"},
		{"truncated", good[:len(good)-3], "offset 96: record 1 truncated after 61 bytes"},
		{"action", mod(LogHeaderSize+LogRecordSize+32, 99), "offset 96: record 1: unknown action 99"},
		{"time", mod(LogHeaderSize+LogRecordSize, 1), "offset 96: record 1: time 1ns before"},
		{"no dst", buildLog(1, time.Unix(0, 0), send, LogEntry{Frame: 1, Dst: NoVM, Action: LogDeliver, Time: 6}), "offset 96: record 1: deliver without a destination"},
		{"no src", buildLog(1, time.Unix(0, 0), send, LogEntry{Frame: 2, Src: NoVM, Dst: NoVM, Action: LogSend, Time: 6}), "offset 96: record 1: send without a source vm"},
		{"cut no src", buildLog(1, time.Unix(0, 0), send, LogEntry{Src: NoVM, Dst: 0, Action: LogCut, Time: 6}), "offset 96: record 1: cut without a source vm"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ReadLog(bytes.NewReader(tc.log))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// TestReadLogsCausalMerge checks that a receipt never precedes its send in
// the merged records, even when the receiving host's clock is far behind.
func TestReadLogsCausalMerge(t *testing.T) {
	t0 := time.Unix(1000, 0)
	sender := buildLog(1, t0,
		LogEntry{Time: 10, Src: 0, Dst: 0, Action: LogCut, FrameEpoch: 1},
		LogEntry{Time: 20, Frame: 1<<48 | 1, Src: 0, Dst: NoVM, Action: LogSend, FrameEpoch: 1, Copies: 1},
	)
	// The receiver's clock is one second behind: by time its records come
	// first, but its delivery must wait for the send.
	receiver := buildLog(2, t0.Add(-time.Second),
		LogEntry{Time: 30, Frame: 1<<48 | 1, Src: 0, Dst: 1, Action: LogDeliver, FrameEpoch: 1},
		LogEntry{Time: 40, Src: 1, Dst: 1, Action: LogCut, FrameEpoch: 1},
	)
	got, err := ReadLogs(bytes.NewReader(sender), bytes.NewReader(receiver))
	if err != nil {
		t.Fatal(err)
	}
	want := []cut.Record{
		{Kind: cut.Cut, VM: 0, Epoch: 1},
		{Kind: cut.Send, VM: 0, Frame: 1<<48 | 1, Epoch: 1},
		{Kind: cut.Receive, VM: 1, Frame: 1<<48 | 1, Epoch: 1},
		{Kind: cut.Cut, VM: 1, Epoch: 1},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("records (-want +got):\n%s", d)
	}
	ch := cut.NewChecker(1, 2)
	for _, r := range got {
		if err := ch.Observe(r); err != nil {
			t.Fatal(err)
		}
	}
	if res := ch.Result(); res.Orphans != 1 {
		t.Errorf("orphans = %d, want 1 (a red frame received before the receiver's cut)", res.Orphans)
	}

	// Without the sender's log the receipt has no send.
	if _, err := ReadLog(bytes.NewReader(receiver)); err == nil || !strings.Contains(err.Error(), "log 0 offset 32") {
		t.Errorf("got %v, want an error naming log 0 offset 32", err)
	}
}

func TestParseFlow(t *testing.T) {
	a, b := vmMAC(0), vmMAC(1)
	fwd := parseFlow(tcpFrame(b, a, 0xfffffff0, 77, "0123456789"))
	rev := parseFlow(tcpFrame(a, b, 77, 0xfffffffa, ""))
	if fwd.proto != cut.TCP || fwd.seq != 0xfffffff0 || fwd.ack != 77 || fwd.plen != 10 || fwd.flags != tcpACK {
		t.Errorf("forward = %+v", fwd)
	}
	if fwd.flow == 0 || fwd.flow != rev.rev || fwd.rev != rev.flow || fwd.flow == fwd.rev {
		t.Errorf("flows forward %+v reverse %+v: want mirrored and distinct", fwd, rev)
	}
	tcp := tcpFrame(b, a, 1, 2, "payload")
	if n := testing.AllocsPerRun(100, func() { parseFlow(tcp) }); n != 0 {
		t.Errorf("parseFlow allocates %v times per frame, want 0", n)
	}
	if u := parseFlow(udpFrame(b, a, "abc")); u.proto != cut.UDP || u.plen != 3 || u.flow == 0 {
		t.Errorf("udp = %+v", u)
	}
	if o := parseFlow(ethFrame(b, a, "x")); o != (flowMeta{}) {
		t.Errorf("other = %+v, want zero", o)
	}
	if o := parseFlow(tcpFrame(b, a, 1, 1, "x")[:30]); o != (flowMeta{}) {
		t.Errorf("truncated = %+v, want zero", o)
	}
}

func TestSeqUnwrap(t *testing.T) {
	c := newConverter(nil)
	steps := []struct {
		v    uint32
		want uint64
	}{
		{0xfffffff0, 1<<32 + 0xfffffff0},
		{0x10, 2<<32 + 0x10},             // wrapped forward
		{0xffffffff, 1<<32 + 0xffffffff}, // an old retransmission
		{0x70000000, 2<<32 + 0x70000000},
		{0xe0000000, 2<<32 + 0xe0000000},
		{0x00000005, 3<<32 + 0x5}, // wrapped again
	}
	for i, s := range steps {
		if got := c.ext(9, s.v); got != s.want {
			t.Errorf("step %d: ext(%#x) = %#x, want %#x", i, s.v, got, s.want)
		}
	}
}
