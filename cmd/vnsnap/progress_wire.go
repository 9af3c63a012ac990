package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/vnsnap/vnsnap/realbackend"
	"github.com/vnsnap/vnsnap/vne"
)

// The progress stream of the control socket, version 1.
//
// A client that wants progress sends "progress": 1 in its request (the
// schema version it reads). The supervisor then answers with zero or more
// event lines, then one result line, each one JSON object ending in '\n'.
// `vnsnap snapshot --json` and `vnsnap restore --json` print the same lines
// on stdout, so scripts read what the supervisor sends, checked.
//
// An event line (type "progress") is one VM's progress, whose fields are
// all present:
//
//	{"v":1,"type":"progress","op":"snapshot","seq":7,"vm":"a","phase":"live-copy","pass":2,
//	 "bytes":73400320,"total":100663296,"flush_bytes":0,"flush_total":0,
//	 "at":"2026-12-02T04:20:01.123456789Z","elapsed_ns":1523000000,"dropped":0}
//
// Its fields:
//
//   - op: "snapshot" or "restore".
//   - seq: numbers the events of one request from 1, increasing.
//   - vm: the VM's name (a VNE file's VM name).
//   - phase: one of live-copy, paused, final-copy, background-copy, copied,
//     resumed, flushing, flushed (snapshot); restoring, loaded, resumed
//     (restore). It is the last step the VM reached (realbackend.Phase).
//   - pass: the live pass in progress, or the last one (0: none).
//   - bytes: the VM's image stream written to its sink (snapshot) or read
//     from the store (restore) so far; it never decreases for a VM.
//   - total: what bytes heads for when known (0: unknown): the stored
//     stream's length for a restore, the guest's memory for a snapshot (a
//     live copy sends more: dirtied pages again).
//   - flush_bytes, flush_total: a memory-sink image written to the store,
//     and its size (0 before the flush).
//   - at: when the event was taken (RFC 3339); elapsed_ns: since the
//     operation began.
//   - dropped: how many of this VM's phase changes were merged into later
//     events because the reader was slow (a VM's newest state always
//     arrives; byte updates within a phase merge without being counted).
//
// The result line (type "result") ends the answer:
//
//	{"v":1,"type":"result","ok":true,"text":"snapshot s1: ...","summary":{...}}
//
// with "error" set when ok is false, text the human report, and summary
// (resultSummary) its figures. A supervisor of before version 1 answers
// with the result line alone, without v and type; the client accepts that.
//
// Everything the client reads is untrusted: a line is at most maxLineBytes,
// an event at most maxEventBytes, unknown fields and values out of range are
// errors naming the field, and seq must increase.
const progressVersion = 1

// Bounds of what the client reads from the supervisor.
const (
	maxLineBytes  = 1 << 20 // the result line carries the text report
	maxEventBytes = 4 << 10
	maxEventVMs   = 4096    // distinct VMs in one answer
	maxCount      = 1 << 50 // bytes: a petabyte is no VM's image
	maxPass       = 1 << 20
)

// progressEvent is one event line (see the schema above).
type progressEvent struct {
	V          int       `json:"v"`
	Type       string    `json:"type"`
	Op         string    `json:"op"`
	Seq        uint64    `json:"seq"`
	VM         string    `json:"vm"`
	Phase      string    `json:"phase"`
	Pass       int       `json:"pass"`
	Bytes      int64     `json:"bytes"`
	Total      int64     `json:"total"`
	FlushBytes int64     `json:"flush_bytes"`
	FlushTotal int64     `json:"flush_total"`
	At         time.Time `json:"at"`
	ElapsedNS  int64     `json:"elapsed_ns"`
	Dropped    int       `json:"dropped"`
}

// resultSummary is the result line's figures.
type resultSummary struct {
	Name      string `json:"name"`
	Algorithm string `json:"algorithm,omitempty"`
	Epoch     uint64 `json:"epoch"`
	// Replayed is a restore's count of in-transit frames replayed.
	Replayed int        `json:"replayed,omitempty"`
	VMs      []resultVM `json:"vms"`
}

// resultVM is one VM's figures in a result.
type resultVM struct {
	VM string `json:"vm"`
	// Sink, Rounds, StreamBytes and DowntimeNS are a snapshot's: the VM's
	// sink, its copy passes (the final one included), its image stream's
	// size and its downtime as the coordinator measured it.
	Sink        string `json:"sink,omitempty"`
	Rounds      int    `json:"rounds,omitempty"`
	StreamBytes int64  `json:"stream_bytes,omitempty"`
	DowntimeNS  int64  `json:"downtime_ns,omitempty"`
}

func eventOf(op string, p realbackend.Progress) progressEvent {
	return progressEvent{
		V: progressVersion, Type: "progress", Op: op, Seq: p.Seq, VM: p.VM, Phase: string(p.Phase), Pass: p.Pass,
		Bytes: p.Bytes, Total: p.Total, FlushBytes: p.FlushBytes, FlushTotal: p.FlushTotal,
		At: p.At.UTC(), ElapsedNS: int64(p.Elapsed), Dropped: p.Dropped,
	}
}

// check reports the first field of e out of its schema.
func (e *progressEvent) check() error {
	bad := func(field string, v any) error { return fmt.Errorf("progress event: %s: bad value %v", field, v) }
	switch {
	case e.V != progressVersion:
		return fmt.Errorf("progress event: v: version %d, this vnsnap reads %d", e.V, progressVersion)
	case e.Type != "progress":
		return bad("type", e.Type)
	case e.Op != "snapshot" && e.Op != "restore":
		return bad("op", e.Op)
	case e.Seq == 0:
		return bad("seq", e.Seq)
	case !slices.Contains(realbackend.Phases, realbackend.Phase(e.Phase)):
		return bad("phase", fmt.Sprintf("%q", e.Phase))
	case e.Pass < 0 || e.Pass > maxPass:
		return bad("pass", e.Pass)
	case e.Bytes < 0 || e.Bytes > maxCount:
		return bad("bytes", e.Bytes)
	case e.Total < 0 || e.Total > maxCount:
		return bad("total", e.Total)
	case e.FlushTotal < 0 || e.FlushTotal > maxCount:
		return bad("flush_total", e.FlushTotal)
	case e.FlushBytes < 0 || e.FlushBytes > e.FlushTotal:
		return bad("flush_bytes", e.FlushBytes)
	case e.At.IsZero():
		return bad("at", "zero time")
	case e.ElapsedNS < 0:
		return bad("elapsed_ns", e.ElapsedNS)
	case e.Dropped < 0:
		return bad("dropped", e.Dropped)
	}
	if err := vne.CheckName("VM", e.VM); err != nil {
		return fmt.Errorf("progress event: vm: %w", err)
	}
	return nil
}

// strict decodes b into v refusing unknown fields and trailing data.
func strict(b []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return err
	}
	if d.More() {
		return errors.New("data after the object")
	}
	return nil
}

// decodeLine decodes one line of a supervisor's answer: an event (checked)
// or the result. A line without a type is a version-0 result.
func decodeLine(line []byte) (*progressEvent, *response, error) {
	var probe struct {
		Type string `json:"type"`
	}
	if err := json.Unmarshal(line, &probe); err != nil {
		return nil, nil, fmt.Errorf("decode answer line: %w", err)
	}
	switch probe.Type {
	case "progress":
		if len(line) > maxEventBytes {
			return nil, nil, fmt.Errorf("progress event: %d bytes, more than %d", len(line), maxEventBytes)
		}
		var e progressEvent
		if err := strict(line, &e); err != nil {
			return nil, nil, fmt.Errorf("progress event: %w", err)
		}
		if err := e.check(); err != nil {
			return nil, nil, err
		}
		return &e, nil, nil
	case "result", "":
		var r response
		if err := strict(line, &r); err != nil {
			return nil, nil, fmt.Errorf("decode answer: %w", err)
		}
		if probe.Type == "result" && r.V != progressVersion {
			return nil, nil, fmt.Errorf("decode answer: v: version %d, this vnsnap reads %d", r.V, progressVersion)
		}
		return nil, &r, nil
	default:
		return nil, nil, fmt.Errorf("decode answer line: type: unknown %q", probe.Type)
	}
}

// readLine reads one '\n'-terminated line of at most max bytes.
func readLine(r *bufio.Reader, max int) ([]byte, error) {
	var line []byte
	for {
		frag, err := r.ReadSlice('\n')
		if len(line)+len(frag) > max+1 {
			return nil, fmt.Errorf("answer line longer than %d bytes", max)
		}
		line = append(line, frag...)
		switch {
		case err == nil:
			return line[:len(line)-1], nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF) && len(line) > 0:
			return nil, errors.New("answer line cut short")
		default:
			return nil, err
		}
	}
}

// answerReader reads a supervisor's answer: events, then the result.
type answerReader struct {
	r       *bufio.Reader
	lastSeq uint64
	vms     map[string]bool
}

func newAnswerReader(r io.Reader) *answerReader {
	return &answerReader{r: bufio.NewReader(r), vms: map[string]bool{}}
}

// next returns the next event, or the result (which ends the answer).
func (a *answerReader) next() (*progressEvent, *response, error) {
	line, err := readLine(a.r, maxLineBytes)
	if err != nil {
		return nil, nil, err
	}
	e, r, err := decodeLine(line)
	if err != nil || e == nil {
		return nil, r, err
	}
	if e.Seq <= a.lastSeq {
		return nil, nil, fmt.Errorf("progress event: seq: %d after %d, want increasing", e.Seq, a.lastSeq)
	}
	a.lastSeq = e.Seq
	if !a.vms[e.VM] {
		if len(a.vms) >= maxEventVMs {
			return nil, nil, fmt.Errorf("progress event: vm: more than %d VMs", maxEventVMs)
		}
		a.vms[e.VM] = true
	}
	return e, nil, nil
}
