package experiments

import (
	"cmp"
	"fmt"
	"math"
	"slices"

	"github.com/vnsnap/vnsnap/results"
	sim "github.com/vnsnap/vnsnap/simbackend"
)

type e4Config struct {
	Env
	VMs       int      `json:"vms"`
	Hosts     int      `json:"hosts"`
	Traffic   string   `json:"traffic"`
	MemMiB    []int    `json:"mem_mib"`
	DirtyMiBs float64  `json:"dirty_mibps"`
	Variants  []string `json:"variants"`
	// Timeline is the variant and memory size of the run whose TCP senders
	// are traced (seed 1); TimelineFlows is how many flows to plot.
	Timeline      string `json:"timeline_variant"`
	TimelineMiB   int    `json:"timeline_mem_mib"`
	TimelineFlows int    `json:"timeline_flows"`
}

func e4() *Experiment {
	return &Experiment{
		Name:  "e4-backoff",
		Title: "E4: TCP backoff, the price of consistency",
		About: "All-to-all TCP between the VMs of a VNE whose VMs dirty memory at different rates (spread 0.9), so " +
			"their snapshot points spread over a window. VNsnap drops post-snapshot frames bound for pre-snapshot " +
			"VMs; TCP senders time out and back off. Memory size varies the window; the stall is the longest gap in " +
			"any stream's in-order delivery. VNsnap-log holds such frames instead of dropping them. TCP follows Linux's " +
			"defaults: delayed ACKs (one ACK per two full segments, so about a quarter fewer frames meet the colour " +
			"rule and fewer are dropped than with an ACK per segment), SACK recovery with PRR, and a downlink per host " +
			"shared by every sender into it; the stalls themselves come from RTOs, which neither option avoids.",
		Extra: []string{"timeline"},
		New: func(full bool) Config {
			c := &e4Config{Env: defaultEnv(), VMs: 8, Hosts: 4, Traffic: "all-to-all", MemMiB: []int{64, 128, 256, 512, 1024},
				DirtyMiBs: 40, Variants: []string{"vnsnap/disk", "vnsnap/memory", "vnsnap-log/disk"},
				Timeline: "vnsnap/disk", TimelineMiB: 512, TimelineFlows: 3}
			c.DirtySpread, c.RunOnMS = 0.9, 2000
			if full {
				c.MemMiB = []int{64, 128, 256, 512, 1024, 2048}
				c.VMs, c.Hosts, c.Seeds = 16, 4, 5
			}
			return c
		},
		Analyze: analyzeE4,
	}
}

// tcpRec is one traced TCP sender event (exported fields, so a shard can
// store it).
type tcpRec struct {
	At      float64 `json:"at_ms"`
	Kind    string  `json:"kind"`
	Backoff int     `json:"backoff"`
	Cwnd    float64 `json:"cwnd"`
}

func (c *e4Config) Plan(seeds []uint64) ([]Job, error) {
	vs, err := parseVariants(c.Variants)
	if err != nil {
		return nil, err
	}
	tv, err := parseVariants([]string{c.Timeline})
	if err != nil {
		return nil, fmt.Errorf("timeline: %w", err)
	}
	var jobs []Job
	for _, v := range vs {
		for _, m := range c.MemMiB {
			for _, s := range seeds {
				sc := c.base(s)
				sc.VMs, sc.Hosts, sc.Traffic = c.VMs, c.Hosts, c.Traffic
				sc.MemBytes, sc.DirtyRate = int64(m)*mib, c.DirtyMiBs*mib
				v.apply(&sc)
				jobs = append(jobs, Job{Labels: []any{v.Algo.String(), v.Sink.String(), m}, Seed: s, Sim: sc})
			}
		}
	}
	// The timeline run: one more run, with the TCP hook.
	sc := c.base(seeds[0])
	sc.VMs, sc.Hosts, sc.Traffic = c.VMs, c.Hosts, c.Traffic
	sc.MemBytes, sc.DirtyRate = int64(c.TimelineMiB)*mib, c.DirtyMiBs*mib
	tv[0].apply(&sc)
	jobs = append(jobs, Job{Labels: []any{"timeline"}, Seed: seeds[0], Sim: sc, Run: func(cfg sim.Config) (*sim.Result, any, error) {
		flows := map[uint32][]tcpRec{}
		cfg.OnTCP = func(e sim.TCPEvent) {
			flows[e.Flow] = append(flows[e.Flow], tcpRec{float64(e.At) / 1e6, e.Kind, e.Backoff, e.CwndBytes})
		}
		r, err := sim.Run(cfg)
		return r, flows, err
	}, NewExtra: func() any { return &map[uint32][]tcpRec{} }})
	return jobs, nil
}

func (c *e4Config) Tables(jobs []Job, outs []Outcome) Tables {
	t := results.NewTable(results.Str("algo"), results.Str("sink"), results.Int("mem_mib"), results.Int("seed"), results.Str("state"),
		results.Float("window_ms", 3), results.Float("max_stall_ms", 3), results.Int("dropped"), results.Int("timeouts"),
		results.Int("max_backoff"), results.Float("max_downtime_ms", 3))
	tl := results.NewTable(results.Int("flow"), results.Float("t_ms", 3), results.Str("kind"), results.Int("backoff"),
		results.Float("cwnd_kib", 1), results.Float("snap_start_ms", 3), results.Float("window_start_ms", 3), results.Float("window_ms", 3))
	for i, j := range jobs {
		r := outs[i].Res
		if j.Run != nil {
			c.timeline(tl, r, outs[i].Extra.(map[uint32][]tcpRec))
			continue
		}
		t.Add(append(append([]any{}, j.Labels...), j.Seed, r.State, r.WindowMS, r.MaxStallMS, r.Dropped, r.Timeouts,
			r.MaxBackoff, maxOf(perVM(r, downtime)))...)
	}
	return Tables{"": t, "timeline": tl}
}

// timeline keeps the flows that backed off most (ties: lowest flow id),
// from half a second before the snapshot until every one has sent again
// for a second, thinning sends and ACKs to one per 5 ms.
func (c *e4Config) timeline(tl *results.Table, r *sim.Result, flows map[uint32][]tcpRec) {
	ids := make([]uint32, 0, len(flows))
	for id := range flows {
		ids = append(ids, id)
	}
	maxB := func(id uint32) int {
		m := 0
		for _, e := range flows[id] {
			m = max(m, e.Backoff)
		}
		return m
	}
	slices.SortFunc(ids, func(a, b uint32) int { return cmp.Or(cmp.Compare(maxB(b), maxB(a)), cmp.Compare(a, b)) })
	ids = ids[:min(len(ids), c.TimelineFlows)]
	slices.Sort(ids)
	start := c.WarmupMS
	var winStart float64 = math.NaN()
	if len(r.Snaps) > 0 {
		start = r.Snaps[0].StartMS
	}
	// The window starts at the first snapshot point.
	if len(r.Snaps) > 0 && r.Snaps[0].State == "committed" {
		winStart = r.Snaps[0].FirstPointMS
	}
	end := start + r.TotalMS + r.MaxStallMS + 1000
	for _, id := range ids {
		last := math.Inf(-1)
		for _, e := range flows[id] {
			if e.At < start-500 || e.At > end {
				continue
			}
			if (e.Kind == "send" || e.Kind == "ack") && e.At-last < 5 {
				continue
			}
			last = e.At
			tl.Add(int(id), e.At, e.Kind, e.Backoff, e.Cwnd/1024, start, winStart, r.WindowMS)
		}
	}
}

func analyzeE4(ts Tables) (Analysis, error) {
	t := withVariant(ts.Main())
	var a Analysis
	a.Figures = append(a.Figures, Fig{
		Name: "e4-stall", Figure: &results.Line{
			Title: "Application stall against snapshot window", XLabel: "window (ms)", YLabel: "longest stream stall (ms)",
			LogX: true, LogY: true, Bars: results.NoBars, NoLines: true, Diagonal: true,
			Series: scatter(t, "variant", "window_ms", "max_stall_ms"), Legend: results.TopLeft},
		Caption: "Figure E4a: each point is one run (memory sizes 64 MiB and up, every seed); the dashed line is stall = window.",
		Text:    e4StallText(t),
	}, Fig{
		Name: "e4-dropped", Figure: &results.Line{
			Title: "Frames dropped by the colour rule against memory size", XLabel: "VM memory (MiB)", YLabel: "dropped frames",
			LogX: true, Series: series(t, "variant", "mem_mib", "dropped"), Legend: results.TopLeft},
		Caption: "Figure E4b: post-snapshot frames dropped because their receiver was still pre-snapshot, mean and 95 % CI over seeds.",
		Text:    e4DropText(t),
	})
	if tl := ts["timeline"]; tl != nil && len(tl.Rows) > 0 {
		a.Figures = append(a.Figures, Fig{
			Name: "e4-timeline", Figure: timelineFig(tl),
			Caption: "Figure E4c: congestion window of the flows that backed off most in one run (seed 1), around the snapshot; crosses mark retransmission timeouts.",
			Text:    e4TimelineText(tl),
		})
	}
	a.Summary = summarize(t, []string{"variant", "mem_mib"},
		stat{"window_ms", "window ms", 1, mean}, stat{"max_stall_ms", "max stall ms", 0, mean},
		stat{"dropped", "dropped", 0, mean}, stat{"timeouts", "timeouts", 0, mean}, stat{"max_backoff", "max backoff", 0, maxOf})
	return a, nil
}

// scatter returns one point per row (a single sample each).
func scatter(t *results.Table, seriesCol, xCol, yCol string) []results.Series {
	var out []results.Series
	for _, name := range t.Distinct(seriesCol) {
		sub := t.Where(seriesCol, name)
		s := results.Series{Name: name}
		for r := range sub.Rows {
			s.Points = append(s.Points, results.Point{X: sub.Float(r, xCol), Ys: []float64{sub.Float(r, yCol)}})
		}
		out = append(out, s)
	}
	return out
}

func timelineFig(tl *results.Table) results.Figure {
	l := &results.Line{Title: "TCP congestion window around a snapshot (VNsnap, disk sink)", XLabel: "time since snapshot start (ms)",
		YLabel: "congestion window (KiB)", LogY: true, Bars: results.NoBars, Legend: results.TopRight}
	t0 := tl.Float(0, "snap_start_ms")
	from := t0
	if ws := tl.Float(0, "window_start_ms"); !math.IsNaN(ws) {
		from = ws - 500 // zoom on the window and what follows
	}
	tl = tl.Filter(func(r int) bool { return tl.Float(r, "t_ms") >= from })
	for _, f := range tl.Distinct("flow") {
		sub := tl.Where("flow", f)
		s := results.Series{Name: "flow " + f}
		for r := range sub.Rows {
			s.Points = append(s.Points, results.Point{X: sub.Float(r, "t_ms") - t0, Ys: []float64{sub.Float(r, "cwnd_kib")}})
		}
		l.Series = append(l.Series, s)
	}
	to := results.Series{Name: "timeout", Marks: true}
	for r := range tl.Rows {
		if tl.String(r, "kind") == "timeout" {
			to.Points = append(to.Points, results.Point{X: tl.Float(r, "t_ms") - t0, Ys: []float64{tl.Float(r, "cwnd_kib")}})
		}
	}
	if len(to.Points) > 0 {
		l.Series = append(l.Series, to)
	}
	return l
}

func e4StallText(t *results.Table) string {
	var parts []string
	for _, v := range t.Distinct("variant") {
		w, s := values(t, "window_ms", "variant", v), values(t, "max_stall_ms", "variant", v)
		over := 0
		for i := range w {
			if s[i] > w[i] {
				over++
			}
		}
		parts = append(parts, fmt.Sprintf("%s: median window %s, median stall %s, stall longer than the window in %d of %d runs",
			v, dur(median(w)), dur(median(s)), over, len(w)))
	}
	s1 := "Per variant, " + joinSemi(parts) + "."
	d, m := median(values(t, "max_stall_ms", "variant", "vnsnap/disk")), median(values(t, "max_stall_ms", "variant", "vnsnap/memory"))
	s2 := fmt.Sprintf("Dropping red-to-white frames makes TCP wait for retransmission timeouts that double while the window is open, so the stall follows the window: %s with the disk sink against %s with the memory sink (%s), the paper's argument for short, aligned per-VM snapshots.",
		dur(d), dur(m), times(d, m))
	if d <= m {
		s2 = fmt.Sprintf("Here the disk sink's stall (%s) is not longer than the memory sink's (%s), against the paper's argument.", dur(d), dur(m))
	}
	return sentences(s1, s2)
}

func joinSemi(p []string) string {
	out := ""
	for i, s := range p {
		if i > 0 {
			out += "; "
		}
		out += s
	}
	return out
}

func e4DropText(t *results.Table) string {
	d, m, l := mean(values(t, "dropped", "variant", "vnsnap/disk")), mean(values(t, "dropped", "variant", "vnsnap/memory")), mean(values(t, "dropped", "variant", "vnsnap-log/disk"))
	bo := maxOf(values(t, "max_backoff", "variant", "vnsnap/disk"))
	s := fmt.Sprintf("Averaged over memory sizes, the colour rule drops %s frames per snapshot with the disk sink and %s with the memory sink; TCP backs off up to %s times (RTO x%s) with the disk sink.",
		num(math.Round(d)), num(math.Round(m)), num(bo), num(math.Pow(2, bo)))
	if !math.IsNaN(l) {
		s += fmt.Sprintf(" VNsnap-log drops %s: it holds those frames instead, which is why it needs no retransmission.", num(math.Round(l)))
	}
	return s
}

func e4TimelineText(tl *results.Table) string {
	t0 := tl.Float(0, "snap_start_ms")
	w := tl.Float(0, "window_ms")
	n, maxb, last := 0, 0.0, math.Inf(-1)
	for r := range tl.Rows {
		if tl.String(r, "kind") == "timeout" {
			n++
			maxb = max(maxb, tl.Float(r, "backoff"))
			last = max(last, tl.Float(r, "t_ms")-t0)
		}
	}
	if n == 0 {
		return fmt.Sprintf("The traced flows never timed out: the %s window was too short to make TCP back off.", dur(w))
	}
	return fmt.Sprintf("The %s traced flows time out %d times in all, backing off to level %s, the last timeout %s after the snapshot started while the window lasted %s: each timeout collapses the window to one segment and doubles the wait.",
		num(float64(len(tl.Distinct("flow")))), n, num(maxb), dur(last), dur(w))
}
