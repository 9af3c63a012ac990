package realbackend

import (
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vnsnap/vnsnap/core"
	"github.com/vnsnap/vnsnap/store"
)

// Phase is the last step one VM's snapshot or restore has reached. The
// steps of a snapshot depend on its algorithm (core/algorithm.go): a
// pre-copy VM goes live-copy (pass 1, 2, ...), paused, final-copy, copied,
// resumed, and with the memory sink flushing, flushed; a stop-and-copy VM
// skips live-copy; a copy-on-write VM goes paused, background-copy, resumed,
// copied. A restore goes restoring, loaded, resumed.
type Phase string

// The phases, in the order a VM may reach them.
const (
	PhaseLiveCopy       Phase = "live-copy"       // memory copied in passes while the VM runs
	PhasePaused         Phase = "paused"          // the VM is paused (at or before its snapshot point)
	PhaseFinalCopy      Phase = "final-copy"      // the rest of the image copied while paused
	PhaseBackgroundCopy Phase = "background-copy" // copy-on-write copy, write protection armed
	PhaseCopied         Phase = "copied"          // the image is complete in its sink
	PhaseResumed        Phase = "resumed"         // the VM runs again
	PhaseFlushing       Phase = "flushing"        // a memory-sink image is being written to the store
	PhaseFlushed        Phase = "flushed"         // the memory-sink image is in the store
	PhaseRestoring      Phase = "restoring"       // the image is read from the store into the hypervisor
	PhaseLoaded         Phase = "loaded"          // the image is loaded; the VM waits, paused
)

// Phases lists every phase, in the order a VM may reach them.
var Phases = []Phase{
	PhaseLiveCopy, PhasePaused, PhaseFinalCopy, PhaseBackgroundCopy, PhaseCopied, PhaseResumed,
	PhaseFlushing, PhaseFlushed, PhaseRestoring, PhaseLoaded,
}

// Progress is one progress event of one VM, for people watching a snapshot
// or restore (SnapshotOptions.OnProgress, Options.OnRestoreProgress). The
// counters only grow within one operation.
type Progress struct {
	// Seq numbers the events of one operation from 1, in delivery order.
	Seq uint64
	// VM is the VM's name.
	VM    string
	Phase Phase
	// Pass is the live pass in progress (from 1) or, after it, the last
	// one; 0 for a copy with no live pass.
	Pass int
	// Bytes is the image stream written to the VM's sink so far (snapshot)
	// or read from the store (restore).
	Bytes int64
	// Total is what Bytes is heading for, when known: the stored stream's
	// length for a restore; the guest's memory size for a snapshot, a
	// lower bound for a live copy, which sends dirtied pages again. 0:
	// unknown.
	Total int64
	// FlushBytes and FlushTotal are a memory-sink image's bytes written to
	// the store and its size (0 before the flush).
	FlushBytes, FlushTotal int64
	// At is when the event was taken; Elapsed is At since the operation
	// began.
	At      time.Time
	Elapsed time.Duration
	// Dropped counts this VM's events so far whose phase or pass the
	// consumer never saw: merged into a later one because the queue was
	// full (see progressQueue). Byte updates merged within one phase and
	// pass are not counted: the later one carries them.
	Dropped int
}

// progressInterval is how often byte counters are sampled into events
// between phase changes.
const progressInterval = 200 * time.Millisecond

// tracker turns one operation's per-VM state and byte counters into
// Progress events. Its methods may be called from any goroutine and never
// block on the consumer; a nil tracker (no callback) does nothing.
type tracker struct {
	start time.Time
	q     *progressQueue

	mu  sync.Mutex // guards vms' phase, pass and last
	vms []trackedVM
}

type trackedVM struct {
	name  string
	total int64
	// bytes and flushed are counted by the writers and readers of the
	// VM's streams.
	bytes, flushed atomic.Int64
	flushTotal     atomic.Int64

	phase Phase
	pass  int
	last  [2]int64 // bytes and flushed at the last event
}

// newTracker returns a tracker for the named VMs (totals[i] is VM i's
// Total), or nil if fn is nil.
func newTracker(fn func(Progress), start time.Time, names []string, totals []int64) *tracker {
	if fn == nil {
		return nil
	}
	t := &tracker{start: start, q: newProgressQueue(fn, len(names)), vms: make([]trackedVM, len(names))}
	for i, n := range names {
		t.vms[i].name, t.vms[i].total = n, totals[i]
	}
	return t
}

// phase records that VM i reached ph (pass > 0 sets the pass) and emits an
// event.
func (t *tracker) phase(i int, ph Phase, pass int) {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	v := &t.vms[i]
	v.phase = ph
	if pass > 0 {
		v.pass = pass
	}
	t.emitLocked(i)
}

// sample emits an event for each VM whose counters moved since its last
// event.
func (t *tracker) sample() {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for i := range t.vms {
		v := &t.vms[i]
		if v.phase != "" && (v.bytes.Load() != v.last[0] || v.flushed.Load() != v.last[1]) {
			t.emitLocked(i)
		}
	}
}

func (t *tracker) emitLocked(i int) {
	v := &t.vms[i]
	now := time.Now()
	p := Progress{
		VM: v.name, Phase: v.phase, Pass: v.pass, Bytes: v.bytes.Load(), Total: v.total,
		FlushBytes: v.flushed.Load(), FlushTotal: v.flushTotal.Load(), At: now, Elapsed: now.Sub(t.start),
	}
	v.last = [2]int64{p.Bytes, p.FlushBytes}
	t.q.push(i, p)
}

// counter returns VM i's stream byte counter, or nil.
func (t *tracker) counter(i int) *atomic.Int64 {
	if t == nil {
		return nil
	}
	return &t.vms[i].bytes
}

// flushCounter sets VM i's flush size and returns its flush byte counter,
// or nil.
func (t *tracker) flushCounter(i int, size int64) *atomic.Int64 {
	if t == nil {
		return nil
	}
	t.vms[i].flushTotal.Store(size)
	return &t.vms[i].flushed
}

// reader counts what r yields into VM i's counter.
func (t *tracker) reader(i int, r io.Reader) io.Reader {
	if t == nil {
		return r
	}
	return countingReader{r, &t.vms[i].bytes}
}

// run samples the counters every progressInterval until stop is closed.
func (t *tracker) run(stop <-chan struct{}) {
	tk := time.NewTicker(progressInterval)
	defer tk.Stop()
	for {
		select {
		case <-stop:
			return
		case <-tk.C:
			t.sample()
		}
	}
}

// close emits a last sample and waits until the consumer has had every
// event.
func (t *tracker) close() {
	if t == nil {
		return
	}
	t.sample()
	t.q.close()
}

type countingReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c countingReader) Read(p []byte) (int, error) {
	k, err := c.r.Read(p)
	c.n.Add(int64(k))
	return k, err
}

// progressQueue hands events to a consumer in its own goroutine, so that a
// slow consumer never stalls the goroutine that produces them. It is bounded
// by coalescing: an event replaces its VM's newest undelivered one when both
// have the same phase and pass (a newer byte count), and when the queue
// holds max events, whatever their phase (Progress.Dropped counts those);
// so it holds at most max plus one event per VM, and each VM's events keep
// their order and its newest state is always delivered.
type progressQueue struct {
	fn  func(Progress)
	max int

	mu      sync.Mutex
	pend    []Progress
	vm      []int // index into pend of each VM's newest pending event, or -1
	dropped []int
	closed  bool
	wake    chan struct{}
	done    chan struct{}
}

func newProgressQueue(fn func(Progress), nvm int) *progressQueue {
	q := &progressQueue{
		fn: fn, max: 64 + 4*nvm, vm: make([]int, nvm), dropped: make([]int, nvm),
		wake: make(chan struct{}, 1), done: make(chan struct{}),
	}
	for i := range q.vm {
		q.vm[i] = -1
	}
	go q.deliver()
	return q
}

// push queues p, event of VM i; it never blocks on the consumer.
func (q *progressQueue) push(i int, p Progress) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return
	}
	if j := q.vm[i]; j >= 0 {
		old := &q.pend[j]
		same := old.Phase == p.Phase && old.Pass == p.Pass
		if same || len(q.pend) >= q.max {
			if !same {
				q.dropped[i]++
			}
			p.Dropped = q.dropped[i]
			*old = p
			return
		}
	}
	p.Dropped = q.dropped[i]
	q.vm[i] = len(q.pend)
	q.pend = append(q.pend, p)
	select { // under mu: close cannot close wake meanwhile
	case q.wake <- struct{}{}:
	default:
	}
}

// deliver calls fn for each event, in order, until close.
func (q *progressQueue) deliver() {
	defer close(q.done)
	var seq uint64
	for {
		_, open := <-q.wake
		q.mu.Lock()
		batch := q.pend
		q.pend = nil
		for i := range q.vm {
			q.vm[i] = -1
		}
		q.mu.Unlock()
		for _, p := range batch {
			seq++
			p.Seq = seq
			q.fn(p)
		}
		if !open {
			return
		}
	}
}

// close delivers what is pending and waits for the consumer; later pushes
// are dropped.
func (q *progressQueue) close() {
	q.mu.Lock()
	q.closed = true
	close(q.wake)
	q.mu.Unlock()
	<-q.done
}

// noteEvent turns an event the coordinator accepted into VM progress.
func (d *driver) noteEvent(ev core.Event) {
	switch ev := ev.(type) {
	case core.RoundCopied:
		d.track.phase(int(ev.VM), PhaseLiveCopy, ev.Round+1)
	case core.VMPaused:
		d.track.phase(int(ev.VM), PhasePaused, 0)
	case core.FinalCopied:
		d.track.phase(int(ev.VM), PhaseCopied, 0)
	case core.VMResumed:
		d.track.phase(int(ev.VM), PhaseResumed, 0)
	case core.ImageFlushed:
		d.track.phase(int(ev.VM), PhaseFlushed, 0)
	}
}

// noteCommand turns a command carried out into VM progress.
func (d *driver) noteCommand(c core.Command) {
	switch c := c.(type) {
	case core.StartLiveCopy:
		d.track.phase(int(c.VM), PhaseLiveCopy, 1)
	case core.CopyFinal:
		d.track.phase(int(c.VM), PhaseFinalCopy, 0)
	case core.ProtectMemory:
		d.track.phase(int(c.VM), PhaseBackgroundCopy, 0)
	case core.FlushImage:
		d.track.phase(int(c.VM), PhaseFlushing, 0)
	}
}

// restoreTracker returns the tracker of a restore of l from s: each VM's
// Total is its stored image's length (page image or memory stream). Nil
// without fn.
func restoreTracker(fn func(Progress), s *store.Snapshot, l Layout) *tracker {
	if fn == nil {
		return nil
	}
	var names []string
	var sizes []int64
	for _, vm := range l.VMs {
		var n int64
		if im, err := s.Image(vm.Name, imageName); err == nil {
			n = im.Length
		} else if r, err := s.Reader(vm.Name, "memory"); err == nil {
			n = r.Len()
			r.Close()
		}
		names, sizes = append(names, vm.Name), append(sizes, n)
	}
	return newTracker(fn, time.Now(), names, sizes)
}
