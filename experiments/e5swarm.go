package experiments

import (
	"fmt"
	"math"
	"strings"

	"github.com/vnsnap/vnsnap/results"
)

// noSnap is how figures name the runs without snapshots (algo and sink
// "none" in the tables).
const noSnap = "no snapshot"

// swarmVariants are the variants the throughput figure compares with the
// run without snapshots (the CDF shows every variant).
var swarmVariants = []string{"vnsnap/disk", "vnsnap/memory", "cow/disk"}

// e5SwarmFigs draws, for each BitTorrent workload, the leechers' completion
// times and the swarm's throughput over time with the snapshots marked.
func e5SwarmFigs(ts Tables) []Fig {
	pt, tt, st := ts["peers"], ts["throughput"], ts["snaps"]
	if pt == nil || tt == nil || st == nil || len(pt.Rows) == 0 {
		return nil
	}
	main, pt, tt, st := named(withVariant(ts.Main())), named(withVariant(pt)), named(withVariant(tt)), named(withVariant(st))
	var figs []Fig
	for _, w := range pt.Distinct("workload") {
		m := mostSnapshots(main.Where("workload", w))
		if m == "" {
			continue
		}
		wsub := pt.Where("workload", w)
		psub := wsub.Filter(func(r int) bool { mo := wsub.String(r, "mode"); return mo == m || mo == "none" })
		cdf := &results.CDF{Title: "Leecher completion time, " + m + " snapshots (" + w + ")", XLabel: "completion time (s)",
			YLabel: "fraction of leechers ≤ x", Legend: results.TopLeft}
		for _, v := range psub.Distinct("variant") {
			xs := values(psub, "done_ms", "variant", v)
			for i := range xs {
				xs[i] /= 1000
			}
			cdf.Series = append(cdf.Series, results.Sample{Name: v, Values: xs})
		}
		figs = append(figs, Fig{Name: "e5-peers-cdf-" + slug(w), Figure: cdf,
			Caption: "Figure E5 (" + w + ", leechers): distribution of the time at which each leecher holds the whole file, over every leecher and seed, without snapshots and with " + m + " snapshots per variant.",
			Text:    e5PeersText(psub, main.Where("workload", w).Where("mode", m), st.Where("workload", w).Where("mode", m), m)})

		tsub := tt.Where("workload", w)
		seed := tsub.String(0, "seed")
		tsub = tsub.Where("seed", seed)
		line := &results.Line{Title: "Swarm throughput, " + m + " snapshots, seed " + seed + " (" + w + ")", XLabel: "time (s)",
			YLabel: "pieces received (MB/s)", Bars: results.NoBars, ZeroY: true, Legend: results.TopRight}
		for _, v := range append([]string{noSnap}, swarmVariants...) {
			mode := m
			if v == noSnap {
				mode = "none"
			}
			vsub := tsub.Where("mode", mode).Where("variant", v)
			if len(vsub.Rows) == 0 {
				continue
			}
			s := results.Series{Name: v}
			for r := range vsub.Rows {
				s.Points = append(s.Points, results.Point{X: vsub.Float(r, "second") + 0.5, Ys: []float64{vsub.Float(r, "mbps")}})
			}
			line.Series = append(line.Series, s)
		}
		marked := swarmVariants[0]
		snaps := st.Where("workload", w).Where("mode", m).Where("seed", seed).Where("variant", marked)
		for r := range snaps.Rows {
			s0 := snaps.Float(r, "start_ms")
			line.Spans = append(line.Spans, results.Span{Name: marked + " snapshot, start to commit", From: s0 / 1000, To: (s0 + snaps.Float(r, "total_ms")) / 1000})
		}
		figs = append(figs, Fig{Name: "e5-throughput-" + slug(w), Figure: line,
			Caption: "Figure E5 (" + w + ", throughput): piece bytes the leechers received in each second of virtual time, seed " + seed +
				", without snapshots and with " + m + " snapshots; shaded, each " + marked + " snapshot from its start to its commit.",
			Text: e5ThroughputText(tsub, main.Where("workload", w).Where("seed", seed), snaps, m, marked)})
	}
	return figs
}

// named renames the variant of the runs without snapshots.
func named(t *results.Table) *results.Table {
	c := t.Col("variant")
	for _, row := range t.Rows {
		if row[c] == "none/none" {
			row[c] = noSnap
		}
	}
	return t
}

// mostSnapshots returns the mode with the most snapshots ("" if none takes any).
func mostSnapshots(t *results.Table) string {
	best, n := "", 0.0
	for r := range t.Rows {
		if s := t.Float(r, "snapshots"); s > n {
			best, n = t.String(r, "mode"), s
		}
	}
	return best
}

func e5PeersText(p, main, snaps *results.Table, m string) string {
	var parts []string
	for _, v := range p.Distinct("variant") {
		xs := values(p, "done_ms", "variant", v)
		parts = append(parts, fmt.Sprintf("%s %s (last %s)", v, dur(median(xs)), dur(maxOf(xs))))
	}
	s1 := "Median leecher completion: " + strings.Join(parts, ", ") + "."
	// How many of each run's snapshots started before its swarm finished.
	var in, all int
	for r := range snaps.Rows {
		done := values(main, "app_done_ms", "variant", snaps.String(r, "variant"), "seed", snaps.String(r, "seed"))
		all++
		if len(done) > 0 && snaps.Float(r, "start_ms") < done[0] {
			in++
		}
	}
	s2 := fmt.Sprintf("Of the %s-mode snapshots of every variant and seed, %d of %d started before their swarm finished.", m, in, all)
	memMed, diskMed := median(values(p, "done_ms", "variant", "vnsnap/memory")), median(values(p, "done_ms", "variant", "vnsnap/disk"))
	var s3 string
	if !math.IsNaN(memMed) && !math.IsNaN(diskMed) {
		if memMed > diskMed {
			s3 = "The memory sink's short pauses still cost the leechers more than the disk sink's, whose longer copy keeps the VMs running."
		} else {
			s3 = "The memory sink's shorter pauses cost the leechers no more than the disk sink's."
		}
	}
	return sentences(s1, s2, s3)
}

func e5ThroughputText(t, main, snaps *results.Table, m, marked string) string {
	done := func(v string) float64 {
		mode := m
		if v == noSnap {
			mode = "none"
		}
		xs := values(main, "app_done_ms", "variant", v, "mode", mode)
		if len(xs) == 0 {
			return math.NaN()
		}
		return xs[0]
	}
	bl := done(noSnap)
	var parts []string
	for _, v := range swarmVariants {
		if x := done(v); !math.IsNaN(x) {
			parts = append(parts, fmt.Sprintf("%s at %s", v, dur(x)))
		}
	}
	base := values(t, "mbps", "mode", "none", "variant", noSnap)
	s1 := fmt.Sprintf("Without snapshots the swarm moves %.0f MB/s on average and finishes at %s; with %s snapshots it finishes %s.",
		mean(base), dur(bl), m, strings.Join(parts, ", "))
	// The marked variant's throughput while its snapshots run, against the
	// run without snapshots over the same seconds.
	sub := t.Where("mode", m).Where("variant", marked)
	noS := map[string]float64{}
	for r, x := range base {
		noS[t.Where("mode", "none").Where("variant", noSnap).String(r, "second")] = x
	}
	end := done(marked)
	var with, without []float64
	var covered float64
	for r := range sub.Rows {
		mid := (sub.Float(r, "second") + 0.5) * 1000
		inside := false
		for k := range snaps.Rows {
			s0 := snaps.Float(k, "start_ms")
			inside = inside || mid >= s0 && mid <= s0+snaps.Float(k, "total_ms")
		}
		if !inside || mid > end {
			continue
		}
		covered++
		if mid <= bl { // both swarms still run
			with = append(with, sub.Float(r, "mbps"))
			without = append(without, noS[sub.String(r, "second")])
		}
	}
	var s2 string
	if len(with) > 0 {
		s2 = fmt.Sprintf("%s's %d snapshots (shaded) cover %s of the %s its swarm takes; in the seconds they cover while both swarms still run, it moves %.0f MB/s on average against %.0f MB/s without snapshots.",
			marked, len(snaps.Rows), dur(covered*1000), dur(end), mean(with), mean(without))
	}
	return sentences(s1, s2)
}
