package experiments

import (
	"fmt"

	"github.com/vnsnap/vnsnap/results"
)

type e8Config struct {
	Env
	VMs        []int    `json:"vms"`
	VMsPerHost int      `json:"vms_per_host"`
	Traffic    string   `json:"traffic"`
	MemMiB     int      `json:"mem_mib"`
	DirtyMiBs  float64  `json:"dirty_mibps"`
	Variants   []string `json:"variants"`
}

func e8() *Experiment {
	return &Experiment{
		Name:  "e8-scale",
		Title: "E8: scale",
		About: "VNEs of 8 VMs and up (4 per host, ring TCP traffic, small VMs), one snapshot each: the window and " +
			"total duration as the VNE grows, and the simulator's own cost (wall time and events per second on " +
			"this machine; these two columns are not deterministic and are left out of golden outputs).",
		New: func(full bool) Config {
			c := &e8Config{Env: defaultEnv(), VMs: []int{8, 16, 32, 64, 128, 256}, VMsPerHost: 4, Traffic: "ring",
				MemMiB: 64, DirtyMiBs: 20, Variants: []string{"vnsnap/memory", "vnsnap/disk"}}
			c.Seeds = 2
			if full {
				c.VMs = []int{8, 16, 32, 64, 128, 256, 512, 1024}
				c.Seeds = 3
			}
			return c
		},
		Analyze: analyzeE8,
	}
}

func (c *e8Config) Plan(seeds []uint64) ([]Job, error) {
	vs, err := parseVariants(c.Variants)
	if err != nil {
		return nil, err
	}
	if c.VMsPerHost < 1 {
		return nil, fmt.Errorf("vms_per_host: %d, want at least 1", c.VMsPerHost)
	}
	var jobs []Job
	for _, v := range vs {
		for _, n := range c.VMs {
			for _, s := range seeds {
				sc := c.base(s)
				sc.VMs, sc.Hosts, sc.Traffic = n, max(1, (n+c.VMsPerHost-1)/c.VMsPerHost), c.Traffic
				sc.MemBytes, sc.DirtyRate = int64(c.MemMiB)*mib, c.DirtyMiBs*mib
				v.apply(&sc)
				jobs = append(jobs, Job{Labels: []any{v.Algo.String(), v.Sink.String(), n, sc.Hosts}, Seed: s, Sim: sc})
			}
		}
	}
	return jobs, nil
}

func (c *e8Config) Tables(jobs []Job, outs []Outcome) Tables {
	t := results.NewTable(results.Str("algo"), results.Str("sink"), results.Int("vms"), results.Int("hosts"), results.Int("seed"),
		results.Str("state"), results.Float("window_ms", 3), results.Float("total_ms", 3), results.Float("max_downtime_ms", 3),
		results.Int("events"), results.Column{Name: "wall_s", Prec: 3, Volatile: true}, results.Column{Name: "events_per_s", Prec: 0, Volatile: true})
	for i, j := range jobs {
		r, o := outs[i].Res, outs[i]
		ev := r.Events + r.RestoreEvents
		t.Add(append(append([]any{}, j.Labels...), j.Seed, r.State, r.WindowMS, r.TotalMS, maxOf(perVM(r, downtime)),
			ev, o.WallSeconds, float64(ev)/max(o.WallSeconds, 1e-9))...)
	}
	return Tables{"": t}
}

func analyzeE8(ts Tables) (Analysis, error) {
	t := withVariant(ts.Main())
	var a Analysis
	a.Figures = append(a.Figures, Fig{
		Name: "e8-window", Figure: &results.Line{Title: "Snapshot window against VNE size", XLabel: "VMs", YLabel: "window (ms)",
			LogX: true, LogY: true, Series: series(t, "variant", "vms", "window_ms"), Legend: results.BottomRight},
		Caption: "Figure E8a: window from the first snapshot point to the last resume, mean and 95 % CI over seeds.",
		Text:    e8WindowText(t),
	}, Fig{
		Name: "e8-total", Figure: &results.Line{Title: "Total snapshot duration against VNE size", XLabel: "VMs", YLabel: "total duration (ms)",
			LogX: true, LogY: true, Series: series(t, "variant", "vms", "total_ms"), Legend: results.BottomRight},
		Caption: "Figure E8b: time from the snapshot's start until every image is saved.",
		Text:    e8TotalText(t),
	}, Fig{
		Name: "e8-simcost", Figure: &results.Line{Title: "Simulator wall time against VNE size", XLabel: "VMs", YLabel: "wall time per run (s)",
			LogX: true, LogY: true, Bars: results.MinMax, Series: series(t, "variant", "vms", "wall_s"), Legend: results.TopLeft},
		Caption: "Figure E8c: wall time of one simulated run on this machine (min and max over seeds; not deterministic).",
		Text:    e8CostText(t),
	})
	a.Summary = summarize(t, []string{"variant", "vms"}, stat{"window_ms", "window ms", 1, mean}, stat{"total_ms", "total ms", 0, mean},
		stat{"events", "events", 0, mean}, stat{"wall_s", "wall s", 2, mean}, stat{"events_per_s", "events/s", 0, mean})
	return a, nil
}

func sizes(t *results.Table) (string, string) {
	lo, hi := 1e18, 0.0
	for _, n := range t.Floats("vms") {
		lo, hi = min(lo, n), max(hi, n)
	}
	return num(lo), num(hi)
}

func e8WindowText(t *results.Table) string {
	lo, hi := sizes(t)
	w := func(v, n string) float64 { return mean(values(t, "window_ms", "variant", v, "vms", n)) }
	return fmt.Sprintf("From %s to %s VMs VNsnap-memory's window goes from %s to %s and VNsnap-disk's from %s to %s: with the VMs spread 4 per host, the window is set by the slowest host's copies, not by the number of hosts, so coordination by colouring scales.",
		lo, hi, dur(w("vnsnap/memory", lo)), dur(w("vnsnap/memory", hi)), dur(w("vnsnap/disk", lo)), dur(w("vnsnap/disk", hi)))
}

func e8TotalText(t *results.Table) string {
	lo, hi := sizes(t)
	tt := func(v, n string) float64 { return mean(values(t, "total_ms", "variant", v, "vms", n)) }
	return fmt.Sprintf("The total duration is %s at %s VMs and %s at %s VMs with the memory sink (%s with the disk sink at %s VMs).",
		dur(tt("vnsnap/memory", lo)), lo, dur(tt("vnsnap/memory", hi)), hi, dur(tt("vnsnap/disk", hi)), hi)
}

func e8CostText(t *results.Table) string {
	_, hi := sizes(t)
	sub := t.Where("vms", hi)
	return fmt.Sprintf("At %s VMs one run simulates %s events in %.2f s of wall time, %s events per second on this machine.",
		hi, num(mean(sub.Floats("events"))), mean(sub.Floats("wall_s")), num(mean(sub.Floats("events_per_s"))))
}
