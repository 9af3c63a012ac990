package main

import (
	"bytes"
	"encoding/json"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// viewEvents is a short snapshot of VM a: two live passes with byte
// updates, the pause, and the flush.
func viewEvents() []progressEvent {
	t0 := time.Date(2026, 12, 2, 4, 0, 0, 0, time.UTC)
	var evs []progressEvent
	add := func(ms int, phase string, pass int, b, fb, ft int64) {
		evs = append(evs, progressEvent{
			V: 1, Type: "progress", Op: "snapshot", Seq: uint64(len(evs) + 1), VM: "a", Phase: phase, Pass: pass,
			Bytes: b, Total: 96 << 20, FlushBytes: fb, FlushTotal: ft,
			At: t0.Add(time.Duration(ms) * time.Millisecond), ElapsedNS: int64(ms) * 1e6,
		})
	}
	add(0, "live-copy", 1, 0, 0, 0)
	add(1000, "live-copy", 1, 10<<20, 0, 0) // 10 MiB/s, under 2 s: not printed
	add(1500, "live-copy", 1, 15<<20, 0, 0) // same phase, under 2 s: not printed
	add(3500, "live-copy", 1, 35<<20, 0, 0) // 2 s later: printed
	add(3600, "live-copy", 2, 36<<20, 0, 0)
	add(3700, "paused", 2, 36<<20, 0, 0)
	add(4000, "flushing", 2, 40<<20, 0, 40<<20)
	add(5000, "flushed", 2, 40<<20, 40<<20, 40<<20)
	return evs
}

// TestPlainView: a plain view prints a VM's phase changes and, within a
// phase, a line every plainEvery, with its bytes and rate; then the report
// on stdout.
func TestPlainView(t *testing.T) {
	var out, errb bytes.Buffer
	v := newView(&out, &errb, false)
	for _, e := range viewEvents() {
		v.event(e)
	}
	if err := v.finish(response{OK: true, Text: "snapshot s1: report\n"}, nil); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"snapshot a: live-copy pass 1, copy 0.0MiB of 96.0MiB, 0.0s",
		"snapshot a: live-copy pass 1, copy 35.0MiB of 96.0MiB at 10.0MiB/s, 3.5s",
		"snapshot a: live-copy pass 2, copy 36.0MiB of 96.0MiB at 10.0MiB/s, 3.6s",
		"snapshot a: paused, copy 36.0MiB of 96.0MiB at 10.0MiB/s, 3.7s",
		"snapshot a: flushing, flush 0.0MiB of 40.0MiB, 4.0s",
		"snapshot a: flushed, flush 40.0MiB of 40.0MiB at 40.0MiB/s, 5.0s",
	}
	if d := cmp.Diff(want, strings.Split(strings.TrimSpace(errb.String()), "\n")); d != "" {
		t.Errorf("plain lines (-want +got):\n%s", d)
	}
	if out.String() != "snapshot s1: report\n" {
		t.Errorf("stdout %q, want the report alone", out.String())
	}
	if err := v.finish(response{OK: false, Error: "snapshot aborted"}, nil); err == nil || err.Error() != "snapshot aborted" {
		t.Errorf("failed result: error %v", err)
	}
}

// TestJSONView: --json prints every event and the result, one JSON object a
// line, which the client's own decoder accepts.
func TestJSONView(t *testing.T) {
	var out bytes.Buffer
	v := newView(&out, &bytes.Buffer{}, true)
	evs := viewEvents()
	for _, e := range evs {
		v.event(e)
	}
	// A version-0 supervisor's result gets v and type.
	if err := v.finish(response{OK: true, Text: "r\n", Summary: &resultSummary{Name: "s1", Epoch: 2}}, nil); err != nil {
		t.Fatal(err)
	}
	text := out.String()
	a := newAnswerReader(&out)
	var got []progressEvent
	for {
		e, r, err := a.next()
		if err != nil {
			t.Fatal(err)
		}
		if r != nil {
			if r.V != 1 || r.Type != "result" || r.Summary.Name != "s1" {
				t.Errorf("result %+v", r)
			}
			break
		}
		got = append(got, *e)
	}
	if d := cmp.Diff(evs, got); d != "" {
		t.Errorf("events (-want +got):\n%s", d)
	}
	var probe map[string]any
	line, _, _ := strings.Cut(text, "\n")
	if err := json.Unmarshal([]byte(line), &probe); err != nil || len(probe) != 14 {
		t.Errorf("first line %s: %d fields (%v), want all 14 present", line, len(probe), err)
	}
}

// TestBarViewNotTerminal: the bar view, on a writer that is no terminal
// (mpb then draws nothing), takes events of several VMs, completes its bars
// and prints the report; a failed result aborts them and is the error.
func TestBarViewNotTerminal(t *testing.T) {
	for _, ok := range []bool{true, false} {
		var out bytes.Buffer
		v := newBarView(&out)
		for _, e := range viewEvents() {
			v.event(e)
			e.VM = "b"
			v.event(e)
		}
		err := v.finish(response{OK: ok, Error: "snapshot aborted", Text: "report\n"}, nil)
		if ok && (err != nil || !strings.HasSuffix(out.String(), "report\n")) {
			t.Errorf("ok result: error %v, output %q; want none and the report", err, out.String())
		}
		if !ok && (err == nil || err.Error() != "snapshot aborted") {
			t.Errorf("failed result: error %v, want snapshot aborted", err)
		}
	}
}

// TestEventWriterGivesUp: a client that stops reading costs the supervisor
// one write timeout, then its events are dropped without waiting.
func TestEventWriterGivesUp(t *testing.T) {
	c, peer := net.Pipe() // unbuffered: a write waits for the peer's read
	defer c.Close()
	defer peer.Close()
	w := &eventWriter{c: c, op: "snapshot", timeout: 10 * time.Millisecond}
	p := goodEvent()
	w.send(p)
	if !w.failed {
		t.Fatal("send to a client that does not read: want failed")
	}
	w.send(p) // returns at once: nothing is written
	go func() { c.Write([]byte("x")) }()
	b := make([]byte, 1)
	if n, _ := peer.Read(b); n != 1 || b[0] != 'x' {
		t.Errorf("peer read %q, want the next write, not an event", b[:n])
	}
}
