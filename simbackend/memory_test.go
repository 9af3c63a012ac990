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

// TestSyncUnitsAgainstCount checks the versioned pages a sync finds dirty
// against its count: as many distinct pages as the count (a unit is a page
// here), each in its region's share, each with the new version, and no
// other page's version changed.
func TestSyncUnitsAgainstCount(t *testing.T) {
	m := NewMemory(16384, 2048, 0.9)
	m.SetRate(0, 40000)
	prev := make([]uint32, m.Units())
	for i, at := range []Time{10 * time.Millisecond, 200 * time.Millisecond, 2 * time.Second, 2*time.Second + time.Millisecond} {
		var before []int32
		n, units := m.SyncUnits(at, func(u int32) { before = append(before, u) })
		if int64(len(units)) != n || len(before) != len(units) {
			t.Fatalf("sync %d: %d pages counted, %d units listed, %d seen before the write", i, n, len(units), len(before))
		}
		seen := map[int32]bool{}
		for _, u := range units {
			if seen[u] {
				t.Fatalf("sync %d: unit %d listed twice", i, u)
			}
			seen[u] = true
		}
		ver := m.Versions()
		for u := range ver {
			changed := ver[u] != prev[u]
			if changed != seen[int32(u)] {
				t.Fatalf("sync %d: unit %d changed %t, listed %t", i, u, changed, seen[int32(u)])
			}
		}
		copy(prev, ver)
	}
	// Writes at 40000 pages/s for 2 s saturate the hot set: the third
	// sync finds it all dirty.
	m.SyncUnits(3*time.Second, nil)
	n, units := m.SyncUnits(5*time.Second, nil)
	hot := 0
	for _, u := range units {
		if u < int32(m.HotPages) {
			hot++
		}
	}
	if hot != int(m.HotPages) || n < m.HotPages {
		t.Errorf("after 2 s of writes: %d of %d hot pages dirty (%d in all), want every hot page", hot, m.HotPages, n)
	}
}

// TestMemoryUnitsBounded checks that a huge memory keeps at most MaxUnits
// versions, each unit a run of pages.
func TestMemoryUnitsBounded(t *testing.T) {
	m := NewMemory(1<<28, 1<<25, 0.9) // 1 TiB
	m.SetRate(0, 1e6)
	n, units := m.SyncUnits(time.Second, nil)
	if m.Units() > MaxUnits || int64(len(units)) > m.Units() || n < int64(len(units)) {
		t.Errorf("1 TiB: %d units (max %d), %d dirty pages in %d units", m.Units(), MaxUnits, n, len(units))
	}
}
