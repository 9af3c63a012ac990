package sim

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

// TestMemoryAgainstBitmap checks the analytic dirtying model against a
// deliberately naive page bitmap written to by random writes.
func TestMemoryAgainstBitmap(t *testing.T) {
	tests := []struct {
		pages, hot int64
		hotFrac    float64
		rate       float64 // page writes per second
		dur        Time
	}{
		{pages: 16384, hot: 2048, hotFrac: 0.9, rate: 5000, dur: 200 * time.Millisecond},
		{pages: 16384, hot: 2048, hotFrac: 0.9, rate: 50000, dur: time.Second},
		{pages: 4096, hot: 4096, hotFrac: 1, rate: 20000, dur: 500 * time.Millisecond},
		{pages: 65536, hot: 1024, hotFrac: 0.5, rate: 100000, dur: 300 * time.Millisecond},
	}
	for _, tt := range tests {
		m := NewMemory(tt.pages, tt.hot, tt.hotFrac)
		m.SetRate(0, tt.rate)
		got := float64(m.Dirty(tt.dur))
		rng := rand.New(rand.NewPCG(3, 4))
		var mean float64
		const trials = 5
		for k := 0; k < trials; k++ {
			bitmap := make([]bool, tt.pages)
			writes := int(tt.rate * tt.dur.Seconds())
			dirty := 0
			for i := 0; i < writes; i++ {
				var p int64
				if rng.Float64() < tt.hotFrac {
					p = rng.Int64N(tt.hot)
				} else {
					p = tt.hot + rng.Int64N(tt.pages-tt.hot)
				}
				if !bitmap[p] {
					bitmap[p] = true
					dirty++
				}
			}
			mean += float64(dirty) / trials
		}
		if math.Abs(got-mean) > 0.03*mean+5 {
			t.Errorf("pages=%d hot=%d rate=%g dur=%v: model %g dirty pages, bitmap %g", tt.pages, tt.hot, tt.rate, tt.dur, got, mean)
		}
	}
}

func TestMemoryPausedDoesNotDirty(t *testing.T) {
	m := NewMemory(1000, 100, 0.9)
	m.SetRate(0, 1e4)
	m.Sync(time.Second)
	m.SetSpeed(time.Second, 0)
	if d := m.Dirty(3 * time.Second); d != 0 {
		t.Errorf("paused memory: got %d dirty pages, want 0", d)
	}
}

// TestResourceSharing checks fair sharing: two equal transfers on one
// resource take twice as long as one alone.
func TestResourceSharing(t *testing.T) {
	eng := NewEngine(1)
	r := NewResource(eng, "disk", 100e6)
	var t1, t2 Time
	r.Start(100e6, func() { t1 = eng.Now() })
	eng.At(0, funcHandler(func() { r.Start(100e6, func() { t2 = eng.Now() }) }), 0, 0)
	for eng.Step() {
	}
	if t1 < 1999*time.Millisecond || t1 > 2001*time.Millisecond || t2 != t1 {
		t.Errorf("two shared 100 MB transfers at 100 MB/s finished at %v and %v, want both at 2s", t1, t2)
	}
}

type funcHandler func()

func (f funcHandler) Handle(Kind, int64) { f() }
