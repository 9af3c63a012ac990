package experiments

import (
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/vnsnap/vnsnap/results"
)

// Scale is a VNE size.
type Scale struct {
	VMs   int `json:"vms"`
	Hosts int `json:"hosts"`
}

type e3Config struct {
	Env
	Workloads []string `json:"workloads"`
	Scales    []Scale  `json:"scales"`
	Variants  []string `json:"variants"`
	MemMiB    int      `json:"mem_mib"`
	DirtyMiBs float64  `json:"dirty_mibps"`
}

func e3() *Experiment {
	return &Experiment{
		Name:  "e3-vne",
		Title: "E3: whole-VNE snapshots",
		About: "One snapshot of a whole VNE of 8 to 32 VMs over 2 to 8 hosts, for each algorithm and sink, under each " +
			"workload. The window runs from the first VM's snapshot point to the last VM's resume: the time during " +
			"which some VMs are post-snapshot and others pre-snapshot. Total duration runs from the snapshot's start " +
			"to its commit (every image saved).",
		Extra: []string{"vms"},
		New: func(full bool) Config {
			c := &e3Config{Env: defaultEnv(), Workloads: []string{"npb:cg.A.x10", "bittorrent:64"},
				Scales:   []Scale{{8, 2}, {16, 4}, {32, 8}},
				Variants: []string{"vnsnap/disk", "vnsnap/memory", "vnsnap-log/disk", "stop-copy/disk", "sync-freeze/disk", "cow/disk"},
				MemMiB:   256, DirtyMiBs: 20}
			c.FlowMiBps, c.Seeds = 0.25, 2
			if full {
				c.Seeds, c.MemMiB, c.FlowMiBps = 3, 1024, 0.5
				c.Workloads = []string{"npb:cg.A.x20", "npb:ft.A.x10", "bittorrent:256", "all-to-all"}
			}
			return c
		},
		Analyze: analyzeE3,
	}
}

func (c *e3Config) Plan(seeds []uint64) ([]Job, error) {
	vs, err := parseVariants(c.Variants)
	if err != nil {
		return nil, err
	}
	var jobs []Job
	for _, w := range c.Workloads {
		for _, sc := range c.Scales {
			for _, v := range vs {
				for _, s := range seeds {
					cfg := c.base(s)
					cfg.VMs, cfg.Hosts, cfg.MemBytes, cfg.DirtyRate = sc.VMs, sc.Hosts, int64(c.MemMiB)*mib, c.DirtyMiBs*mib
					if err := applyWorkload(&cfg, w); err != nil {
						return nil, err
					}
					v.apply(&cfg)
					jobs = append(jobs, Job{Labels: []any{w, sc.VMs, sc.Hosts, v.Algo.String(), v.Sink.String()}, Seed: s, Sim: cfg})
				}
			}
		}
	}
	return jobs, nil
}

func (c *e3Config) Tables(jobs []Job, outs []Outcome) Tables {
	t := results.NewTable(results.Str("workload"), results.Int("vms"), results.Int("hosts"), results.Str("algo"), results.Str("sink"),
		results.Int("seed"), results.Str("state"), results.Float("window_ms", 3), results.Float("total_ms", 3),
		results.Float("median_downtime_ms", 3), results.Float("max_downtime_ms", 3), results.Int("dropped"),
		results.Float("max_stall_ms", 3), results.Int("orphans"), results.Float("app_done_ms", 3), results.Bool("app_ok"))
	vt := results.NewTable(results.Str("workload"), results.Int("vms"), results.Str("algo"), results.Str("sink"), results.Int("seed"),
		results.Int("vm"), results.Int("host"), results.Float("downtime_ms", 3), results.Float("duration_ms", 3))
	for i, j := range jobs {
		r := outs[i].Res
		d := perVM(r, downtime)
		t.Add(append(append([]any{}, j.Labels...), j.Seed, r.State, r.WindowMS, r.TotalMS, median(d), maxOf(d),
			r.Dropped, r.MaxStallMS, r.Orphans, r.AppDoneMS, appOK(r))...)
		for _, v := range r.VMs {
			vt.Add(j.Labels[0], j.Labels[1], j.Labels[3], j.Labels[4], j.Seed, v.VM, v.Host, v.DowntimeMS, v.DurationMS)
		}
	}
	return Tables{"": t, "vms": vt}
}

func analyzeE3(ts Tables) (Analysis, error) {
	t, vt := withVariant(ts.Main()), withVariant(ts["vms"])
	var a Analysis
	for _, w := range t.Distinct("workload") {
		sub, vsub := t.Where("workload", w), vt.Where("workload", w)
		largest := 0.0
		for _, n := range sub.Floats("vms") {
			largest = max(largest, n)
		}
		L := num(largest)
		a.Figures = append(a.Figures, Fig{
			Name: "e3-window-" + slug(w), Figure: &results.Line{
				Title: "Snapshot window against VNE size (" + w + ")", XLabel: "VMs", YLabel: "window (ms)", LogX: true, LogY: true,
				Series: series(sub, "variant", "vms", "window_ms"), Legend: results.BottomRight},
			Caption: "Figure E3a (" + w + "): window from the first snapshot point to the last resume, mean and 95 % CI over seeds.",
			Text:    e3WindowText(sub, L),
		}, Fig{
			Name: "e3-downtime-cdf-" + slug(w), Figure: e3CDF(vsub.Where("vms", L), "Per-VM downtime, "+L+" VMs ("+w+")"),
			Caption: "Figure E3b (" + w + "): distribution of per-VM downtime over every VM and seed of the " + L + "-VM VNE.",
			Text:    e3CDFText(vsub.Where("vms", L), L, w),
		}, Fig{
			Name: "e3-total-" + slug(w), Figure: &results.Line{
				Title: "Total snapshot duration against VNE size (" + w + ")", XLabel: "VMs", YLabel: "total duration (ms)", LogX: true, LogY: true,
				Series: series(sub, "variant", "vms", "total_ms"), Legend: results.BottomRight},
			Caption: "Figure E3c (" + w + "): time from the snapshot's start until every image is saved.",
			Text:    e3TotalText(sub, L),
		})
	}
	a.Summary = summarize(t, []string{"workload", "vms", "variant"},
		stat{"window_ms", "window ms", 1, mean}, stat{"total_ms", "total ms", 0, mean},
		stat{"median_downtime_ms", "median downtime ms", 1, mean}, stat{"dropped", "dropped", 0, mean},
		stat{"max_stall_ms", "max stall ms", 0, mean}, stat{"orphans", "orphans", 0, mean})
	return a, nil
}

func e3CDF(t *results.Table, title string) *results.CDF {
	c := &results.CDF{Title: title, XLabel: "downtime (ms)", LogX: true, Legend: results.BottomRight}
	for _, v := range t.Distinct("variant") {
		c.Series = append(c.Series, results.Sample{Name: v, Values: values(t, "downtime_ms", "variant", v)})
	}
	return c
}

func e3WindowText(t *results.Table, L string) string {
	w := func(v string) float64 { return mean(values(t, "window_ms", "variant", v, "vms", L)) }
	type kv struct {
		v string
		w float64
	}
	var all []kv
	for _, v := range t.Distinct("variant") {
		if x := w(v); !math.IsNaN(x) {
			all = append(all, kv{v, x})
		}
	}
	slices.SortFunc(all, func(a, b kv) int { return cmpFloat(a.w, b.w) })
	if len(all) == 0 {
		return ""
	}
	s1 := fmt.Sprintf("With %s VMs the smallest window is %s's (%s) and the largest %s's (%s).", L, all[0].v, dur(all[0].w), all[len(all)-1].v, dur(all[len(all)-1].w))
	s2 := fmt.Sprintf("VNsnap's window is %s with the memory sink against %s with the disk sink (%s): the window is set by the slowest VM's pre-copy, which the disk paces.",
		dur(w("vnsnap/memory")), dur(w("vnsnap/disk")), times(w("vnsnap/disk"), w("vnsnap/memory")))
	var s3 string
	if c := w("cow/disk"); !math.IsNaN(c) && all[0].v == "cow/disk" {
		s3 = "Copy-on-write, not in the paper, takes every snapshot point at the start and so has the smallest window."
	} else if !math.IsNaN(c) {
		s3 = fmt.Sprintf("Copy-on-write's window (%s) is not the smallest here, unlike what its design suggests: its switch saves the device state through its sink while the VM is paused, as pre-copy's final pause does, and the memory sink saves it faster than the disk.", dur(c))
	}
	return sentences(s1, s2, s3)
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func e3CDFText(t *results.Table, L, w string) string {
	q := func(v string, p float64) float64 { return results.Quantile(values(t, "downtime_ms", "variant", v), p) }
	s1 := fmt.Sprintf("Over the %s-VM VNE, the median per-VM downtime is %s with VNsnap-memory and %s with VNsnap-disk; their 95th percentiles are %s and %s.",
		L, dur(q("vnsnap/memory", 0.5)), dur(q("vnsnap/disk", 0.5)), dur(q("vnsnap/memory", 0.95)), dur(q("vnsnap/disk", 0.95)))
	sf := q("sync-freeze/disk", 0.5)
	var s2 string
	if !math.IsNaN(sf) {
		s2 = fmt.Sprintf("The synchronised freeze pauses every VM for the whole save (median %s), %s VNsnap-disk's median.", dur(sf), times(sf, q("vnsnap/disk", 0.5)))
	}
	return sentences(s1, s2, e3StepText(t, w))
}

// e3StepText explains a CDF whose curves are single steps: every VM of a
// variant paused equally long.
func e3StepText(t *results.Table, w string) string {
	vs := t.Distinct("variant")
	for _, v := range vs {
		xs := values(t, "downtime_ms", "variant", v)
		lo, hi := results.Quantile(xs, 0), results.Quantile(xs, 1)
		if hi-lo > 0.01*hi+0.01 {
			return ""
		}
	}
	s := fmt.Sprintf("Within each variant every VM pauses for the same time (spread under 1 %%), so each curve is a single step and the figure compares %d numbers", len(vs))
	if strings.HasPrefix(w, "npb:") {
		s += ": the NPB ranks are identical SPMD processes with the same footprint and dirtying, and every host carries the same number of VMs. Uneven placement would split the steps by host but also stretch the window, so it is not used here."
	} else {
		s += "."
	}
	return s
}

func e3TotalText(t *results.Table, L string) string {
	tt := func(v string) float64 { return mean(values(t, "total_ms", "variant", v, "vms", L)) }
	d, m := tt("vnsnap/disk"), tt("vnsnap/memory")
	s := fmt.Sprintf("With %s VMs the whole snapshot takes %s with VNsnap-disk and %s with VNsnap-memory, whose images still have to reach the disk after the VMs resume",
		L, dur(d), dur(m))
	if m >= d {
		s += ", so the memory sink saves downtime, not total time."
	} else {
		s += "."
	}
	return s
}
