package results

import (
	"bytes"
	"image/png"
	"testing"
)

func TestTimelineRenders(t *testing.T) {
	tl := &Timeline{Title: "t", XLabel: "s", Phases: []string{"live", "paused"}, Rows: []TimelineRow{
		{Name: "a", Bars: []TimelineBar{{Phase: 0, From: 0, To: 1.5}, {Phase: 1, From: 1.5, To: 1.6}}},
		{Name: "b", Bars: []TimelineBar{{Phase: 0, From: 0.2, To: 2}, {Phase: 1, From: 2, To: 2.01}}},
	}}
	pngb, svg, err := Render(tl)
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(pngb))
	if err != nil {
		t.Fatal(err)
	}
	if img.Bounds().Dx() == 0 || !bytes.Contains(svg, []byte(">a<")) && !bytes.Contains(svg, []byte("a</text>")) {
		t.Errorf("figure: %v, svg without the row label a", img.Bounds())
	}
	p, err := tl.Plot()
	if err != nil {
		t.Fatal(err)
	}
	if p.X.Max < 2 || p.X.Min > 0 {
		t.Errorf("x axis [%v, %v], want it to hold every bar [0, 2.01]", p.X.Min, p.X.Max)
	}
}

func TestTimelineRefusesBadBars(t *testing.T) {
	for _, b := range []TimelineBar{{Phase: 2, From: 0, To: 1}, {Phase: -1}, {Phase: 0, From: 2, To: 1}} {
		tl := &Timeline{Phases: []string{"live", "paused"}, Rows: []TimelineRow{{Name: "a", Bars: []TimelineBar{b}}}}
		if _, err := tl.Plot(); err == nil {
			t.Errorf("bar %+v accepted", b)
		}
	}
}
