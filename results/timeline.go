package results

import (
	"fmt"
	"image/color"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// Timeline is a Gantt chart of one snapshot: a row per VM (top to bottom
// in order), each with its phases as bars on a time axis.
type Timeline struct {
	Title, XLabel string
	Rows          []TimelineRow
	// Phases names the phases, in legend order; a bar's Phase indexes it.
	Phases []string
}

// TimelineRow is one VM's bars.
type TimelineRow struct {
	Name string
	Bars []TimelineBar
}

// TimelineBar is one phase of one VM, from From to To on the time axis.
type TimelineBar struct {
	Phase    int
	From, To float64
}

// timelineColours are the phases' colours, in order.
var timelineColours = []color.Color{
	color.RGBA{R: 0x4c, G: 0x72, B: 0xb0, A: 0xff}, // blue
	color.RGBA{R: 0xc4, G: 0x4e, B: 0x52, A: 0xff}, // red
	color.RGBA{R: 0x55, G: 0xa8, B: 0x68, A: 0xff}, // green
	color.RGBA{R: 0x81, G: 0x72, B: 0xb2, A: 0xff}, // purple
}

// Plot draws the chart.
func (tl *Timeline) Plot() (*plot.Plot, error) {
	if len(tl.Phases) > len(timelineColours) {
		return nil, fmt.Errorf("timeline: %d phases, at most %d", len(tl.Phases), len(timelineColours))
	}
	p := newPlot(tl.Title, tl.XLabel, "")
	n := len(tl.Rows)
	var names []string
	for i, r := range tl.Rows {
		for _, b := range r.Bars {
			if b.Phase < 0 || b.Phase >= len(tl.Phases) || b.To < b.From {
				return nil, fmt.Errorf("timeline: row %s: bad bar %+v", r.Name, b)
			}
		}
		names = append(names, r.Name)
		p.Add(&ganttRow{y: float64(n - 1 - i), bars: r.Bars})
	}
	ticks := make([]plot.Tick, n)
	for i, name := range names {
		ticks[i] = plot.Tick{Value: float64(n - 1 - i), Label: name}
	}
	p.Y.Tick.Marker = plot.ConstantTicks(ticks)
	p.Y.Min, p.Y.Max = -0.6, float64(n)-0.4
	for i, ph := range tl.Phases {
		p.Legend.Add(ph, swatch{timelineColours[i]})
	}
	p.Legend.Top = true
	return p, nil
}

// ganttRow draws one row's bars, 0.6 of a row high.
type ganttRow struct {
	y    float64
	bars []TimelineBar
}

var _ plot.DataRanger = (*ganttRow)(nil)

func (g *ganttRow) Plot(c draw.Canvas, p *plot.Plot) {
	tx, ty := p.Transforms(&c)
	for _, b := range g.bars {
		x0, x1 := tx(b.From), tx(b.To)
		if x1-x0 < vg.Points(1) {
			x1 = x0 + vg.Points(1) // a pause of a few ms stays visible
		}
		y0, y1 := ty(g.y-0.3), ty(g.y+0.3)
		c.FillPolygon(timelineColours[b.Phase], []vg.Point{{X: x0, Y: y0}, {X: x1, Y: y0}, {X: x1, Y: y1}, {X: x0, Y: y1}})
	}
}

func (g *ganttRow) DataRange() (xmin, xmax, ymin, ymax float64) {
	xmin, xmax = 0, 0
	for i, b := range g.bars {
		if i == 0 || b.From < xmin {
			xmin = b.From
		}
		if b.To > xmax {
			xmax = b.To
		}
	}
	return xmin, xmax, g.y - 0.5, g.y + 0.5
}

// swatch is a legend entry's filled square.
type swatch struct{ c color.Color }

func (s swatch) Thumbnail(c *draw.Canvas) {
	c.FillPolygon(s.c, []vg.Point{{X: c.Min.X, Y: c.Min.Y}, {X: c.Max.X, Y: c.Min.Y}, {X: c.Max.X, Y: c.Max.Y}, {X: c.Min.X, Y: c.Max.Y}})
}
