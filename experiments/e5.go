package experiments

import (
	"fmt"
	"math"

	"github.com/vnsnap/vnsnap/results"
)

// Mode is how many snapshots a run takes: Snapshots 0 is the baseline.
type Mode struct {
	Name       string  `json:"name"`
	Snapshots  int     `json:"snapshots"`
	IntervalMS float64 `json:"interval_ms"`
}

type e5Config struct {
	Env
	VMs       int      `json:"vms"`
	Hosts     int      `json:"hosts"`
	Workloads []string `json:"workloads"`
	Modes     []Mode   `json:"modes"`
	Variants  []string `json:"variants"`
	// LinkByWorkload gives a workload its own host link bandwidth (Mbit/s),
	// overriding link_mbps: a swarm on 1 GbE finishes before the second
	// periodic snapshot starts, and a larger file makes every VM, and so
	// every snapshot, larger in proportion.
	LinkByWorkload map[string]float64 `json:"link_mbps_by_workload,omitempty"`
}

func e5() *Experiment {
	return &Experiment{
		Name:  "e5-slowdown",
		Title: "E5: application slowdown from snapshots",
		About: "An NPB kernel and a BitTorrent swarm run to completion with no snapshot, one snapshot, and periodic " +
			"snapshots, under each algorithm and sink; the completion time is compared with the same seed's run " +
			"without snapshots. Drops and backoff, pauses and the copy's competition for the disk all slow the workload. " +
			"The swarm's hosts have 200 Mbit/s links (the NPB kernel's keep 1 GbE): each VM holds the whole file, so a " +
			"larger file lengthens every snapshot as much as the download, and on 1 GbE the swarm would finish before " +
			"the second periodic snapshot starts. Snapshots start at the end of the warm-up and then every interval, or " +
			"as soon as the previous one has committed.",
		Extra: []string{"peers", "throughput", "snaps"},
		New: func(full bool) Config {
			c := &e5Config{Env: defaultEnv(), VMs: 8, Hosts: 4,
				Workloads:      []string{"npb:cg.A.x20", "bittorrent:256"},
				Modes:          []Mode{{"none", 0, 0}, {"one", 1, 0}, {"periodic", 3, 3000}},
				Variants:       []string{"vnsnap/disk", "vnsnap/memory", "vnsnap-log/disk", "stop-copy/disk", "cow/disk"},
				LinkByWorkload: map[string]float64{"bittorrent:256": 200}}
			c.Seeds = 2
			if full {
				c.Workloads = []string{"npb:cg.A.x20", "npb:ft.A.x10", "npb:lu.W.x20", "npb:is.A.x10", "bittorrent:512"}
				c.VMs, c.Hosts, c.Seeds = 16, 4, 3
				c.LinkByWorkload = map[string]float64{"bittorrent:512": 200}
			}
			return c
		},
		Analyze: analyzeE5,
	}
}

func (c *e5Config) Plan(seeds []uint64) ([]Job, error) {
	vs, err := parseVariants(c.Variants)
	if err != nil {
		return nil, err
	}
	var jobs []Job
	for _, w := range c.Workloads {
		for _, m := range c.Modes {
			vv := vs
			if m.Snapshots == 0 {
				vv = vs[:1] // a baseline takes no snapshot: one is enough
			}
			for _, v := range vv {
				for _, s := range seeds {
					sc := c.base(s)
					sc.VMs, sc.Hosts = c.VMs, c.Hosts
					if l, ok := c.LinkByWorkload[w]; ok && l > 0 {
						sc.Host.Link.Bandwidth = l * 1e6 / 8
					}
					if err := applyWorkload(&sc, w); err != nil {
						return nil, err
					}
					sc.Snapshots, sc.Interval = m.Snapshots, ms(m.IntervalMS)
					v.apply(&sc)
					algo, sink := v.Algo.String(), v.Sink.String()
					if m.Snapshots == 0 {
						algo, sink = "none", "none"
					}
					jobs = append(jobs, Job{Labels: []any{w, m.Name, m.Snapshots, algo, sink}, Seed: s, Sim: sc})
				}
			}
		}
	}
	return jobs, nil
}

func (c *e5Config) Tables(jobs []Job, outs []Outcome) Tables {
	t := results.NewTable(results.Str("workload"), results.Str("mode"), results.Int("snapshots"), results.Str("algo"), results.Str("sink"),
		results.Int("seed"), results.Float("app_done_ms", 3), results.Bool("app_ok"), results.Float("baseline_ms", 3),
		results.Float("slowdown_pct", 3), results.Int("committed"), results.Float("window_ms", 3), results.Int("dropped"), results.Int("timeouts"))
	pt := results.NewTable(results.Str("workload"), results.Str("mode"), results.Str("algo"), results.Str("sink"), results.Int("seed"),
		results.Int("peer"), results.Float("done_ms", 3))
	tt := results.NewTable(results.Str("workload"), results.Str("mode"), results.Str("algo"), results.Str("sink"), results.Int("seed"),
		results.Int("second"), results.Float("mbps", 3))
	st := results.NewTable(results.Str("workload"), results.Str("mode"), results.Str("algo"), results.Str("sink"), results.Int("seed"),
		results.Int("snap"), results.Str("state"), results.Float("start_ms", 3), results.Float("total_ms", 3), results.Float("window_ms", 3))
	base := map[string]float64{}
	for i, j := range jobs {
		if j.Labels[2].(int) == 0 {
			base[fmt.Sprint(j.Labels[0], j.Seed)] = outs[i].Res.AppDoneMS
		}
	}
	for i, j := range jobs {
		r := outs[i].Res
		b, ok := base[fmt.Sprint(j.Labels[0], j.Seed)]
		done := r.AppDoneMS
		if done < 0 {
			done = math.NaN()
		}
		slow := math.NaN()
		if ok && b > 0 {
			slow = (done - b) / b * 100
		}
		n, dropped, win := 0, 0, 0.0
		for _, s := range r.Snaps {
			if s.State == "committed" {
				n++
			}
			dropped += s.Dropped
			win = max(win, s.WindowMS)
		}
		t.Add(append(append([]any{}, j.Labels...), j.Seed, done, r.AppOK, b, slow, n, win, dropped, r.Timeouts)...)
		w, m, algo, sink := j.Labels[0], j.Labels[1], j.Labels[3], j.Labels[4]
		for p, d := range r.PeerDoneMS {
			if d < 0 {
				d = math.NaN() // never completed
			}
			pt.Add(w, m, algo, sink, j.Seed, p+1, d) // peer 0 is the seeder
		}
		for sec, v := range r.ThroughputMBps {
			tt.Add(w, m, algo, sink, j.Seed, sec, v)
		}
		for k, s := range r.Snaps {
			st.Add(w, m, algo, sink, j.Seed, k+1, s.State, s.StartMS, s.TotalMS, s.WindowMS)
		}
	}
	return Tables{"": t, "peers": pt, "throughput": tt, "snaps": st}
}

func analyzeE5(ts Tables) (Analysis, error) {
	t := withVariant(ts.Main())
	var a Analysis
	for _, w := range t.Distinct("workload") {
		sub := t.Where("workload", w)
		b := &results.Bars{Title: "Completion time with snapshots (" + w + ")", YLabel: "completion time (s)", Legend: results.TopLeft}
		base, extra := results.Sample{Name: "without snapshots"}, results.Sample{Name: "added by snapshots"}
		for _, m := range sub.Distinct("mode") {
			msub := sub.Where("mode", m)
			for _, v := range msub.Distinct("variant") {
				done := mean(values(msub, "app_done_ms", "variant", v)) / 1000
				bl := mean(values(msub, "baseline_ms", "variant", v)) / 1000
				label := v + " " + m
				if m == "none" {
					label = "no snapshot"
				}
				b.Categories = append(b.Categories, label)
				base.Values = append(base.Values, bl)
				extra.Values = append(extra.Values, max(0, done-bl))
			}
		}
		b.Stacks = []results.Sample{base, extra}
		a.Figures = append(a.Figures, Fig{Name: "e5-slowdown-" + slug(w), Figure: b,
			Caption: "Figure E5 (" + w + "): mean completion time over seeds, split into the run without snapshots and what the snapshots added.",
			Text:    e5Text(sub, w)})
	}
	a.Figures = append(a.Figures, e5SwarmFigs(ts)...)
	a.Summary = summarize(t.Filter(func(r int) bool { return t.String(r, "mode") != "none" }), []string{"workload", "mode", "variant"},
		stat{"app_done_ms", "done ms", 0, mean}, stat{"baseline_ms", "baseline ms", 0, mean}, stat{"slowdown_pct", "slowdown %", 1, mean},
		stat{"window_ms", "max window ms", 1, mean}, stat{"dropped", "dropped", 0, mean}, stat{"app_ok", "verified", 2, mean})
	return a, nil
}

func e5Text(t *results.Table, w string) string {
	sl := func(v, m string) float64 { return mean(values(t, "slowdown_pct", "variant", v, "mode", m)) }
	bl := mean(values(t, "app_done_ms", "mode", "none"))
	s1 := fmt.Sprintf("Without snapshots %s completes in %s; one snapshot slows it by %.1f %% with VNsnap-disk and %.1f %% with VNsnap-memory, periodic snapshots by %.1f %% and %.1f %%.",
		w, dur(bl), sl("vnsnap/disk", "one"), sl("vnsnap/memory", "one"), sl("vnsnap/disk", "periodic"), sl("vnsnap/memory", "periodic"))
	var s2 string
	if sc := sl("stop-copy/disk", "one"); !math.IsNaN(sc) {
		s2 = fmt.Sprintf("Stop-and-copy costs %.1f %% for one snapshot and copy-on-write %.1f %%.", sc, sl("cow/disk", "one"))
	}
	ok, n := 0, 0
	for r := range t.Rows {
		n++
		if t.String(r, "app_ok") == "true" {
			ok++
		}
	}
	s3 := fmt.Sprintf("%d of %d runs verified their own result.", ok, n)
	if sl("vnsnap/disk", "one") < sl("vnsnap/memory", "one") {
		s3 += " Unlike the paper's expectation, the disk sink slowed this workload less than the memory sink here."
	}
	return sentences(s1, s2, s3)
}
