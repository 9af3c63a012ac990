package experiments

import (
	"fmt"
	"math"
	"strings"

	"github.com/vnsnap/vnsnap/core"
	"github.com/vnsnap/vnsnap/results"
)

type e2Config struct {
	Env
	MemMiB   int       `json:"mem_mib"`
	Dirty    []float64 `json:"dirty_mibps"`
	Policies []string  `json:"policies"`
	Sinks    []string  `json:"sinks"`
}

func e2() *Experiment {
	return &Experiment{
		Name:  "e2-convergence",
		Title: "E2: snapshot duration and pre-copy convergence against dirty rate",
		About: "One VM, snapshotted live by VNsnap's pre-copy, with a dirty rate swept past the sink's bandwidth, under " +
			"each hypervisor's own pre-copy loop, as the real backends run it (Xen's libxc: stop once a pass finds under 50 dirty pages " +
			"or after 5 passes; QEMU: stop when the rest fits the 300 ms downtime limit at the measured bandwidth, else iterate; " +
			"QEMU auto-converge: also throttle the vCPU, 20 % then 10 % more each time the dirtying outpaces the copy twice) and both sinks. A snapshot that " +
			"does not finish by the deadline is aborted.",
		New: func(full bool) Config {
			c := &e2Config{Env: defaultEnv(), MemMiB: 512, Dirty: []float64{0, 8, 16, 32, 64, 128, 256, 512},
				Policies: []string{"xen", "qemu", "qemu-autoconverge"}, Sinks: []string{"disk", "memory"}}
			c.DirtySpread, c.DeadlineS, c.Seeds = 0, 60, 2
			if full {
				c.MemMiB, c.Seeds = 1024, 3
				c.Dirty = []float64{0, 4, 8, 16, 32, 64, 96, 128, 192, 256, 384, 512, 1024}
			}
			return c
		},
		Analyze: analyzeE2,
	}
}

func (c *e2Config) Plan(seeds []uint64) ([]Job, error) {
	var jobs []Job
	for _, p := range c.Policies {
		if _, err := core.ParsePolicy(p); err != nil {
			return nil, err
		}
		for _, sk := range c.Sinks {
			sink, err := core.ParseSink(sk)
			if err != nil {
				return nil, err
			}
			for _, d := range c.Dirty {
				for _, s := range seeds {
					sc := c.base(s)
					sc.VMs, sc.Hosts, sc.Traffic = 1, 1, "none"
					sc.MemBytes, sc.DirtyRate = int64(c.MemMiB)*mib, d*mib
					applyPolicy(&sc, p)
					sc.Algorithm, sc.Sink = core.VNsnap, sink
					jobs = append(jobs, Job{Labels: []any{p, sk, d}, Seed: s, Sim: sc})
				}
			}
		}
	}
	return jobs, nil
}

func (c *e2Config) Tables(jobs []Job, outs []Outcome) Tables {
	t := results.NewTable(results.Str("policy"), results.Str("sink"), results.Float("dirty_mibps", 1), results.Int("seed"),
		results.Str("state"), results.Float("duration_ms", 3), results.Float("downtime_ms", 3), results.Int("rounds"),
		results.Float("copied_mib", 3), results.Float("copied_ratio", 3), results.Int("max_throttle_pct"))
	for i, j := range jobs {
		r := outs[i].Res
		ok := committed(r) && len(r.VMs) == 1
		var v struct {
			dur, down, copied float64
			rounds, thr       int
		}
		if len(r.VMs) == 1 {
			x := r.VMs[0]
			v.dur, v.down, v.copied, v.rounds, v.thr = x.DurationMS, x.DowntimeMS, float64(x.BytesCopied)/mib, x.Rounds, x.MaxThrottle
		}
		if !ok {
			v.dur = r.TotalMS // an aborted snapshot ran until the deadline
		}
		t.Add(append(append([]any{}, j.Labels...), j.Seed, r.State, v.dur, nanUnless(ok, v.down), v.rounds,
			v.copied, v.copied/float64(c.MemMiB), v.thr)...)
	}
	return Tables{"": t}
}

func analyzeE2(ts Tables) (Analysis, error) {
	t := ts.Main()
	pv := results.NewTable(append([]results.Column{results.Str("policy/sink")}, t.Columns...)...)
	for r, row := range t.Rows {
		pv.Add(append([]any{t.String(r, "policy") + "/" + t.String(r, "sink")}, row...)...)
	}
	var a Analysis
	mem := 0.0
	if len(t.Rows) > 0 {
		mem = t.Float(0, "copied_mib") / t.Float(0, "copied_ratio")
	}
	a.Figures = append(a.Figures,
		Fig{Name: "e2-duration", Figure: &results.Line{
			Title: "Live snapshot duration against dirty rate", XLabel: "dirty rate (MiB/s)", YLabel: "snapshot duration (ms)",
			LogY: true, Series: series(pv, "policy/sink", "dirty_mibps", "duration_ms"), Legend: results.BottomRight},
			Caption: "Figure E2a: time from the start of the copy to the VM's resume (aborted snapshots: until the deadline), by stop policy and sink.",
			Text:    e2DurationText(t)},
		Fig{Name: "e2-downtime", Figure: &results.Line{
			Title: "Final pause against dirty rate", XLabel: "dirty rate (MiB/s)", YLabel: "downtime (ms)",
			LogY: true, Series: series(pv, "policy/sink", "dirty_mibps", "downtime_ms"), Legend: results.BottomRight},
			Caption: "Figure E2b: downtime of committed snapshots by stop policy and sink; missing points are aborted snapshots.",
			Text:    e2DowntimeText(t)},
		Fig{Name: "e2-copied", Figure: &results.Line{
			Title: "Data copied against dirty rate", XLabel: "dirty rate (MiB/s)", YLabel: "bytes copied / memory size",
			Series: series(pv, "policy/sink", "dirty_mibps", "copied_ratio"), Legend: results.TopLeft},
			Caption: fmt.Sprintf("Figure E2c: bytes copied as a multiple of the VM's %s MiB, by stop policy and sink.", num(mem)),
			Text:    e2CopiedText(t)},
	)
	a.Summary = summarize(pv, []string{"policy/sink", "dirty_mibps"},
		stat{"duration_ms", "duration ms", 0, mean}, stat{"downtime_ms", "downtime ms", 1, mean},
		stat{"rounds", "rounds", 0, mean}, stat{"copied_ratio", "copied / memory", 2, mean},
		stat{"max_throttle_pct", "max throttle %", 0, maxOf})
	return a, nil
}

// firstRate returns the lowest dirty rate at which cond holds for the
// policy and sink, as a string ("" if never).
func firstRate(t *results.Table, policy, sink string, cond func(r int) bool) string {
	best := math.Inf(1)
	for r := range t.Rows {
		if t.String(r, "policy") == policy && t.String(r, "sink") == sink && cond(r) {
			best = min(best, t.Float(r, "dirty_mibps"))
		}
	}
	if math.IsInf(best, 1) {
		return ""
	}
	return num(best)
}

func e2DurationText(t *results.Table) string {
	var parts []string
	for _, sink := range t.Distinct("sink") {
		rate := firstRate(t, "xen", sink, func(r int) bool {
			return t.String(r, "state") == "committed" && (t.Float(r, "rounds") >= 5 || t.Float(r, "copied_ratio") >= 3)
		})
		if rate == "" {
			parts = append(parts, fmt.Sprintf("with the %s sink Xen's pre-copy converges at every dirty rate tried", sink))
		} else {
			parts = append(parts, fmt.Sprintf("with the %s sink Xen's pre-copy stops converging at %s MiB/s (it ends on its round or volume limit)", sink, rate))
		}
	}
	s1 := "Below the sink's bandwidth, pre-copy converges and the duration is about one pass over memory; " + strings.Join(parts, ", and ") + "."
	var s2 string
	for _, sink := range t.Distinct("sink") {
		if rate := firstRate(t, "qemu", sink, func(r int) bool { return t.String(r, "state") != "committed" }); rate != "" {
			s2 += fmt.Sprintf("QEMU's policy, which only stops when the rest fits its downtime limit, never finishes with the %s sink from %s MiB/s and is aborted at the deadline. ", sink, rate)
		}
	}
	return sentences(s1, strings.TrimSpace(s2))
}

func e2DowntimeText(t *results.Table) string {
	hi := 0.0
	for _, d := range t.Floats("dirty_mibps") {
		hi = max(hi, d)
	}
	h := fmt.Sprintf("%.1f", hi)
	xd := mean(values(t, "downtime_ms", "policy", "xen", "sink", "disk", "dirty_mibps", h))
	xm := mean(values(t, "downtime_ms", "policy", "xen", "sink", "memory", "dirty_mibps", h))
	ad := mean(values(t, "downtime_ms", "policy", "qemu-autoconverge", "sink", "disk", "dirty_mibps", h))
	thr := maxOf(values(t, "max_throttle_pct", "policy", "qemu-autoconverge", "sink", "disk", "dirty_mibps", h))
	s1 := fmt.Sprintf("At %s MiB/s Xen's policy gives up iterating and pauses the VM for %s with the disk sink and %s with the memory sink (%s):"+
		" a VM that dirties faster than the sink can drain pays in downtime, which is why the paper's memory sink helps most for busy VMs.", h, dur(xd), dur(xm), times(xd, xm))
	var s2 string
	if !math.IsNaN(ad) {
		s2 = fmt.Sprintf("QEMU's auto-converge instead throttles the vCPU (up to %s %%) and pauses it %s with the disk sink, trading guest speed for a short pause.", num(thr), dur(ad))
	}
	return sentences(s1, s2)
}

func e2CopiedText(t *results.Table) string {
	hi := 0.0
	for _, d := range t.Floats("dirty_mibps") {
		hi = max(hi, d)
	}
	h := fmt.Sprintf("%.1f", hi)
	xd := mean(values(t, "copied_ratio", "policy", "xen", "sink", "disk", "dirty_mibps", h))
	idle := mean(values(t, "copied_ratio", "policy", "xen", "sink", "disk", "dirty_mibps", "0.0"))
	return fmt.Sprintf("An idle VM is copied once (%.2fx its memory); at %s MiB/s Xen's pre-copy sends %.2fx with the disk sink, bounded by its 3x volume limit and its 5-round limit.", idle, h, xd)
}
