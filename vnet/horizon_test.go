package vnet

import (
	"testing"
	"time"
)

// TestCutAtHorizon checks that logs flushed one after another are cut at
// the earliest last flush mark, so a delivery whose send reached its
// switch's log only after that log was flushed is left out.
func TestCutAtHorizon(t *testing.T) {
	start := time.Unix(100, 0)
	ms := time.Millisecond
	a := logStream{h: LogHeader{Start: start}, es: []LogEntry{
		{Time: 1 * ms, Action: LogSend, Frame: 1}, {Time: 5 * ms, Action: LogMark},
		{Time: 6 * ms, Action: LogSend, Frame: 2}, // sent after a's flush: not in the captured file in reality
	}}
	b := logStream{h: LogHeader{Start: start.Add(ms)}, es: []LogEntry{
		{Time: 1 * ms, Action: LogDeliver, Frame: 1}, {Time: 6 * ms, Action: LogDeliver, Frame: 2},
		{Time: 7 * ms, Action: LogMark},
	}}
	ss := []logStream{a, b}
	cutAtHorizon(ss)
	if got := len(ss[0].es); got != 2 {
		t.Errorf("log a keeps %d entries, want 2 (up to its mark at 5 ms)", got)
	}
	if got := len(ss[1].es); got != 1 {
		t.Errorf("log b keeps %d entries, want 1 (its delivery at 7 ms absolute is past the 5 ms horizon)", got)
	}
	// Without marks in every log nothing is cut.
	c := []logStream{{h: LogHeader{Start: start}, es: []LogEntry{{Time: ms, Action: LogSend, Frame: 1}}}, b}
	cutAtHorizon(c)
	if len(c[0].es) != 1 || len(c[1].es) != 3 {
		t.Errorf("logs without marks were cut: %d and %d entries, want 1 and 3", len(c[0].es), len(c[1].es))
	}
}
