package sim

import "math"

// Memory is a VM's guest memory as a dirtying model. Writes arrive at
// WriteRate pages per second (scaled by the VM's CPU speed); a fraction
// HotFrac of them falls uniformly on a hot working set of HotPages pages and
// the rest uniformly on the other pages. The model tracks the expected
// number of distinct pages dirtied since the last Sync, which is what a
// pre-copy round has to send: for a region of n pages receiving writes at
// rate w, the dirty count d grows as n - (n-d)·exp(-w·dt/n). It is exact in
// expectation for uniform writes and needs no per-page bitmap, so a 4 GiB VM
// costs as little as a 64 MiB one (memory_test.go checks it against a page
// bitmap).
type Memory struct {
	Pages    int64
	HotPages int64
	HotFrac  float64
	rate     float64 // page writes per second at full speed
	speed    float64
	dHot     float64
	dCold    float64
	last     Time
}

// NewMemory returns a memory of pages pages with a hot set of hot pages
// receiving hotFrac of the writes.
func NewMemory(pages, hot int64, hotFrac float64) *Memory {
	if hot > pages {
		hot = pages
	}
	if hot <= 0 {
		hot = 1
	}
	return &Memory{Pages: pages, HotPages: hot, HotFrac: hotFrac, speed: 1}
}

// advance brings the dirty counts to now.
func (m *Memory) advance(now Time) {
	dt := (now - m.last).Seconds()
	m.last = now
	if dt <= 0 || m.rate == 0 || m.speed == 0 {
		return
	}
	m.apply(m.rate * m.speed * dt)
}

// apply folds w page writes, spread over the hot set and the rest, into the
// dirty counts.
func (m *Memory) apply(w float64) {
	hot := float64(m.HotPages)
	cold := float64(m.Pages - m.HotPages)
	hf := m.HotFrac
	if cold <= 0 {
		hf = 1
	}
	m.dHot = hot - (hot-m.dHot)*math.Exp(-w*hf/hot)
	if cold > 0 {
		m.dCold = cold - (cold-m.dCold)*math.Exp(-w*(1-hf)/cold)
	}
}

// SetRate sets the write rate in pages per second at full speed.
func (m *Memory) SetRate(now Time, pagesPerSec float64) {
	m.advance(now)
	m.rate = pagesPerSec
}

// Rate returns the write rate in pages per second at full speed.
func (m *Memory) Rate() float64 { return m.rate }

// SetSpeed scales the write rate: 0 while paused, below 1 when throttled.
func (m *Memory) SetSpeed(now Time, s float64) {
	m.advance(now)
	m.speed = s
}

// Dirty returns the expected number of distinct pages dirtied since the last
// Sync, rounded.
func (m *Memory) Dirty(now Time) int64 {
	m.advance(now)
	return int64(math.Round(m.dHot + m.dCold))
}

// Sync returns Dirty and starts a new dirty log (a pre-copy round's bitmap
// scan).
func (m *Memory) Sync(now Time) int64 {
	d := m.Dirty(now)
	m.dHot, m.dCold = 0, 0
	return d
}

// Write applies n page writes at once (e.g. a received buffer copied into
// memory), spread like the other writes over the hot set and the rest.
func (m *Memory) Write(now Time, n float64) {
	m.advance(now)
	m.apply(n)
}

// Dirties reports whether the memory is being written at all.
func (m *Memory) Dirties() bool { return m.rate > 0 }

// Clone returns an independent copy (a VM image).
func (m *Memory) Clone() *Memory { c := *m; return &c }
