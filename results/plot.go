package results

import (
	"bytes"
	"fmt"
	"image/color"
	"math"
	"path/filepath"
	"slices"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// Figure is a chart that can be drawn with gonum/plot.
type Figure interface {
	Plot() (*plot.Plot, error)
}

// Band chooses the error bars of a line plot.
type Band int

// The error bars.
const (
	CI95   Band = iota // mean ± the 95 % confidence interval over seeds
	MinMax             // mean with the minimum and maximum over seeds
	NoBars             // the mean only
)

// Point is one x value and the y values measured there, one per seed.
type Point struct {
	X  float64
	Ys []float64
}

// Series is one named line.
type Series struct {
	Name   string
	Points []Point
	// Marks draws this series as points only.
	Marks bool
}

// Line is a line plot of the mean over seeds with error bars.
type Line struct {
	Title, XLabel, YLabel string
	LogX, LogY            bool
	Bars                  Band
	Series                []Series
	// Diagonal draws y = x (for plots of a delay against a window).
	Diagonal bool
	// NoLines draws points only (a scatter plot).
	NoLines bool
	Legend  LegendPos
	// Spans shades intervals of x (a snapshot's start to its commit) behind
	// the lines; spans with the same name share one legend entry.
	Spans []Span
	// Refs draws horizontal reference lines across the plot.
	Refs []Ref
	// ZeroY starts a linear y axis at zero (rates, where the depth of a dip
	// matters).
	ZeroY bool
}

// Span is a shaded interval of x.
type Span struct {
	Name     string
	From, To float64
}

// Ref is a horizontal reference line at Y.
type Ref struct {
	Name string
	Y    float64
}

// LegendPos places the legend inside the plot area.
type LegendPos int

// Legend positions.
const (
	TopLeft LegendPos = iota
	TopRight
	BottomRight
	BottomLeft
)

// CDF is the empirical distribution of samples, one step line per series.
type CDF struct {
	Title, XLabel string
	// YLabel names what is counted; "" means "fraction of VMs ≤ x".
	YLabel string
	LogX   bool
	Series []Sample
	Legend LegendPos
}

// Sample is a named set of values.
type Sample struct {
	Name   string
	Values []float64
}

// Bars is a stacked bar chart: one bar per category, one stack per layer.
type Bars struct {
	Title, YLabel string
	Categories    []string
	Stacks        []Sample // Values[i] belongs to Categories[i]
	LogY          bool
	Legend        LegendPos
}

func newPlot(title, x, y string) *plot.Plot {
	p := plot.New()
	p.Title.Text = title
	p.Title.TextStyle.Font.Size = vg.Points(13)
	p.X.Label.Text, p.Y.Label.Text = x, y
	for _, a := range []*plot.Axis{&p.X, &p.Y} {
		a.Label.TextStyle.Font.Size = vg.Points(12)
		a.Tick.Label.Font.Size = vg.Points(10)
	}
	p.Legend.TextStyle.Font.Size = vg.Points(10)
	p.Add(plotter.NewGrid())
	return p
}

func placeLegend(p *plot.Plot, pos LegendPos) {
	p.Legend.Top = pos == TopLeft || pos == TopRight
	p.Legend.Left = pos == TopLeft || pos == BottomLeft
	p.Legend.XOffs, p.Legend.YOffs = vg.Points(-6), vg.Points(-6)
	if p.Legend.Left {
		p.Legend.XOffs = vg.Points(6)
	}
	if !p.Legend.Top {
		p.Legend.YOffs = vg.Points(6)
	}
}

func logAxis(a *plot.Axis) {
	a.Scale = plot.LogScale{}
	a.Tick.Marker = logTicks{}
}

// logTicks labels 1, 2 and 5 times each power of ten when the axis spans
// few decades (so 128..2048 gets labels), and powers of ten otherwise.
type logTicks struct{}

// Ticks implements plot.Ticker.
func (logTicks) Ticks(lo, hi float64) []plot.Tick {
	if lo <= 0 || hi <= lo {
		return plot.LogTicks{Prec: -1}.Ticks(math.Max(lo, 1e-9), math.Max(hi, 1e-8))
	}
	steps := []float64{1, 2, 5}
	if math.Log10(hi/lo) > 3 {
		steps = []float64{1}
	}
	var ts []plot.Tick
	for e := math.Floor(math.Log10(lo)); e <= math.Ceil(math.Log10(hi)); e++ {
		for _, m := range steps {
			v := m * math.Pow(10, e)
			if v >= lo*0.999 && v <= hi*1.001 {
				ts = append(ts, plot.Tick{Value: v, Label: strconv.FormatFloat(v, 'g', -1, 64)})
			}
		}
	}
	if len(ts) < 2 {
		return plot.LogTicks{Prec: -1}.Ticks(lo, hi)
	}
	return ts
}

// ok reports whether v can be drawn on an axis (positive if logarithmic).
func ok(v float64, log bool) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) && (!log || v > 0) }

// Plot implements Figure.
func (l *Line) Plot() (*plot.Plot, error) {
	p := newPlot(l.Title, l.XLabel, l.YLabel)
	if l.LogX {
		logAxis(&p.X)
	}
	if l.LogY {
		logAxis(&p.Y)
	}
	seen := map[string]bool{}
	for _, sp := range l.Spans {
		if !ok(sp.From, l.LogX) || !ok(sp.To, l.LogX) || sp.To < sp.From {
			continue
		}
		sh := shade{from: sp.From, to: sp.To}
		p.Add(sh)
		if sp.Name != "" && !seen[sp.Name] {
			seen[sp.Name] = true
			p.Legend.Add(sp.Name, sh)
		}
	}
	lo, hi := math.Inf(1), math.Inf(-1)
	for i, s := range l.Series {
		var xys plotter.XYs
		var errs plotter.YErrors
		for _, pt := range s.Points {
			sm := Summarize(pt.Ys)
			if !ok(pt.X, l.LogX) || !ok(sm.Mean, l.LogY) {
				continue
			}
			var down, up float64
			switch l.Bars {
			case CI95:
				down, up = sm.Mean-sm.CILow, sm.CIHigh-sm.Mean
			case MinMax:
				down, up = sm.Mean-sm.Min, sm.Max-sm.Mean
			}
			if l.LogY && sm.Mean-down <= 0 {
				down = sm.Mean * 0.5 // a bar below zero cannot be drawn on a log axis
			}
			xys = append(xys, plotter.XY{X: pt.X, Y: sm.Mean})
			errs = append(errs, struct{ Low, High float64 }{down, up})
			lo, hi = min(lo, pt.X, sm.Mean), max(hi, pt.X, sm.Mean)
		}
		if len(xys) == 0 {
			continue
		}
		c := plotutil.Color(i)
		sc, err := plotter.NewScatter(xys)
		if err != nil {
			return nil, err
		}
		sc.GlyphStyle.Color, sc.GlyphStyle.Shape, sc.GlyphStyle.Radius = c, plotutil.Shape(i), vg.Points(3)
		if l.Bars == NoBars && !l.NoLines && !s.Marks && len(xys) > 40 {
			sc.GlyphStyle.Radius = vg.Points(0.8) // a dense trace: the line carries it
		}
		p.Add(sc)
		if !l.NoLines && !s.Marks {
			ln, err := plotter.NewLine(xys)
			if err != nil {
				return nil, err
			}
			ln.Color, ln.Width, ln.Dashes = c, vg.Points(1.5), plotutil.Dashes(i)
			p.Add(ln)
			p.Legend.Add(s.Name, ln, sc)
		} else {
			p.Legend.Add(s.Name, sc)
		}
		if l.Bars != NoBars {
			eb := &plotter.YErrorBars{XYs: xys, YErrors: errs}
			eb.LineStyle.Color, eb.LineStyle.Width, eb.CapWidth = c, vg.Points(1), vg.Points(6)
			p.Add(eb)
		}
	}
	if l.Diagonal && hi > lo {
		if l.LogX || l.LogY {
			lo = max(lo, 1e-3)
		}
		d, err := plotter.NewLine(plotter.XYs{{X: lo, Y: lo}, {X: hi, Y: hi}})
		if err != nil {
			return nil, err
		}
		d.Color, d.Dashes = color.Gray{Y: 120}, []vg.Length{vg.Points(2), vg.Points(3)}
		p.Add(d)
		p.Legend.Add("y = x", d)
	}
	for _, r := range l.Refs {
		if !ok(r.Y, l.LogY) {
			continue
		}
		h := hline{y: r.Y}
		p.Add(h)
		p.Legend.Add(r.Name, h)
	}
	if l.ZeroY && !l.LogY {
		p.Y.Min = min(p.Y.Min, 0)
	}
	placeLegend(p, l.Legend)
	return p, nil
}

// shade fills an interval of x over the plot's whole height.
type shade struct{ from, to float64 }

var (
	shadeColor = color.NRGBA{R: 255, G: 170, B: 60, A: 50}
	shadeEdge  = draw.LineStyle{Color: color.NRGBA{R: 200, G: 110, B: 0, A: 160}, Width: vg.Points(0.8)}
)

// Plot implements plot.Plotter.
func (s shade) Plot(c draw.Canvas, p *plot.Plot) {
	trX, _ := p.Transforms(&c)
	x0, x1 := max(trX(s.from), c.Min.X), min(trX(s.to), c.Max.X)
	if x1 <= x0 {
		x1 = min(x0+vg.Points(1), c.Max.X) // a span shorter than a point stays visible
	}
	c.FillPolygon(shadeColor, []vg.Point{{X: x0, Y: c.Min.Y}, {X: x1, Y: c.Min.Y}, {X: x1, Y: c.Max.Y}, {X: x0, Y: c.Max.Y}})
	// Edges, so that back-to-back spans stay apart.
	c.StrokeLine2(shadeEdge, x0, c.Min.Y, x0, c.Max.Y)
	c.StrokeLine2(shadeEdge, x1, c.Min.Y, x1, c.Max.Y)
}

// DataRange implements plot.DataRanger: a span widens x only.
func (s shade) DataRange() (xmin, xmax, ymin, ymax float64) {
	return s.from, s.to, math.Inf(1), math.Inf(-1)
}

// Thumbnail implements plot.Thumbnailer.
func (s shade) Thumbnail(c *draw.Canvas) {
	c.FillPolygon(shadeColor, []vg.Point{c.Min, {X: c.Max.X, Y: c.Min.Y}, c.Max, {X: c.Min.X, Y: c.Max.Y}})
}

// hline is a horizontal reference line across the plot.
type hline struct{ y float64 }

var refStyle = draw.LineStyle{Color: color.Gray{Y: 60}, Width: vg.Points(1.2), Dashes: []vg.Length{vg.Points(5), vg.Points(3)}}

// Plot implements plot.Plotter.
func (h hline) Plot(c draw.Canvas, p *plot.Plot) {
	_, trY := p.Transforms(&c)
	y := trY(h.y)
	c.StrokeLine2(refStyle, c.Min.X, y, c.Max.X, y)
}

// DataRange implements plot.DataRanger: a reference line widens y only.
func (h hline) DataRange() (xmin, xmax, ymin, ymax float64) {
	return math.Inf(1), math.Inf(-1), h.y, h.y
}

// Thumbnail implements plot.Thumbnailer.
func (h hline) Thumbnail(c *draw.Canvas) {
	y := (c.Min.Y + c.Max.Y) / 2
	c.StrokeLine2(refStyle, c.Min.X, y, c.Max.X, y)
}

// Plot implements Figure.
func (c *CDF) Plot() (*plot.Plot, error) {
	yl := c.YLabel
	if yl == "" {
		yl = "fraction of VMs ≤ x"
	}
	p := newPlot(c.Title, c.XLabel, yl)
	if c.LogX {
		logAxis(&p.X)
	}
	p.Y.Min, p.Y.Max = 0, 1
	for i, s := range c.Series {
		v := make([]float64, 0, len(s.Values))
		for _, x := range s.Values {
			if ok(x, c.LogX) {
				v = append(v, x)
			}
		}
		if len(v) == 0 {
			continue
		}
		slices.Sort(v)
		xys := make(plotter.XYs, 0, 2*len(v))
		n := float64(len(v))
		for j, x := range v {
			xys = append(xys, plotter.XY{X: x, Y: float64(j) / n}, plotter.XY{X: x, Y: float64(j+1) / n})
		}
		ln, err := plotter.NewLine(xys)
		if err != nil {
			return nil, err
		}
		ln.Color, ln.Width, ln.Dashes = plotutil.Color(i), vg.Points(1.8), plotutil.Dashes(i)
		p.Add(ln)
		p.Legend.Add(s.Name, ln)
	}
	placeLegend(p, c.Legend)
	return p, nil
}

// Plot implements Figure.
func (b *Bars) Plot() (*plot.Plot, error) {
	p := newPlot(b.Title, "", b.YLabel)
	if b.LogY {
		logAxis(&p.Y)
	}
	w := vg.Points(min(40, 360/float64(max(1, len(b.Categories)))))
	var below *plotter.BarChart
	for i, s := range b.Stacks {
		vals := make(plotter.Values, len(b.Categories))
		for j := range vals {
			if j < len(s.Values) {
				vals[j] = s.Values[j]
			}
		}
		bc, err := plotter.NewBarChart(vals, w)
		if err != nil {
			return nil, err
		}
		bc.Color, bc.LineStyle.Width = plotutil.Color(i), vg.Points(0.5)
		if below != nil {
			bc.StackOn(below)
		}
		below = bc
		p.Add(bc)
		p.Legend.Add(s.Name, bc)
	}
	p.NominalX(b.Categories...)
	p.X.Tick.Label.Rotation = 0.5
	p.X.Tick.Label.XAlign, p.X.Tick.Label.YAlign = draw.XRight, draw.YCenter
	placeLegend(p, b.Legend)
	return p, nil
}

// Figure sizes.
const (
	figW = 16 * vg.Centimeter
	figH = 10 * vg.Centimeter
)

// Render draws a figure as PNG and SVG bytes.
func Render(f Figure) (png, svg []byte, err error) {
	p, err := f.Plot()
	if err != nil {
		return nil, nil, err
	}
	for _, format := range []string{"png", "svg"} {
		wt, err := p.WriterTo(figW, figH, format)
		if err != nil {
			return nil, nil, err
		}
		var b bytes.Buffer
		if _, err := wt.WriteTo(&b); err != nil {
			return nil, nil, err
		}
		if format == "png" {
			png = b.Bytes()
		} else {
			svg = b.Bytes()
		}
	}
	return png, svg, nil
}

// SaveFigure writes dir/name.png and dir/name.svg atomically.
func SaveFigure(dir, name string, f Figure) error {
	png, svg, err := Render(f)
	if err != nil {
		return fmt.Errorf("results: figure %s: %w", name, err)
	}
	if err := WriteFileAtomic(filepath.Join(dir, name+".png"), png); err != nil {
		return err
	}
	return WriteFileAtomic(filepath.Join(dir, name+".svg"), svg)
}
