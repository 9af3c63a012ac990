// Command clustertimeline draws a snapshot's timeline, per VM its live
// copy, pause and memory-sink flush, from the progress events that the
// cluster test (cluster/e2e, VNSNAP_TIMELINE=FILE) records of a real run:
//
//	clustertimeline -in FILE -out DIR -name NAME -title TITLE
//
// writes DIR/NAME.png and DIR/NAME.svg (gonum/plot, via package results).
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/vnsnap/vnsnap/realbackend"
	"github.com/vnsnap/vnsnap/results"
)

// recording is what cluster/e2e writes.
type recording struct {
	Start  time.Time
	Epoch  uint32
	Hosts  map[string]string // VM -> host
	Events []realbackend.Progress
}

func main() {
	in := flag.String("in", "", "progress events (JSON, from cluster/e2e)")
	out := flag.String("out", ".", "output directory")
	name := flag.String("name", "cluster-timeline", "figure name")
	title := flag.String("title", "Three-host VNE snapshot (20 ms, 1 % loss between hosts)", "figure title")
	flag.Parse()
	if err := run(*in, *out, *name, *title); err != nil {
		fmt.Fprintln(os.Stderr, "clustertimeline:", err)
		os.Exit(1)
	}
}

func run(in, out, name, title string) error {
	b, err := os.ReadFile(in)
	if err != nil {
		return err
	}
	var rec recording
	if err := json.Unmarshal(b, &rec); err != nil {
		return fmt.Errorf("%s: %w", in, err)
	}
	tl, err := Timeline(rec.Events, rec.Hosts)
	if err != nil {
		return fmt.Errorf("%s: %w", in, err)
	}
	tl.Title = title
	return results.SaveFigure(out, name, tl)
}

// The phases drawn, in legend order.
const (
	live = iota
	paused
	flush
)

// Timeline turns a snapshot's progress events into a chart: per VM, the
// live copy (first live-copy event to the pause), the pause (to the
// resume) and the flush of its memory-sink image (flushing to flushed).
// hosts, if set, labels each VM with its host.
func Timeline(events []realbackend.Progress, hosts map[string]string) (*results.Timeline, error) {
	type marks struct{ live, paused, resumed, flushing, flushed time.Duration }
	var order []string
	seen := map[string]*marks{}
	first := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	for _, e := range events {
		m := seen[e.VM]
		if m == nil {
			m = &marks{}
			seen[e.VM] = m
			order = append(order, e.VM)
		}
		at := e.Elapsed + 1 // 0 means unset
		switch e.Phase {
		case realbackend.PhaseLiveCopy:
			first(&m.live, at)
		case realbackend.PhasePaused:
			first(&m.paused, at)
		case realbackend.PhaseResumed:
			first(&m.resumed, at)
		case realbackend.PhaseFlushing:
			first(&m.flushing, at)
		case realbackend.PhaseFlushed:
			first(&m.flushed, at)
		}
	}
	tl := &results.Timeline{XLabel: "time since the snapshot started (s)", Phases: []string{"live copy", "paused", "flush to store"}}
	sec := func(d time.Duration) float64 { return (d - 1).Seconds() }
	for _, vm := range order {
		m := seen[vm]
		if m.paused == 0 || m.resumed == 0 {
			return nil, fmt.Errorf("vm %s: no pause and resume in the events", vm)
		}
		row := results.TimelineRow{Name: vm}
		if h := hosts[vm]; h != "" {
			row.Name = vm + " (" + h + ")"
		}
		if m.live != 0 {
			row.Bars = append(row.Bars, results.TimelineBar{Phase: live, From: sec(m.live), To: sec(m.paused)})
		}
		row.Bars = append(row.Bars, results.TimelineBar{Phase: paused, From: sec(m.paused), To: sec(m.resumed)})
		if m.flushing != 0 && m.flushed != 0 {
			row.Bars = append(row.Bars, results.TimelineBar{Phase: flush, From: sec(m.flushing), To: sec(m.flushed)})
		}
		tl.Rows = append(tl.Rows, row)
	}
	return tl, nil
}
