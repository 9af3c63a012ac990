package sim

import (
	"fmt"
	"math/rand/v2"
	"time"
)

// Time is virtual time since the start of a simulation.
type Time = time.Duration

// Handler receives the events addressed to it. Kind and Arg are the
// handler's own: a handler defines its event kinds as constants and uses Arg
// for a payload such as a timer generation, so that scheduling allocates
// nothing.
type Handler interface {
	Handle(kind Kind, arg int64)
}

// Kind is an event kind, defined by each handler.
type Kind int32

type item struct {
	at   Time
	seq  uint64
	h    Handler
	kind Kind
	arg  int64
}

func (a *item) less(b *item) bool {
	return a.at < b.at || (a.at == b.at && a.seq < b.seq)
}

// Engine is the discrete-event engine: a 4-ary min-heap of events ordered
// by (time, sequence number). Events at the same time fire in the order they
// were scheduled. Engine is not safe for concurrent use; nothing in a
// simulation needs it to be.
type Engine struct {
	now    Time
	seq    uint64
	heap   []item
	fired  uint64
	hash   uint64
	seed   uint64
	stream uint64
}

// NewEngine returns an engine at time 0 whose random streams derive from seed.
func NewEngine(seed uint64) *Engine {
	return &Engine{seed: seed, hash: 14695981039346656037}
}

// Now returns the current virtual time.
func (e *Engine) Now() Time { return e.now }

// Seed returns the master seed.
func (e *Engine) Seed() uint64 { return e.seed }

// Fired returns the number of events fired so far.
func (e *Engine) Fired() uint64 { return e.fired }

// Pending returns the number of scheduled events.
func (e *Engine) Pending() int { return len(e.heap) }

// Hash returns the trace hash: a running FNV-1a over every fired event's
// time, kind and argument plus everything folded in with Mix.
func (e *Engine) Hash() uint64 { return e.hash }

// Mix folds a value into the trace hash (e.g. a trace record).
func (e *Engine) Mix(v uint64) {
	const prime = 1099511628211
	h := e.hash
	for i := 0; i < 8; i++ {
		h ^= v & 0xff
		h *= prime
		v >>= 8
	}
	e.hash = h
}

// Rand returns a new random source for a component. Components must ask for
// their sources in a fixed order: the n-th call always returns the same
// stream for a given master seed.
func (e *Engine) Rand() *rand.Rand {
	e.stream++
	return rand.New(rand.NewPCG(e.seed, e.stream*0x9e3779b97f4a7c15))
}

// At schedules an event for handler h at time t. Scheduling in the past
// panics: it is a broken invariant of the caller.
func (e *Engine) At(t Time, h Handler, kind Kind, arg int64) {
	if t < e.now {
		panic(fmt.Sprintf("sim: event %d for %T scheduled at %v, before now %v", kind, h, t, e.now))
	}
	e.seq++
	e.heap = append(e.heap, item{at: t, seq: e.seq, h: h, kind: kind, arg: arg})
	e.up(len(e.heap) - 1)
}

// After schedules an event d after now.
func (e *Engine) After(d Time, h Handler, kind Kind, arg int64) { e.At(e.now+d, h, kind, arg) }

// Step fires the earliest event. It returns false when no event is left.
func (e *Engine) Step() bool {
	if len(e.heap) == 0 {
		return false
	}
	it := e.heap[0]
	last := len(e.heap) - 1
	e.heap[0] = e.heap[last]
	e.heap[last] = item{}
	e.heap = e.heap[:last]
	if last > 0 {
		e.down(0)
	}
	e.now = it.at
	e.fired++
	e.Mix(uint64(it.at) ^ uint64(it.kind)<<48 ^ uint64(it.arg)*31)
	it.h.Handle(it.kind, it.arg)
	return true
}

// RunUntil fires events until stop returns true (checked first and after
// every event),
// no event is left, or the next event is later than limit. It returns
// whether stop became true.
func (e *Engine) RunUntil(limit Time, stop func() bool) bool {
	if stop != nil && stop() {
		return true
	}
	for len(e.heap) > 0 && e.heap[0].at <= limit {
		e.Step()
		if stop != nil && stop() {
			return true
		}
	}
	if len(e.heap) == 0 || e.heap[0].at > limit {
		if limit > e.now && limit < 1<<62 {
			e.now = limit
		}
	}
	return stop != nil && stop()
}

func (e *Engine) up(i int) {
	h := e.heap
	it := h[i]
	for i > 0 {
		p := (i - 1) / 4
		if !it.less(&h[p]) {
			break
		}
		h[i] = h[p]
		i = p
	}
	h[i] = it
}

func (e *Engine) down(i int) {
	h := e.heap
	n := len(h)
	it := h[i]
	for {
		c := 4*i + 1
		if c >= n {
			break
		}
		m := c
		end := c + 4
		if end > n {
			end = n
		}
		for j := c + 1; j < end; j++ {
			if h[j].less(&h[m]) {
				m = j
			}
		}
		if !h[m].less(&it) {
			break
		}
		h[i] = h[m]
		i = m
	}
	h[i] = it
}
