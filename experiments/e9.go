package experiments

import (
	_ "embed"
	"fmt"
	"math"
	"sort"
	"strings"

	"github.com/vnsnap/vnsnap/experiments/calib"
	"github.com/vnsnap/vnsnap/experiments/realrun"
	"github.com/vnsnap/vnsnap/results"
	sim "github.com/vnsnap/vnsnap/simbackend"
)

// e9Real is the committed real side of E9: `vnsnap experiment e9 --real`
// run on the project's build machine (QEMU with TCG).
//
//go:embed testdata/e9-real.json
var e9Real []byte

type e9Config struct {
	// Measured is a results file of E9's real side (vnsnap experiment e9
	// --real writes e9-real.json); empty: the committed one.
	Measured string `json:"measured"`
	// Calibration is a calibration file (vnsnap calibrate); empty: the
	// shipped one (experiments/calib/qemu-tcg.json).
	Calibration string `json:"calibration"`
	Seeds       int    `json:"seeds"`

	rows []realrun.Row
	cal  *calib.File
}

func e9() *Experiment {
	return &Experiment{
		Name:  "e9-sim-vs-real",
		Title: "E9: simulator against real QEMU",
		About: "The VNE descriptions measured on real QEMU (two and three VMs, idle and dirtying guests, each algorithm and " +
			"sink; the committed measurements, or a file of `vnsnap experiment e9 --real`) run on the simulator with the " +
			"calibration measured by `vnsnap calibrate` on the same machine: per-VM pause, per-VM duration, bytes copied " +
			"and the window, predicted against measured, with the relative error per grid point and the ordering of the " +
			"algorithms on both backends.",
		New:     func(full bool) Config { return &e9Config{Seeds: 2} },
		Analyze: analyzeE9,
	}
}

func (c *e9Config) SeedCount() int { return c.Seeds }

// load reads the measured rows and the calibration once.
func (c *e9Config) load() error {
	if c.rows != nil {
		return nil
	}
	var err error
	if c.Measured == "" {
		_, c.rows, err = realrun.ReadBytes(e9Real)
	} else {
		_, c.rows, err = realrun.Read(c.Measured)
	}
	if err != nil {
		return fmt.Errorf("measured: %w", err)
	}
	if len(c.rows) == 0 {
		return fmt.Errorf("measured: no rows")
	}
	if c.Calibration == "" {
		c.cal, err = calib.Default()
	} else {
		c.cal, err = calib.Load(c.Calibration)
	}
	if err != nil {
		return fmt.Errorf("calibration: %w", err)
	}
	return nil
}

// groups returns the measured rows by grid point and case, in order of
// appearance.
func (c *e9Config) groups() ([][2]string, map[[2]string][]realrun.Row) {
	g := map[[2]string][]realrun.Row{}
	var order [][2]string
	for _, r := range c.rows {
		k := [2]string{r.Point, r.Algorithm + "/" + r.Sink}
		if _, ok := g[k]; !ok {
			order = append(order, k)
		}
		g[k] = append(g[k], r)
	}
	return order, g
}

func (c *e9Config) Plan(seeds []uint64) ([]Job, error) {
	if err := c.load(); err != nil {
		return nil, err
	}
	order, g := c.groups()
	var jobs []Job
	for _, k := range order {
		cs, err := realrun.ParseCase(k[1])
		if err != nil {
			return nil, err
		}
		for _, s := range seeds {
			jobs = append(jobs, Job{Labels: []any{k[0], k[1]}, Seed: s, Sim: realrun.SimConfig(g[k], cs, c.cal, s)})
		}
	}
	return jobs, nil
}

func (c *e9Config) Tables(jobs []Job, outs []Outcome) Tables {
	t := results.NewTable(results.Str("side"), results.Str("point"), results.Str("case"), results.Int("seed"), results.Str("vm"),
		results.Float("pause_ms", 2), results.Float("duration_ms", 2), results.Float("copied_mib", 2), results.Float("window_ms", 2),
		results.Float("stall_ms", 2))
	for i, j := range jobs {
		r := outs[i].Res
		for _, v := range r.VMs {
			t.Add("sim", j.Labels[0], j.Labels[1], j.Seed, fmt.Sprintf("v%d", v.VM+1),
				v.DowntimeMS, v.DurationMS, float64(v.BytesCopied)/mib, r.WindowMS, v.DowntimeMS+v.StalledMS)
		}
	}
	if c.load() == nil {
		for _, r := range c.rows {
			t.Add("real", r.Point, r.Algorithm+"/"+r.Sink, r.Repeat, r.VM, r.PauseMs, r.DurationMs, float64(r.BytesCopied)/mib, r.WindowMs, r.StallMs)
		}
	}
	return Tables{"": t}
}

// e9Metrics are the compared columns, with the bound on the median
// relative error (0: none).
var e9Metrics = []struct {
	col, fig, name, unit string
	bound                float64
}{
	{"pause_ms", "e9-pause", "per-VM pause", "ms", 0.15},
	{"duration_ms", "e9-duration", "per-VM duration", "ms", 0.15},
	{"copied_mib", "e9-bytes", "bytes copied", "MiB", 0.10},
	{"window_ms", "e9-window", "window", "ms", 0},
	// The application stall: QEMU's is the guest's heartbeat gap across
	// the snapshot less one interval; the simulator's the VM's pause plus
	// its copy-on-write stalls.
	{"stall_ms", "e9-stall", "application stall", "ms", 0},
}

// e9Pairs rebuilds the grid's pairs from the table.
func e9Pairs(t *results.Table) []realrun.Pair {
	idx := map[[2]string]int{}
	var out []realrun.Pair
	for r := range t.Rows {
		k := [2]string{t.String(r, "point"), t.String(r, "case")}
		i, ok := idx[k]
		if !ok {
			i = len(out)
			idx[k] = i
			out = append(out, realrun.Pair{Point: k[0], Case: k[1], Real: map[string][]float64{}, Pred: map[string][]float64{}})
		}
		side := out[i].Pred
		if t.String(r, "side") == "real" {
			side = out[i].Real
		}
		for _, m := range e9Metrics {
			side[m.col] = append(side[m.col], t.Float(r, m.col))
		}
	}
	return out
}

func analyzeE9(ts Tables) (Analysis, error) {
	t := ts.Main()
	pairs := e9Pairs(t)
	var a Analysis
	for _, m := range e9Metrics {
		var ss []results.Series
		byCase := map[string]int{}
		for _, p := range pairs {
			if len(p.Pred[m.col]) == 0 || len(p.Real[m.col]) == 0 {
				continue
			}
			i, ok := byCase[p.Case]
			if !ok {
				i = len(ss)
				byCase[p.Case] = i
				ss = append(ss, results.Series{Name: p.Case, Marks: true})
			}
			ss[i].Points = append(ss[i].Points, results.Point{X: results.Median(p.Pred[m.col]), Ys: p.Real[m.col]})
		}
		for i := range ss {
			sort.Slice(ss[i].Points, func(a, b int) bool { return ss[i].Points[a].X < ss[i].Points[b].X })
		}
		e := realrun.MedianRelErr(pairs, m.col)
		a.Figures = append(a.Figures, Fig{
			Name: m.fig,
			Figure: &results.Line{Title: "E9: " + m.name + ", measured against predicted", XLabel: "predicted (" + m.unit + ")",
				YLabel: "measured on QEMU (" + m.unit + ")", LogX: true, LogY: true, Bars: results.MinMax, Series: ss,
				Diagonal: true, NoLines: true, Legend: results.TopLeft},
			Caption: fmt.Sprintf("Figure E9 (%s): one point per grid point and algorithm; x the simulator's median over seeds, y QEMU's "+
				"median with the minimum and maximum over VMs and repeats; the line is y = x.", m.name),
			Text: e9ErrText(m.name, e, m.bound) + e9Worst(pairs, m.col, m.unit),
		})
	}
	a.Summary = e9Summary(pairs)
	for _, m := range []string{"pause_ms", "window_ms", "stall_ms"} {
		real, pred, agree := realrun.Ordering(pairs, m)
		pts := make([]string, 0, len(real))
		for p := range real {
			pts = append(pts, p)
		}
		sort.Strings(pts)
		verdict := "the same as"
		if !agree {
			verdict = "NOT the same as"
		}
		var parts []string
		for _, p := range pts {
			parts = append(parts, fmt.Sprintf("%s: QEMU %s, simulator %s", p, strings.Join(real[p], " < "), strings.Join(pred[p], " < ")))
		}
		a.Notes = append(a.Notes, fmt.Sprintf("Ordering of the algorithms on %s: the simulator's is %s QEMU's (%s).",
			strings.TrimSuffix(m, "_ms"), verdict, strings.Join(parts, "; ")))
	}
	return a, nil
}

func e9ErrText(name string, e, bound float64) string {
	if math.IsNaN(e) {
		return "No grid point has a measured " + name + "."
	}
	s := fmt.Sprintf("The median relative error of the predicted %s over the grid is %.0f %%", name, 100*e)
	switch {
	case bound == 0:
		return s + "."
	case e <= bound:
		return s + fmt.Sprintf(", within the %.0f %% the simulator promises.", 100*bound)
	default:
		return s + fmt.Sprintf(", outside the %.0f %% bound: the model does not yet predict it.", 100*bound)
	}
}

// e9Worst names the two grid points and cases the simulator misses most
// on a metric, with both values: where a bound is not met, this is where
// to look.
func e9Worst(pairs []realrun.Pair, col, unit string) string {
	var ps []realrun.Pair
	for _, p := range pairs {
		if !math.IsNaN(p.RelErr(col)) {
			ps = append(ps, p)
		}
	}
	sort.SliceStable(ps, func(i, j int) bool { return ps[i].RelErr(col) > ps[j].RelErr(col) })
	var parts []string
	for _, p := range ps[:min(2, len(ps))] {
		parts = append(parts, fmt.Sprintf("%s %s (measured %.1f %s, predicted %.1f, %.0f %% off)", p.Point, p.Case,
			results.Median(p.Real[col]), unit, results.Median(p.Pred[col]), 100*p.RelErr(col)))
	}
	if len(parts) == 0 {
		return ""
	}
	return " Largest errors: " + strings.Join(parts, "; ") + "."
}

// e9Summary is the table of relative errors: one row per grid point and
// case, the last row the median over the grid.
func e9Summary(pairs []realrun.Pair) *results.Table {
	cols := []results.Column{results.Str("point"), results.Str("case")}
	for _, m := range e9Metrics {
		cols = append(cols, results.Float(m.name+" measured", 1), results.Float(m.name+" predicted", 1), results.Float(m.name+" err %", 0))
	}
	t := results.NewTable(cols...)
	for _, p := range pairs {
		row := []any{p.Point, p.Case}
		for _, m := range e9Metrics {
			row = append(row, results.Median(p.Real[m.col]), results.Median(p.Pred[m.col]), 100*p.RelErr(m.col))
		}
		t.Add(row...)
	}
	row := []any{"median", ""}
	for _, m := range e9Metrics {
		row = append(row, math.NaN(), math.NaN(), 100*realrun.MedianRelErr(pairs, m.col))
	}
	t.Add(row...)
	return t
}

// E9Pairs runs the simulator on a measured grid with a calibration and
// returns, per grid point and case, the measured values (per VM and
// repeat) and the predicted ones (per VM and seed), by metric column.
func E9Pairs(rows []realrun.Row, cal *calib.File, seeds int) ([]realrun.Pair, error) {
	c := &e9Config{Seeds: seeds, rows: rows, cal: cal}
	jobs, err := c.Plan(Seeds(seeds))
	if err != nil {
		return nil, err
	}
	outs := make([]Outcome, len(jobs))
	for i, j := range jobs {
		r, err := sim.Run(j.Sim)
		if err != nil {
			return nil, fmt.Errorf("simulate %v: %w", j.Labels, err)
		}
		outs[i] = Outcome{Res: r}
	}
	return e9Pairs(c.Tables(jobs, outs).Main()), nil
}

// E9Errors returns, per compared metric, the median relative error of the
// simulator's prediction over a measured grid and the bound the simulator
// promises (0: none). It is what the CI test of E9 checks.
func E9Errors(rows []realrun.Row, cal *calib.File, seeds int) (map[string][2]float64, error) {
	pairs, err := E9Pairs(rows, cal, seeds)
	if err != nil {
		return nil, err
	}
	return E9PairErrors(pairs), nil
}

// E9PairErrors is E9Errors of pairs E9Pairs returned.
func E9PairErrors(pairs []realrun.Pair) map[string][2]float64 {
	out := map[string][2]float64{}
	for _, m := range e9Metrics {
		out[m.col] = [2]float64{realrun.MedianRelErr(pairs, m.col), m.bound}
	}
	return out
}
