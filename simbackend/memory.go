package sim

import (
	"math"
	"math/rand/v2"
)

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
//
// Each page also has a version (its content's): a sync that finds a page
// dirty gives it a new version. Which pages of a region a sync finds dirty
// is drawn uniformly (the set of distinct pages hit by uniform writes is a
// uniform subset of its size), at sync time and only then, so the cost is
// the number of pages found dirty, no more than copying them costs. Copies
// record the versions they copy (image.go), so an image can be checked
// against memory page for page. Versions are kept per unit of UnitPages
// pages: one page up to MaxUnits pages, a run of pages beyond.
type Memory struct {
	Pages int64
	// Full is the pages a copy of the whole memory sends: the guest's
	// non-zero pages (a hypervisor sends a zero page as a flag, not a
	// page). Pages unless the config gives a populated size.
	Full     int64
	HotPages int64
	HotFrac  float64
	rate     float64 // page writes per second at full speed
	speed    float64
	dHot     float64
	dCold    float64
	last     Time

	// UnitPages is the pages per versioned unit.
	UnitPages int64
	units     int64
	hotUnits  int64
	ver       []uint32 // per unit: the sync generation that last found it dirty
	gen       uint32
	seed      uint64
	rng       *rand.Rand
	mark      []uint64 // scratch bitmap of units
	list      []int32  // the units the last sync found dirty
	skip      []int32
}

// MaxUnits bounds the versioned units of one memory (4 MiB of versions).
const MaxUnits = 1 << 20

// NewMemory returns a memory of pages pages with a hot set of hot pages
// receiving hotFrac of the writes.
func NewMemory(pages, hot int64, hotFrac float64) *Memory {
	if hot > pages {
		hot = pages
	}
	if hot <= 0 {
		hot = 1
	}
	m := &Memory{Pages: pages, Full: pages, HotPages: hot, HotFrac: hotFrac, speed: 1}
	m.UnitPages = max(1, (pages+MaxUnits-1)/MaxUnits)
	m.units = (pages + m.UnitPages - 1) / m.UnitPages
	m.hotUnits = min(max(1, (hot+m.UnitPages/2)/m.UnitPages), m.units)
	m.Reseed(uint64(pages)*0x9e3779b97f4a7c15 ^ uint64(hot))
	return m
}

// Reseed sets the random stream that draws which pages a sync finds dirty.
func (m *Memory) Reseed(seed uint64) {
	m.seed = seed
	m.rng = rand.New(rand.NewPCG(seed, 0x5eed))
}

// Units returns the number of versioned units.
func (m *Memory) Units() int64 { return m.units }

// Versions returns every unit's version, read-only; nil before the first
// sync (every version is then 0).
func (m *Memory) Versions() []uint32 { return m.ver }

// Version returns unit u's version.
func (m *Memory) Version(u int32) uint32 {
	if m.ver == nil {
		return 0
	}
	return m.ver[u]
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

// Sync returns the pages dirtied since the last sync and starts a new dirty
// log (a pre-copy round's bitmap scan); the units found dirty get a new
// version and are what SyncUnits returns.
func (m *Memory) Sync(now Time) int64 {
	n, _ := m.SyncUnits(now, nil)
	return n
}

// SyncUnits is Sync that also returns the units found dirty (valid until the
// next sync). before, if set, sees each such unit before its version changes
// (a write fault on a protected page runs before the write).
func (m *Memory) SyncUnits(now Time, before func(u int32)) (int64, []int32) {
	m.advance(now)
	dh, dc := math.Round(m.dHot), math.Round(m.dCold)
	m.dHot, m.dCold = 0, 0
	if m.ver == nil {
		m.ver = make([]uint32, m.units)
		m.mark = make([]uint64, (m.units+63)/64)
	}
	m.gen++
	m.list = m.list[:0]
	hotPages := float64(m.HotPages)
	coldPages := float64(m.Pages - m.HotPages)
	m.choose(0, m.hotUnits, unitsHit(dh, hotPages, m.hotUnits), before)
	m.choose(m.hotUnits, m.units-m.hotUnits, unitsHit(dc, coldPages, m.units-m.hotUnits), before)
	return int64(dh + dc), m.list
}

// unitsHit is the expected number of a region's n units that hold some of
// its d dirty pages out of pages: d itself when a unit is a page.
func unitsHit(d, pages float64, n int64) int64 {
	if n <= 0 || d <= 0 {
		return 0
	}
	if float64(n) >= pages {
		return min(int64(d), n)
	}
	per := pages / float64(n)
	return min(int64(math.Round(float64(n)*(1-math.Pow(1-min(d/pages, 1), per)))), n)
}

// choose finds k distinct units of [lo, lo+n) dirty, uniformly.
func (m *Memory) choose(lo, n, k int64, before func(u int32)) {
	if k <= 0 {
		return
	}
	if k >= n {
		for u := lo; u < lo+n; u++ {
			m.dirty(u, before)
		}
		return
	}
	if k <= n/2 {
		for got := int64(0); got < k; {
			u := lo + m.rng.Int64N(n)
			if m.ver[u] == m.gen {
				continue
			}
			m.dirty(u, before)
			got++
		}
		return
	}
	// Most of the region is dirty: draw the clean units instead.
	m.skip = m.skip[:0]
	for got := int64(0); got < n-k; {
		u := lo + m.rng.Int64N(n)
		if m.mark[u/64]&(1<<(u%64)) != 0 {
			continue
		}
		m.mark[u/64] |= 1 << (u % 64)
		m.skip = append(m.skip, int32(u))
		got++
	}
	for u := lo; u < lo+n; u++ {
		if m.mark[u/64]&(1<<(u%64)) == 0 {
			m.dirty(u, before)
		}
	}
	for _, u := range m.skip {
		m.mark[u/64] &^= 1 << (u % 64)
	}
}

func (m *Memory) dirty(u int64, before func(u int32)) {
	if before != nil {
		before(int32(u))
	}
	m.ver[u] = m.gen
	m.list = append(m.list, int32(u))
}

// Write applies n page writes at once (e.g. a received buffer copied into
// memory), spread like the other writes over the hot set and the rest.
func (m *Memory) Write(now Time, n float64) {
	m.advance(now)
	m.apply(n)
}

// Dirties reports whether the memory is being written at all.
func (m *Memory) Dirties() bool { return m.rate > 0 }

// Clone returns an independent copy, versions included.
func (m *Memory) Clone() *Memory {
	c := m.withVersions(nil)
	c.dHot, c.dCold = m.dHot, m.dCold
	if m.ver != nil {
		c.ver = append([]uint32(nil), m.ver...)
		c.mark = make([]uint64, len(m.mark))
	}
	return c
}

// withVersions returns a memory like m (its model, no dirty log) whose
// units have the versions ver (shared, not copied): a VM's memory as an
// image holds it.
func (m *Memory) withVersions(ver []uint32) *Memory {
	c := *m
	c.dHot, c.dCold = 0, 0
	c.ver, c.list, c.skip, c.mark = ver, nil, nil, nil
	if ver != nil {
		c.mark = make([]uint64, (m.units+63)/64)
	}
	c.Reseed(m.seed)
	return &c
}
