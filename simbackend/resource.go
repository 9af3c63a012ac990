package sim

import "math"

// Resource is a bandwidth shared fairly among the transfers using it (a
// processor-sharing fluid model): a host's disk, its memory bus or NIC as
// seen by bulk copies. When a transfer starts or ends the others' rates are
// recomputed, so a copy slows down while another VM's copy or a flush shares
// the disk.
type Resource struct {
	eng    *Engine
	name   string
	rate   float64 // bytes per second
	active []*Transfer
	last   Time
	gen    int64
}

// Transfer is one use of a Resource.
type Transfer struct {
	res       *Resource
	remaining float64 // in the resource's bytes (scale per byte moved)
	scale     float64 // resource bytes per byte of the transfer (>= 1)
	total     int64
	done      func()
	finished  bool
}

// NewResource returns a resource of rate bytes per second.
func NewResource(eng *Engine, name string, rate float64) *Resource {
	if rate <= 0 {
		panic("sim: resource " + name + " needs a positive rate")
	}
	return &Resource{eng: eng, name: name, rate: rate}
}

// Rate returns the resource's capacity in bytes per second.
func (r *Resource) Rate() float64 { return r.rate }

// Active returns the number of transfers in progress.
func (r *Resource) Active() int { return len(r.active) }

// Start begins a transfer of n bytes; done runs when it completes (never if
// cancelled). A transfer of zero bytes completes at once, through the event
// queue.
func (r *Resource) Start(n int64, done func()) *Transfer { return r.StartCapped(n, 0, done) }

// StartCapped is Start for a transfer that cannot move faster than capBps
// bytes per second (0: no cap), such as a hypervisor's copy competing with
// the running VM for the CPU. A capped transfer holds the resource as long
// as a transfer of n*Rate/capBps bytes would: alone it runs at capBps,
// sharing it gets the same fraction of its share.
func (r *Resource) StartCapped(n int64, capBps float64, done func()) *Transfer {
	r.advance()
	scale := 1.0
	if capBps > 0 && capBps < r.rate {
		scale = r.rate / capBps
	}
	t := &Transfer{res: r, remaining: float64(n) * scale, scale: scale, total: n, done: done}
	r.active = append(r.active, t)
	r.reschedule()
	return t
}

// Remaining returns the bytes the transfer has still to move.
func (t *Transfer) Remaining() int64 {
	if t.finished {
		return 0
	}
	t.res.advance()
	return int64(math.Ceil(t.remaining / t.scale))
}

// Cancel stops the transfer; its done function will not run.
func (t *Transfer) Cancel() {
	if t.finished {
		return
	}
	r := t.res
	r.advance()
	t.finished = true
	r.remove(t)
	r.reschedule()
}

func (r *Resource) remove(t *Transfer) {
	for i, a := range r.active {
		if a == t {
			copy(r.active[i:], r.active[i+1:])
			r.active[len(r.active)-1] = nil
			r.active = r.active[:len(r.active)-1]
			return
		}
	}
}

func (r *Resource) advance() {
	now := r.eng.Now()
	if n := len(r.active); n > 0 && now > r.last {
		moved := r.rate / float64(n) * (now - r.last).Seconds()
		for _, t := range r.active {
			t.remaining -= moved
		}
	}
	r.last = now
}

func (r *Resource) reschedule() {
	r.gen++
	if len(r.active) == 0 {
		return
	}
	minRem := math.Inf(1)
	for _, t := range r.active {
		minRem = math.Min(minRem, t.remaining)
	}
	share := r.rate / float64(len(r.active))
	d := nanos(math.Ceil(math.Max(minRem, 0) / share * 1e9))
	r.eng.After(d, r, 0, r.gen)
}

// Handle completes the transfers that have finished.
func (r *Resource) Handle(_ Kind, gen int64) {
	if gen != r.gen {
		return
	}
	r.advance()
	var done []*Transfer
	kept := r.active[:0]
	for _, t := range r.active {
		if t.remaining <= 0.5 {
			t.finished = true
			done = append(done, t)
		} else {
			kept = append(kept, t)
		}
	}
	for i := len(kept); i < len(r.active); i++ {
		r.active[i] = nil
	}
	r.active = kept
	r.reschedule()
	for _, t := range done {
		t.done()
	}
}
