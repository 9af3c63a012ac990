package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/vnsnap/vnsnap/realbackend"
)

func goodEvent() realbackend.Progress {
	return realbackend.Progress{
		Seq: 3, VM: "a", Phase: realbackend.PhaseFlushing, Pass: 2, Bytes: 5 << 20, Total: 96 << 20,
		FlushBytes: 1 << 20, FlushTotal: 5 << 20, At: time.Date(2026, 12, 2, 4, 20, 1, 123456789, time.UTC),
		Elapsed: 1523 * time.Millisecond, Dropped: 1,
	}
}

func eventLine(t testing.TB, e progressEvent) []byte {
	b, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestEventRoundTrip: what the supervisor encodes, the client decodes to
// the same event.
func TestEventRoundTrip(t *testing.T) {
	want := eventOf("snapshot", goodEvent())
	e, r, err := decodeLine(eventLine(t, want))
	if err != nil || r != nil || e == nil {
		t.Fatalf("decode: event %v result %v err %v", e, r, err)
	}
	if d := cmp.Diff(want, *e); d != "" {
		t.Errorf("round trip (-want +got):\n%s", d)
	}
}

// TestDecodeLineRefuses: each malformed line is refused with an error
// naming the field.
func TestDecodeLineRefuses(t *testing.T) {
	good := string(eventLine(t, eventOf("restore", goodEvent())))
	edit := func(old, new string) string {
		if !strings.Contains(good, old) {
			t.Fatalf("%q not in %s", old, good)
		}
		return strings.Replace(good, old, new, 1)
	}
	for _, tc := range []struct{ line, want string }{
		{edit(`"v":1`, `"v":2`), "v: version 2"},
		{edit(`"op":"restore"`, `"op":"boot"`), "op: bad value boot"},
		{edit(`"seq":3`, `"seq":0`), "seq: bad value 0"},
		{edit(`"vm":"a"`, `"vm":"../etc"`), "vm:"},
		{edit(`"vm":"a"`, `"vm":"a\u001b[2J"`), "vm:"},
		{edit(`"phase":"flushing"`, `"phase":"exploded"`), `phase: bad value "exploded"`},
		{edit(`"pass":2`, `"pass":-1`), "pass: bad value -1"},
		{edit(`"bytes":5242880`, `"bytes":-5`), "bytes: bad value -5"},
		{edit(`"total":100663296`, `"total":1e300`), "total"},
		{edit(`"flush_bytes":1048576`, `"flush_bytes":9999999999`), "flush_bytes: bad value"},
		{edit(`"at":"2026-12-02T04:20:01.123456789Z"`, `"at":"0001-01-01T00:00:00Z"`), "at: bad value zero time"},
		{edit(`"elapsed_ns":1523000000`, `"elapsed_ns":-1`), "elapsed_ns: bad value -1"},
		{edit(`"dropped":1`, `"dropped":-1`), "dropped: bad value -1"},
		{edit(`"dropped":1`, `"dropped":1,"colour":"red"`), `unknown field "colour"`},
		{good + `{}`, "after top-level value"},
		{edit(`"vm":"a"`, `"vm":"`+strings.Repeat("a", maxEventBytes)+`"`), "more than 4096"},
		{`{"type":"bogus"}`, `type: unknown "bogus"`},
		{`{"v":2,"type":"result","ok":true}`, "v: version 2"},
		{`{"ok":true,"texts":"x"}`, `unknown field "texts"`},
		{`not json`, "decode answer line"},
	} {
		_, _, err := decodeLine([]byte(tc.line))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("decode %.80s: got %v, want an error with %q", tc.line, err, tc.want)
		}
	}
	// A version-0 result (no v, no type) is accepted.
	if _, r, err := decodeLine([]byte(`{"ok":false,"error":"no VMs running"}`)); err != nil || r == nil || r.Error != "no VMs running" {
		t.Errorf("version-0 result: %v %v", r, err)
	}
}

// TestAnswerReader reads events then the result, and refuses a stream
// whose seq does not increase, an over-long line and a cut line.
func TestAnswerReader(t *testing.T) {
	ev := func(seq uint64) string {
		p := goodEvent()
		p.Seq = seq
		return string(eventLine(t, eventOf("snapshot", p))) + "\n"
	}
	result := `{"v":1,"type":"result","ok":true,"text":"done\n","summary":{"name":"s","epoch":1,"vms":[{"vm":"a"}]}}` + "\n"
	a := newAnswerReader(strings.NewReader(ev(1) + ev(2) + result))
	var seqs []uint64
	for {
		e, r, err := a.next()
		if err != nil {
			t.Fatal(err)
		}
		if r != nil {
			if r.Text != "done\n" || r.Summary == nil || r.Summary.VMs[0].VM != "a" {
				t.Errorf("result %+v", r)
			}
			break
		}
		seqs = append(seqs, e.Seq)
	}
	if d := cmp.Diff([]uint64{1, 2}, seqs); d != "" {
		t.Errorf("seqs (-want +got):\n%s", d)
	}
	for _, tc := range []struct{ in, want string }{
		{ev(2) + ev(2) + result, "seq: 2 after 2"},
		{ev(1) + `{"ok":true,"text":"` + strings.Repeat("x", maxLineBytes) + "\"}\n", "longer than"},
		{ev(1) + `{"ok":tr`, "cut short"},
	} {
		a := newAnswerReader(strings.NewReader(tc.in))
		var err error
		for err == nil {
			var r *response
			if _, r, err = a.next(); r != nil {
				break
			}
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("answer %.60q...: got %v, want %q", tc.in, err, tc.want)
		}
	}
}

// FuzzDecodeLine: no line makes the decoder panic; an event it accepts is
// within its schema and survives a round trip.
func FuzzDecodeLine(f *testing.F) {
	f.Add(eventLine(f, eventOf("snapshot", goodEvent())))
	f.Add([]byte(`{"v":1,"type":"result","ok":true,"text":"x","summary":{"name":"s","epoch":1,"vms":[]}}`))
	f.Add([]byte(`{"ok":true}`))
	f.Add([]byte(`{"type":"progress","v":1,"phase":"paused","vm":"b","op":"restore","seq":9,"at":"2026-01-01T00:00:00Z"}`))
	f.Fuzz(func(t *testing.T, line []byte) {
		e, r, err := decodeLine(line)
		if err != nil {
			if e != nil || r != nil {
				t.Fatalf("error %v with a value", err)
			}
			return
		}
		if (e == nil) == (r == nil) {
			t.Fatalf("want exactly one of event and result: %v %v", e, r)
		}
		if e == nil {
			return
		}
		if err := e.check(); err != nil {
			t.Fatalf("accepted event fails its check: %v", err)
		}
		e2, _, err := decodeLine(eventLine(t, *e))
		if err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		if !e2.At.Equal(e.At) {
			t.Fatalf("at changed in round trip: %v, %v", e.At, e2.At)
		}
		e2.At = e.At
		if *e2 != *e {
			t.Fatalf("round trip: %+v, want %+v", *e2, *e)
		}
	})
}

// TestCallHostileSupervisor: a "supervisor" that answers with an endless
// line or an unknown event type makes call fail with a clear error rather
// than read forever.
func TestCallHostileSupervisor(t *testing.T) {
	dir, err := os.MkdirTemp("", "vnsp-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	for _, tc := range []struct {
		name  string
		serve func(c net.Conn)
		want  string
	}{
		{"endless", func(c net.Conn) {
			b := bytes.Repeat([]byte("x"), 64<<10)
			for {
				if _, err := c.Write(b); err != nil {
					return
				}
			}
		}, "longer than"},
		{"unknown type", func(c net.Conn) { c.Write([]byte(`{"type":"shell","cmd":"rm -rf /"}` + "\n")) }, `unknown "shell"`},
		{"events unasked", func(c net.Conn) {
			c.Write(append(eventLine(t, eventOf("snapshot", goodEvent())), '\n'))
		}, "none asked for"},
	} {
		sock := filepath.Join(dir, "s.sock")
		ln, err := net.Listen("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
			bufio.NewReader(c).ReadBytes('\n')
			tc.serve(c)
		}()
		var onEvent func(progressEvent)
		if tc.name != "events unasked" {
			onEvent = func(progressEvent) {}
		}
		_, err = call(context.Background(), sock, request{Op: "snapshot", Progress: progressVersion}, onEvent)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error with %q", tc.name, err, tc.want)
		}
		ln.Close()
		<-done
		os.Remove(sock)
	}
}
