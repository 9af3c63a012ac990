package experiments

import (
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/vnsnap/vnsnap/results"
	sim "github.com/vnsnap/vnsnap/simbackend"
)

type e7Config struct {
	Env
	VMs       int      `json:"vms"`
	Hosts     int      `json:"hosts"`
	Workloads []string `json:"workloads"`
	MemMiB    int      `json:"mem_mib"`
	DirtyMiBs float64  `json:"dirty_mibps"`
	Variants  []string `json:"variants"`
}

func e7() *Experiment {
	return &Experiment{
		Name:  "e7-restore",
		Title: "E7: restore",
		About: "Each workload is snapshotted once, the VNE is restored from the snapshot (every VM at its snapshot " +
			"point, all resumed together, frames in flight gone unless logged) and run on. Recovery is the time from " +
			"the restore until every stream delivers in order again; the workloads must complete and verify their " +
			"own results (every NPB message, every BitTorrent piece; every byte of every stream).",
		Extra: []string{"goodput"},
		New: func(full bool) Config {
			c := &e7Config{Env: defaultEnv(), VMs: 8, Hosts: 4, Workloads: []string{"all-to-all", "npb:cg.A.x20", "bittorrent:256"},
				MemMiB: 256, DirtyMiBs: 40,
				Variants: []string{"vnsnap/disk", "vnsnap/memory", "vnsnap-log/disk", "stop-copy/disk", "cow/disk", "uncoordinated/disk"}}
			c.DirtySpread, c.Seeds = 0.9, 2
			if full {
				c.VMs, c.Hosts, c.Seeds = 16, 4, 3
				c.Workloads = []string{"all-to-all", "npb:cg.A.x20", "npb:lu.W.x20", "bittorrent:512"}
			}
			return c
		},
		Analyze: analyzeE7,
	}
}

func (c *e7Config) Plan(seeds []uint64) ([]Job, error) {
	vs, err := parseVariants(c.Variants)
	if err != nil {
		return nil, err
	}
	var jobs []Job
	for _, w := range c.Workloads {
		for _, v := range vs {
			for _, s := range seeds {
				sc := c.base(s)
				sc.VMs, sc.Hosts, sc.MemBytes, sc.DirtyRate, sc.Restore = c.VMs, c.Hosts, int64(c.MemMiB)*mib, c.DirtyMiBs*mib, true
				if err := applyWorkload(&sc, w); err != nil {
					return nil, err
				}
				v.apply(&sc)
				jobs = append(jobs, Job{Labels: []any{w, v.Algo.String(), v.Sink.String()}, Seed: s, Sim: sc})
			}
		}
	}
	return jobs, nil
}

func (c *e7Config) Tables(jobs []Job, outs []Outcome) Tables {
	t := results.NewTable(results.Str("workload"), results.Str("algo"), results.Str("sink"), results.Int("seed"), results.Str("state"),
		results.Bool("restore_ok"), results.Float("recover_ms", 3), results.Float("retx_kib", 3), results.Float("app_done_ms", 3),
		results.Float("restored_app_done_ms", 3), results.Float("full_goodput_ms", 3), results.Str("restore_error"))
	gt := results.NewTable(results.Str("workload"), results.Str("algo"), results.Str("sink"), results.Int("seed"),
		results.Int("bin"), results.Float("mbps", 3), results.Float("pre_mean_mbps", 3))
	for i, j := range jobs {
		r := outs[i].Res
		if r.Workload == "" { // the simple streams: goodput after the restore, per bin
			pre := preMeanMBps(r.GoodputMBps, j.Sim.Warmup)
			for b, v := range r.RestoreGoodputMBps {
				gt.Add(j.Labels[0], j.Labels[1], j.Labels[2], j.Seed, b, v, pre)
			}
		}
		ok := r.RestoreOK != nil && *r.RestoreOK
		rec, retx, rdone := math.NaN(), math.NaN(), math.NaN()
		if r.RecoverMS != nil {
			rec = *r.RecoverMS
		}
		if r.RestoreRetx != nil {
			retx = float64(*r.RestoreRetx) / 1024
		}
		if r.RestoreAppDoneMS != nil && *r.RestoreAppDoneMS >= 0 {
			rdone = *r.RestoreAppDoneMS
		}
		done := r.AppDoneMS
		if r.Workload == "" || done < 0 {
			done = math.NaN()
		}
		full := fullGoodputMS(r.GoodputMBps, r.RestoreGoodputMBps, j.Sim.Warmup)
		t.Add(append(append([]any{}, j.Labels...), j.Seed, r.State, ok, rec, retx, done, rdone, full, firstLine(r.RestoreError))...)
	}
	return Tables{"": t, "goodput": gt}
}

// preMeanMBps is the applications' mean goodput before the snapshot, over
// the whole bins after the first (the start-up); NaN if there are none.
func preMeanMBps(before []float64, warmup sim.Time) float64 {
	n := int(warmup / sim.GoodputBin)
	var sum float64
	var bins int
	for i := 1; i < n && i < len(before); i++ {
		sum += before[i]
		bins++
	}
	if bins == 0 {
		return math.NaN()
	}
	return sum / float64(bins)
}

// fullGoodputMS is the time from a restore until the applications' goodput
// (in-order TCP payload per 100 ms bin) first reaches 90 % of its mean before
// the snapshot, counting from the first whole bin after the restore; NaN if
// it never does (or there was no traffic before the snapshot).
func fullGoodputMS(before, after []float64, warmup sim.Time) float64 {
	pre := preMeanMBps(before, warmup)
	if math.IsNaN(pre) || pre == 0 {
		return math.NaN()
	}
	target := 0.9 * pre
	for i := 1; i < len(after); i++ {
		if after[i] >= target {
			return float64(i) * float64(sim.GoodputBin) / float64(time.Millisecond)
		}
	}
	return math.NaN()
}

func analyzeE7(ts Tables) (Analysis, error) {
	t := withVariant(ts.Main())
	var a Analysis
	for _, w := range t.Distinct("workload") {
		sub := t.Where("workload", w)
		streams := maxOf(values(sub, "recover_ms")) > 0
		col, title, ylabel, scale := "recover_ms", "Recovery after a restore ("+w+")", "time to in-order delivery on every stream (ms)", 1.0
		caption := "Figure E7 (" + w + "): time from resuming the restored VNE until every TCP stream has delivered new data in order, mean over seeds."
		if !streams {
			col, title, ylabel, scale = "restored_app_done_ms", "Restored run to completion ("+w+")", "time from restore to completion (s)", 1000
			caption = "Figure E7 (" + w + "): time from resuming the restored VNE until the workload completes, mean over seeds; a missing bar is a run that did not complete."
		}
		b := &results.Bars{Title: title, YLabel: ylabel, Legend: results.TopLeft}
		s := results.Sample{Name: "mean over seeds"}
		for _, v := range sub.Distinct("variant") {
			b.Categories = append(b.Categories, v)
			x := mean(values(sub, col, "variant", v)) / scale
			if math.IsNaN(x) {
				x = 0
			}
			s.Values = append(s.Values, x)
		}
		b.Stacks = []results.Sample{s}
		a.Figures = append(a.Figures, Fig{Name: "e7-recover-" + slug(w), Figure: b, Caption: caption, Text: e7Text(sub, w, streams)})
	}
	a.Figures = append(a.Figures, e7GoodputFigs(t, ts["goodput"])...)
	a.Summary = summarize(t, []string{"workload", "variant"}, stat{"restore_ok", "restores ok", 2, mean},
		stat{"recover_ms", "recover ms", 1, mean}, stat{"retx_kib", "retransmitted KiB", 0, mean},
		stat{"restored_app_done_ms", "restored run done ms", 0, mean}, stat{"full_goodput_ms", "ms to 90 % goodput", 0, mean})
	return a, nil
}

func e7Text(t *results.Table, w string, streams bool) string {
	var bad []string
	for _, v := range t.Distinct("variant") {
		if ok := mean(values(t, "restore_ok", "variant", v)); ok < 1 {
			bad = append(bad, fmt.Sprintf("%s (%.0f %% verified)", v, ok*100))
		}
	}
	s1 := fmt.Sprintf("Every restored %s run completed and verified.", w)
	if len(bad) > 0 {
		s1 = fmt.Sprintf("Restored %s runs completed and verified except for %s.", w, strings.Join(bad, ", "))
		if len(bad) == 1 && strings.HasPrefix(bad[0], "uncoordinated") {
			s1 += " Only the inconsistent uncoordinated snapshot fails, as it should."
		}
	}
	if !streams {
		d, o := mean(values(t, "restored_app_done_ms", "variant", "vnsnap/disk")), mean(values(t, "app_done_ms", "variant", "vnsnap/disk"))
		if d == 0 {
			return sentences(s1, fmt.Sprintf("The workload had already finished at VNsnap-disk's snapshot point (it completed at %s), so the restored run had nothing left to do.", dur(o)))
		}
		return sentences(s1, fmt.Sprintf("Restored from VNsnap-disk's snapshot, the workload completes %s after the restore (the original run, snapshot included, completed at %s after its start).", dur(d), dur(o)))
	}
	rv, rl := mean(values(t, "recover_ms", "variant", "vnsnap/disk")), mean(values(t, "recover_ms", "variant", "vnsnap-log/disk"))
	s2 := fmt.Sprintf("After a VNsnap restore the streams deliver again after %s, waiting for the retransmission of in-transit data that is missing from the receivers' images; VNsnap-log, which replays it, recovers in %s.",
		dur(rv), dur(rl))
	return sentences(s1, s2)
}

// e7GoodputFigs draws, for each stream workload, the applications' goodput
// after the restore per variant (the first seed), against its mean before
// the snapshot.
func e7GoodputFigs(t, g *results.Table) []Fig {
	if g == nil || len(g.Rows) == 0 {
		return nil
	}
	g = withVariant(g)
	binS := sim.GoodputBin.Seconds()
	var figs []Fig
	for _, w := range g.Distinct("workload") {
		sub := g.Where("workload", w)
		seed := sub.String(0, "seed")
		sub = sub.Where("seed", seed)
		// Trim the idle tail: keep bins up to one past the last with traffic.
		last := 0.0
		for r := range sub.Rows {
			if sub.Float(r, "mbps") > 0 {
				last = max(last, sub.Float(r, "bin"))
			}
		}
		sub = sub.Filter(func(r int) bool { return sub.Float(r, "bin") <= last+1 })
		pre := sub.Float(0, "pre_mean_mbps")
		l := &results.Line{Title: "Goodput after a restore, seed " + seed + " (" + w + ")", XLabel: "time since the restore (s)",
			YLabel: "in-order TCP payload (MB/s)", Bars: results.NoBars, ZeroY: true, Legend: results.TopRight,
			Refs: []results.Ref{{Name: "mean before the snapshot", Y: pre}}}
		for _, v := range sub.Distinct("variant") {
			vs := sub.Where("variant", v)
			s := results.Series{Name: v}
			for r := range vs.Rows {
				s.Points = append(s.Points, results.Point{X: (vs.Float(r, "bin") + 0.5) * binS, Ys: []float64{vs.Float(r, "mbps")}})
			}
			l.Series = append(l.Series, s)
		}
		figs = append(figs, Fig{Name: "e7-goodput-" + slug(w), Figure: l,
			Caption: fmt.Sprintf("Figure E7 (%s, goodput): TCP payload delivered in order to the applications per %.0f ms bin after the restored VNE resumes, seed %s, per variant; dashed, the mean before the snapshot (the first bin after the start excluded).",
				w, binS*1000, seed),
			Text: e7GoodputText(sub, t.Where("workload", w).Where("seed", seed), pre, binS)})
	}
	return figs
}

func e7GoodputText(g, t *results.Table, pre, binS float64) string {
	var parts []string
	for _, v := range g.Distinct("variant") {
		full := values(t, "full_goodput_ms", "variant", v)
		f := math.NaN()
		if len(full) > 0 {
			f = full[0]
		}
		if math.IsNaN(f) {
			parts = append(parts, v+" never")
		} else {
			parts = append(parts, fmt.Sprintf("%s after %s", v, dur(f)))
		}
	}
	s1 := fmt.Sprintf("Before the snapshot the streams deliver %.2f MB/s; after the restore goodput is back at 90 %% of that %s.", pre, strings.Join(parts, ", "))
	first := func(v string) float64 { // the first bin's goodput, as a fraction of the mean before
		xs := values(g, "mbps", "variant", v, "bin", "1")
		if len(xs) == 0 || pre <= 0 {
			return math.NaN()
		}
		return xs[0] / pre
	}
	d, l := first("vnsnap/disk"), first("vnsnap-log/disk")
	var s2 string
	if !math.IsNaN(d) && !math.IsNaN(l) {
		s2 = fmt.Sprintf("In the first whole %.0f ms bin VNsnap delivers %.0f %% of the earlier goodput and VNsnap-log, which replays the logged in-transit frames, %.0f %%.", binS*1000, d*100, l*100)
	}
	return sentences(s1, s2)
}
