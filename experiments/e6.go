package experiments

import (
	"fmt"
	"math"
	"strings"

	"github.com/vnsnap/vnsnap/results"
)

type e6Config struct {
	Env
	VMs       int      `json:"vms"`
	Hosts     int      `json:"hosts"`
	Traffic   string   `json:"traffic"`
	UDP       bool     `json:"udp"`
	MemMiB    int      `json:"mem_mib"`
	DirtyMiBs float64  `json:"dirty_mibps"`
	Variants  []string `json:"variants"`
}

func e6() *Experiment {
	return &Experiment{
		Name:  "e6-consistency",
		Title: "E6: consistency of the cut",
		About: "Every algorithm on the same VNE (all-to-all TCP plus a UDP ring), checked by the consistency checker " +
			"over the recorded trace: orphans (received in the cut, sent after it), and in-transit frames (sent " +
			"before the cut, not received in it) split into those TCP retransmits after a restore, those replayed " +
			"from the log, and those lost (UDP). Each snapshot is then restored and every TCP stream verified.",
		New: func(full bool) Config {
			c := &e6Config{Env: defaultEnv(), VMs: 8, Hosts: 4, Traffic: "all-to-all", UDP: true, MemMiB: 256, DirtyMiBs: 40,
				Variants: []string{"vnsnap/disk", "vnsnap/memory", "vnsnap-log/disk", "sync-freeze/disk", "stop-copy/disk", "cow/disk", "uncoordinated/disk"}}
			c.DirtySpread = 0.9
			if full {
				c.VMs, c.Hosts, c.MemMiB, c.Seeds = 16, 4, 512, 5
			}
			return c
		},
		Analyze: analyzeE6,
	}
}

func (c *e6Config) Plan(seeds []uint64) ([]Job, error) {
	vs, err := parseVariants(c.Variants)
	if err != nil {
		return nil, err
	}
	var jobs []Job
	for _, v := range vs {
		for _, s := range seeds {
			sc := c.base(s)
			sc.VMs, sc.Hosts, sc.Traffic, sc.UDP = c.VMs, c.Hosts, c.Traffic, c.UDP
			sc.MemBytes, sc.DirtyRate, sc.Restore = int64(c.MemMiB)*mib, c.DirtyMiBs*mib, true
			v.apply(&sc)
			jobs = append(jobs, Job{Labels: []any{v.Algo.String(), v.Sink.String()}, Seed: s, Sim: sc})
		}
	}
	return jobs, nil
}

func (c *e6Config) Tables(jobs []Job, outs []Outcome) Tables {
	t := results.NewTable(results.Str("algo"), results.Str("sink"), results.Int("seed"), results.Str("state"), results.Int("orphans"),
		results.Int("in_transit"), results.Int("recovered_by_tcp"), results.Int("replayed"), results.Int("lost"),
		results.Int("net_dropped"), results.Int("dropped"), results.Bool("restore_ok"), results.Str("restore_error"))
	for i, j := range jobs {
		r := outs[i].Res
		ok := r.RestoreOK != nil && *r.RestoreOK
		t.Add(append(append([]any{}, j.Labels...), j.Seed, r.State, r.Orphans, r.InTransit, r.Recovered, r.Replayed, r.Lost,
			r.NetDropped, r.Dropped, ok, firstLine(r.RestoreError))...)
	}
	return Tables{"": t}
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	if len(s) > 120 {
		s = s[:120]
	}
	return s
}

func analyzeE6(ts Tables) (Analysis, error) {
	t := withVariant(ts.Main())
	b := &results.Bars{Title: "Frames across the cut, per algorithm", YLabel: "frames per snapshot (mean over seeds)", Legend: results.TopLeft}
	layers := []struct{ col, name string }{{"recovered_by_tcp", "in transit, recovered by TCP"}, {"replayed", "in transit, replayed"},
		{"lost", "in transit, lost (UDP)"}, {"orphans", "orphans"}}
	b.Categories = t.Distinct("variant")
	for _, l := range layers {
		s := results.Sample{Name: l.name}
		for _, v := range b.Categories {
			s.Values = append(s.Values, mean(values(t, l.col, "variant", v)))
		}
		b.Stacks = append(b.Stacks, s)
	}
	a := Analysis{Figures: []Fig{{Name: "e6-consistency", Figure: b,
		Caption: "Figure E6: how the frames crossing each algorithm's cut end up; orphans make a cut inconsistent.",
		Text:    e6Text(t)}}}
	a.Summary = summarize(t, []string{"variant"}, stat{"orphans", "orphans", 0, mean}, stat{"in_transit", "in transit", 0, mean},
		stat{"recovered_by_tcp", "recovered", 0, mean}, stat{"replayed", "replayed", 0, mean}, stat{"lost", "lost", 0, mean},
		stat{"dropped", "colour drops", 0, mean}, stat{"restore_ok", "restores ok", 2, mean})
	return a, nil
}

func e6Text(t *results.Table) string {
	var clean, dirty []string
	for _, v := range t.Distinct("variant") {
		o := maxOf(values(t, "orphans", "variant", v))
		if o == 0 {
			clean = append(clean, v)
		} else {
			dirty = append(dirty, fmt.Sprintf("%s (up to %s orphans)", v, num(o)))
		}
	}
	s1 := fmt.Sprintf("No orphan in any seed for %s.", strings.Join(clean, ", "))
	if len(dirty) > 0 {
		s1 += " Orphans for " + strings.Join(dirty, ", ") + ": without colouring, a VM's image holds frames its sender's image never sent, as the paper predicts for uncoordinated snapshots."
	}
	var bad []string
	for _, v := range t.Distinct("variant") {
		if ok := mean(values(t, "restore_ok", "variant", v)); ok < 1 {
			bad = append(bad, fmt.Sprintf("%s (%.0f %% of restores verified)", v, ok*100))
		}
	}
	s2 := "Every restore verified every stream byte for byte."
	if len(bad) > 0 {
		s2 = "Restores verified byte for byte except for " + strings.Join(bad, ", ") + "."
	}
	rec, rep := mean(values(t, "recovered_by_tcp", "variant", "vnsnap/disk")), mean(values(t, "replayed", "variant", "vnsnap-log/disk"))
	var s3 string
	if !math.IsNaN(rec) {
		s3 = fmt.Sprintf("VNsnap leaves %s in-transit frames per snapshot to TCP's retransmission; VNsnap-log replays %s from its log.", num(math.Round(rec)), num(math.Round(rep)))
	}
	return sentences(s1, s2, s3)
}
