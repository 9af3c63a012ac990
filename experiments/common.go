package experiments

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/vnsnap/vnsnap/core"
	"github.com/vnsnap/vnsnap/results"
	sim "github.com/vnsnap/vnsnap/simbackend"
)

// Env holds the knobs every experiment shares; the zero value of a field
// keeps the simulator's default. Sizes are in MiB, rates in MiB/s (disk
// and link in decimal MB/s and Mbit/s, as vendors quote them).
type Env struct {
	Seeds       int     `json:"seeds"`
	WarmupMS    float64 `json:"warmup_ms"`
	RunOnMS     float64 `json:"run_on_ms"`
	DiskMBps    float64 `json:"disk_mbps,omitempty"`
	LinkMbps    float64 `json:"link_mbps,omitempty"`
	FlowMiBps   float64 `json:"flow_mibps"`
	DirtySpread float64 `json:"dirty_spread"`
	Policy      string  `json:"policy"`
	// Mode is "observed" (the default: pre-copy's loop is the modelled
	// hypervisor's that Policy names, as on the real backends) or "driven"
	// (the core's stop policy Policy orders every round).
	Mode      string  `json:"mode,omitempty"`
	DeadlineS float64 `json:"deadline_s"`
}

func defaultEnv() Env {
	return Env{Seeds: 3, WarmupMS: 1000, RunOnMS: 1000, FlowMiBps: 1, DirtySpread: 0.5, Policy: "xen", DeadlineS: 600}
}

// SeedCount implements Config.
func (e Env) SeedCount() int { return max(1, e.Seeds) }

// base returns the simulator config for one run.
func (e Env) base(seed uint64) sim.Config {
	c := sim.DefaultConfig()
	c.Seed = seed
	c.Warmup = ms(e.WarmupMS)
	c.RunOn = ms(e.RunOnMS)
	if e.DiskMBps > 0 {
		c.Host.DiskBandwidth = e.DiskMBps * 1e6
	}
	if e.LinkMbps > 0 {
		c.Host.Link.Bandwidth = e.LinkMbps * 1e6 / 8
	}
	c.FlowRate = e.FlowMiBps * mib
	c.DirtySpread = e.DirtySpread
	switch e.Mode {
	case "", "observed":
	case "driven":
		c.Mode = core.Driven
	default:
		c.Mode = core.Mode(255) // not a mode: the run's validation names the field
	}
	if e.Policy != "" {
		applyPolicy(&c, e.Policy)
	}
	c.Deadline = ms(e.DeadlineS * 1000)
	return c
}

const mib = 1 << 20

// applyPolicy sets a run's pre-copy stop rule: the core's stop policy in
// Driven mode, the hypervisor model that runs it in Observed mode. A name
// that is neither is left for the config's validation to report.
func applyPolicy(c *sim.Config, policy string) {
	c.Policy = policy
	if model, ac, err := sim.ModelForPolicy(policy); err == nil {
		c.Hypervisor, c.QEMU.AutoConverge = model, ac
	}
}

func ms(v float64) time.Duration { return time.Duration(v * float64(time.Millisecond)) }

// Variant is an algorithm with a sink, written "vnsnap/memory".
type Variant struct {
	Algo core.Algorithm
	Sink core.Sink
}

func (v Variant) String() string { return v.Algo.String() + "/" + v.Sink.String() }

// parseVariants parses "algo/sink" names ("algo" alone means the disk sink).
func parseVariants(names []string) ([]Variant, error) {
	var out []Variant
	for _, n := range names {
		a, s, _ := strings.Cut(n, "/")
		algo, err := core.ParseAlgorithm(a)
		if err != nil {
			return nil, fmt.Errorf("variant %q: %w", n, err)
		}
		sink := core.DiskSink
		if s != "" {
			if sink, err = core.ParseSink(s); err != nil {
				return nil, fmt.Errorf("variant %q: %w", n, err)
			}
		}
		out = append(out, Variant{algo, sink})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no variants")
	}
	return out, nil
}

func (v Variant) apply(c *sim.Config) { c.Algorithm, c.Sink = v.Algo, v.Sink }

// perVM returns the VMs' values of f.
func perVM(r *sim.Result, f func(sim.VMResult) float64) []float64 {
	out := make([]float64, len(r.VMs))
	for i, v := range r.VMs {
		out[i] = f(v)
	}
	return out
}

func downtime(v sim.VMResult) float64 { return v.DowntimeMS }
func duration(v sim.VMResult) float64 { return v.DurationMS }

// committed reports whether a result has a snapshot whose per-VM numbers
// mean something.
func committed(r *sim.Result) bool { return r.State == "committed" }

// nanUnless returns v, or NaN when ok is false (a run with no snapshot).
func nanUnless(ok bool, v float64) float64 {
	if !ok {
		return math.NaN()
	}
	return v
}

// series builds line-plot series from a table: one series per distinct
// value of seriesCol (in order of appearance), one point per distinct x,
// with every row's y as a sample.
func series(t *results.Table, seriesCol, xCol, yCol string) []results.Series {
	var out []results.Series
	for _, name := range t.Distinct(seriesCol) {
		sub := t.Where(seriesCol, name)
		pts := map[float64]*results.Point{}
		var xs []float64
		for r := range sub.Rows {
			x := sub.Float(r, xCol)
			p, ok := pts[x]
			if !ok {
				p = &results.Point{X: x}
				pts[x] = p
				xs = append(xs, x)
			}
			p.Ys = append(p.Ys, sub.Float(r, yCol))
		}
		slices.Sort(xs)
		s := results.Series{Name: name}
		for _, x := range xs {
			s.Points = append(s.Points, *pts[x])
		}
		out = append(out, s)
	}
	return out
}

// variantCol adds a "variant" view of a table's algo and sink columns.
func variantOf(t *results.Table, r int) string {
	return t.String(r, "algo") + "/" + t.String(r, "sink")
}

// withVariant returns a copy of t with a leading "variant" column.
func withVariant(t *results.Table) *results.Table {
	cols := append([]results.Column{results.Str("variant")}, t.Columns...)
	out := results.NewTable(cols...)
	for r, row := range t.Rows {
		out.Add(append([]any{variantOf(t, r)}, row...)...)
	}
	return out
}

// stat is a column to summarise: a name in the source table, a name and
// precision in the summary, and how to reduce the seeds' values.
type stat struct {
	col, as string
	prec    int
	reduce  func([]float64) float64
}

func mean(xs []float64) float64   { return results.Summarize(xs).Mean }
func median(xs []float64) float64 { return results.Median(xs) }
func maxOf(xs []float64) float64 {
	m := math.Inf(-1)
	for _, x := range xs {
		if !math.IsNaN(x) {
			m = max(m, x)
		}
	}
	if math.IsInf(m, -1) {
		return math.NaN()
	}
	return m
}

// summarize groups t's rows by the key columns (in order of appearance) and
// reduces each stat over the group.
func summarize(t *results.Table, keys []string, stats ...stat) *results.Table {
	var cols []results.Column
	for _, k := range keys {
		cols = append(cols, results.Str(k))
	}
	for _, s := range stats {
		cols = append(cols, results.Float(s.as, s.prec))
	}
	out := results.NewTable(cols...)
	groups := map[string][]int{}
	var order []string
	for r := range t.Rows {
		var parts []string
		for _, k := range keys {
			parts = append(parts, t.String(r, k))
		}
		id := strings.Join(parts, "\x00")
		if _, ok := groups[id]; !ok {
			order = append(order, id)
		}
		groups[id] = append(groups[id], r)
	}
	for _, id := range order {
		rows := groups[id]
		var vals []any
		for _, k := range keys {
			vals = append(vals, t.String(rows[0], k))
		}
		for _, s := range stats {
			xs := make([]float64, len(rows))
			for i, r := range rows {
				xs[i] = t.Float(r, s.col)
			}
			vals = append(vals, s.reduce(xs))
		}
		out.Add(vals...)
	}
	return out
}

// values returns column col of the rows of t where every (column, value)
// pair of where matches.
func values(t *results.Table, col string, where ...string) []float64 {
	var out []float64
rows:
	for r := range t.Rows {
		for i := 0; i+1 < len(where); i += 2 {
			if t.String(r, where[i]) != where[i+1] {
				continue rows
			}
		}
		out = append(out, t.Float(r, col))
	}
	return out
}

// dur formats a time in milliseconds for a sentence.
func dur(msv float64) string {
	switch {
	case math.IsNaN(msv):
		return "n/a"
	case msv < 1:
		return fmt.Sprintf("%.2f ms", msv)
	case msv < 10:
		return fmt.Sprintf("%.1f ms", msv)
	case msv < 1000:
		return fmt.Sprintf("%.0f ms", msv)
	case msv < 10000:
		return fmt.Sprintf("%.2f s", msv/1000)
	default:
		return fmt.Sprintf("%.1f s", msv/1000)
	}
}

// times formats how many times larger a is than b.
func times(a, b float64) string {
	if b <= 0 || math.IsNaN(a) || math.IsNaN(b) {
		return "n/a"
	}
	r := a / b
	if r >= 10 {
		return fmt.Sprintf("%.0fx", r)
	}
	return fmt.Sprintf("%.1fx", r)
}

// num formats a count or a plain number for a sentence.
func num(v float64) string {
	if math.IsNaN(v) {
		return "n/a"
	}
	if v == math.Trunc(v) && math.Abs(v) < 1e15 {
		return strconv.FormatFloat(v, 'f', 0, 64)
	}
	if math.Abs(v) >= 100 {
		return strconv.FormatFloat(v, 'f', 0, 64)
	}
	return strconv.FormatFloat(v, 'f', 1, 64)
}

// sentences joins non-empty sentences.
func sentences(s ...string) string {
	var out []string
	for _, x := range s {
		if x != "" {
			out = append(out, x)
		}
	}
	return strings.Join(out, " ")
}

// slug turns a label into a file-name part.
func slug(s string) string {
	var b strings.Builder
	for _, c := range strings.ToLower(s) {
		if c >= 'a' && c <= 'z' || c >= '0' && c <= '9' {
			b.WriteRune(c)
		} else {
			b.WriteByte('-')
		}
	}
	return b.String()
}

// appOK reports whether the workload verified (always true for the simple
// traffic generator, which has nothing to verify but its streams).
func appOK(r *sim.Result) bool {
	if r.Workload == "" {
		return r.StreamsOK
	}
	return r.AppOK
}
