package realbackend

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vnsnap/vnsnap/cluster/remote"
	"github.com/vnsnap/vnsnap/core"
	"github.com/vnsnap/vnsnap/realbackend/hv"
	"github.com/vnsnap/vnsnap/store"
)

// SnapshotOptions configures one VNE snapshot.
type SnapshotOptions struct {
	// Store is the snapshot store's root directory; it must exist.
	Store string
	// Name is the snapshot's name in the store.
	Name      string
	Algorithm core.Algorithm
	Sink      core.Sink
	// Deadline aborts the snapshot if it has not committed by then (the
	// core's deadline); 0 means DeadlineCap, a safety net: the bound that
	// matters on a loaded host is Stall.
	Deadline time.Duration
	// Stall aborts the snapshot when it makes no progress for this long: no
	// byte of any VM's migration stream reached its sink or the store, and
	// no event (a round copied, a VM paused, an image flushed...) reached
	// the coordinator. A snapshot that moves, however slowly, is never cut
	// short by it. 0 means DefaultStall; negative disables it.
	Stall time.Duration
	// Created is the time recorded in the manifest; zero means now.
	Created time.Time
	// OnProgress, if set, receives each VM's progress (progress.go) from a
	// goroutine of its own, one event at a time and in order; a slow
	// OnProgress never slows the snapshot, it gets fewer, coalesced events.
	// Snapshot returns after the last call has returned.
	OnProgress func(Progress)

	// fault, in tests, fails a command of a batch that is not an abort
	// before it is carried out, as a backend's own failure would.
	fault func(core.Command) error
	// cleanupTimeout, in tests, replaces cleanupTimeout.
	cleanupTimeout time.Duration
}

// Report is the outcome of one VNE snapshot.
type Report struct {
	Name  string
	Epoch core.Epoch
	// Start is when the coordinator was started: its clock's origin.
	Start time.Time
	// Core is what the coordinator measured (its clock starts at Start).
	Core core.Report
	// VMs holds per-VM measurements made outside the core, in VM order.
	VMs []VMResult
	// Duration is the wall time from Started to Committed.
	Duration time.Duration
}

// VMResult is what the backend measured of one VM's snapshot.
type VMResult struct {
	Name string
	// Pause is the largest gap between the guest's heartbeat lines around
	// the snapshot, stamped on the host: the pause seen from outside (zero
	// for a guest without heartbeat, or a hypervisor without console).
	Pause hv.HeartbeatGap
	// Save is what the hypervisor reported of the VM's save (the last one,
	// for an algorithm that saves twice).
	Save hv.SaveStats
	// Frozen is the disk image frozen at the snapshot point; empty for a
	// guest without disk (nothing frozen).
	Frozen string
}

// ErrAborted is returned (wrapped, with the coordinator's reason) when a
// snapshot is abandoned. Every VM runs again and nothing is recorded.
var ErrAborted = errors.New("snapshot aborted")

// ErrStalled is the reason (wrapped in ErrAborted) of a snapshot that made no
// progress for SnapshotOptions.Stall.
var ErrStalled = errors.New("snapshot made no progress")

// Defaults of SnapshotOptions: a snapshot's deadline derives from its
// progress (DefaultStall without a byte moved or an event), with DeadlineCap
// as a hard upper bound.
const (
	DefaultStall = 2 * time.Minute
	DeadlineCap  = 30 * time.Minute
)

// clock is the coordinator's monotonic clock: time since the driver began.
type clock struct{ start time.Time }

func (c clock) Now() time.Duration { return time.Since(c.start) }

// copyStates says where each VM's copy stands, for a stalled snapshot's
// reason: "a: live copy, 143 MB; b: final copy, 140 MB".
func (d *driver) copyStates() string {
	parts := make([]string, 0, len(d.vms))
	for _, v := range d.vms {
		st := "no copy"
		if v.done != nil {
			select {
			case <-v.done:
				st = "copy returned"
			default:
				st = "final copy"
				if v.release != nil {
					st = "live copy"
				}
			}
		}
		if v.copied != nil {
			st += fmt.Sprintf(", %d bytes", v.copied.Load())
		}
		parts = append(parts, v.name+": "+st)
	}
	return strings.Join(parts, "; ")
}

// vmRun is the driver's state for one VM of the snapshot.
type vmRun struct {
	vm      hv.Machine
	name    string
	ctx     context.Context // of the copy in progress
	cancel  context.CancelFunc
	done    chan struct{} // closed when the copy goroutine has returned
	release chan struct{} // closed by CopyFinal: the pre-copy hook may return
	stream  *store.StreamWriter
	ram     *ramBuffer
	// file is the page-image file of a save into one (images.go), and
	// fileSink the sink it was made for; removed once stored.
	file     *os.File
	fileSink core.Sink
	stats    hv.SaveStats // written by the copy goroutine, read after wg.Wait
	frozen   string
	disk     string        // current top image of a disk guest
	copied   *atomic.Int64 // the VM's progress counter of stream bytes, or nil
}

// driver runs one snapshot. Only the goroutine in run touches co, vms' fields
// other than stats, timers and pending.
type driver struct {
	env   *Env
	opts  SnapshotOptions
	epoch core.Epoch
	co    *core.Coordinator
	clock clock
	w     *store.Writer
	vms   []*vmRun
	// fileFormat is the hypervisor's page-image file format; "" if it
	// restores none, and then every VM's memory is a stream.
	fileFormat string
	// ingests are the disk-sink images being stored (images.go), and
	// ingestErrs their failures, under ingestMu.
	ingests    sync.WaitGroup
	ingestMu   sync.Mutex
	ingestErrs []error
	events     chan core.Event
	quit       chan struct{} // closed when the loop has ended: posts are dropped
	// pending holds events produced synchronously by executed commands;
	// they are stepped before the next event from the channel.
	pending []core.Event
	timers  map[core.TimerID]*time.Timer
	wg      sync.WaitGroup
	ctx     context.Context
	// moved counts stream bytes written and events received: the progress
	// that keeps a snapshot from stalling (SnapshotOptions.Stall).
	moved   atomic.Int64
	aborted bool
	commit  bool // the coordinator is in StateCommitted
	// cleanupErrs are the failures of the abort's own commands.
	cleanupErrs []error
	track       *tracker // nil without SnapshotOptions.OnProgress
}

// post hands an event to the loop; after the loop has ended it is dropped.
func (d *driver) post(ev core.Event) {
	select {
	case d.events <- ev:
	case <-d.quit:
	}
}

// Snapshot takes a consistent snapshot of the whole VNE into the store. The
// epoch is one more than the largest of the store's snapshots and the VNE's
// current epoch. On any failure every VM is left running, no snapshot is
// recorded and the error wraps ErrAborted with the reason.
func (e *Env) Snapshot(ctx context.Context, o SnapshotOptions) (*Report, error) {
	if e.closed {
		return nil, errors.New("snapshot: VNE is down")
	}
	if o.Deadline == 0 {
		o.Deadline = DeadlineCap
	}
	if o.Stall == 0 {
		o.Stall = DefaultStall
	}
	if o.Created.IsZero() {
		o.Created = time.Now()
	}
	epoch, err := nextEpoch(o.Store, e.epoch)
	if err != nil {
		return nil, fmt.Errorf("snapshot %s: %w", o.Name, err)
	}
	if e.clustered() {
		if o.Algorithm == core.VNsnapLog {
			return nil, fmt.Errorf("snapshot %s: %s does not run on agents yet (no in-transit replay)", o.Name, o.Algorithm)
		}
		// Before the core is made: its colour flips must carry the epoch
		// the agents accept, past one a dead coordinator's lease left on
		// their ports (a flip to the port's own epoch logs no cut).
		if epoch, err = e.clusterEpoch(ctx, epoch); err != nil {
			return nil, fmt.Errorf("snapshot %s: %w", o.Name, err)
		}
	}
	cfg := core.Config{
		Algorithm: o.Algorithm, Sink: o.Sink, Mode: core.Observed, Epoch: epoch, Deadline: o.Deadline,
	}
	for _, h := range e.Layout.Hosts {
		b := h.RAMBudget
		if b == 0 {
			b = 1 << 40 // unset: no limit
		}
		cfg.Hosts = append(cfg.Hosts, core.HostSpec{RAMBudget: b})
	}
	for _, vm := range e.Layout.VMs {
		cfg.VMs = append(cfg.VMs, core.VMSpec{Host: core.HostID(vm.Host), MemBytes: int64(vm.MemoryMiB) << 20})
	}
	for _, c := range e.ctl {
		if err := c.SetAlgorithm(o.Algorithm); err != nil {
			return nil, fmt.Errorf("snapshot %s: %w", o.Name, err)
		}
	}
	labels := map[string]string{
		"machine": e.machine(), "algorithm": o.Algorithm.String(), "sink": o.Sink.String(), "vne": e.Layout.Name,
	}
	for k, v := range hypervisorLabels(e.opts.Hypervisor.Info()) {
		labels[k] = v
	}
	format := imageFormat(e.opts.Hypervisor)
	if format != "" {
		labels[LabelImageFileFormat] = format
	}
	w, err := store.Create(o.Store, o.Name, store.Meta{
		Created: o.Created, Algorithm: o.Algorithm.String() + "-" + o.Sink.String(), Epoch: uint64(epoch),
		Labels: labels,
	})
	if err != nil {
		return nil, fmt.Errorf("snapshot %s: %w", o.Name, err)
	}
	d := &driver{
		env: e, opts: o, epoch: epoch, w: w, ctx: ctx, fileFormat: format,
		clock:  clock{start: time.Now()},
		events: make(chan core.Event, 256),
		quit:   make(chan struct{}),
		timers: map[core.TimerID]*time.Timer{},
	}
	var names []string
	var sizes []int64
	for _, vm := range e.Layout.VMs {
		names, sizes = append(names, vm.Name), append(sizes, int64(vm.MemoryMiB)<<20)
	}
	d.track = newTracker(o.OnProgress, d.clock.start, names, sizes)
	for i, vm := range e.vms {
		d.vms = append(d.vms, &vmRun{vm: vm, name: e.Layout.VMs[i].Name, disk: e.Layout.VMs[i].Disk, copied: d.track.counter(i)})
	}
	if d.co, err = core.NewCoordinator(cfg, d.clock); err != nil {
		w.Abort()
		d.track.close()
		return nil, fmt.Errorf("snapshot %s: %w", o.Name, err)
	}
	var leases []*remote.Lease
	if e.clustered() {
		if leases, err = e.beginCluster(ctx, o.Name, epoch); err != nil {
			w.Abort()
			d.track.close()
			return nil, fmt.Errorf("snapshot %s: %w", o.Name, err)
		}
	}
	err = d.run()
	if e.clustered() {
		// The store has the snapshot (or not) already; an agent's copy is
		// a cache of its images and the frame log for people.
		if lerr := endCluster(leases, err == nil); lerr != nil && e.opts.Logger != nil {
			e.opts.Logger.Warn("ending the agents' snapshot", "snapshot", o.Name, "err", lerr)
		}
	}
	d.track.close()
	// Committed or aborted, every port is at epoch now (an abort colours
	// the VMs it had not reached): the next snapshot needs a later one.
	e.epoch = epoch
	rep := d.report()
	if err != nil {
		return rep, fmt.Errorf("snapshot %s: %w", o.Name, err)
	}
	return rep, nil
}

func (e *Env) machine() string {
	if len(e.Layout.VMs) > 0 && e.Layout.VMs[0].Machine != "" {
		return e.Layout.VMs[0].Machine
	}
	return e.opts.Hypervisor.Info().Machine
}

// nextEpoch returns one more than the largest epoch in the store and cur.
func nextEpoch(root string, cur core.Epoch) (core.Epoch, error) {
	infos, err := store.List(root)
	if err != nil {
		return 0, err
	}
	max := uint64(cur)
	for _, in := range infos {
		if in.Err == nil && in.Epoch > max {
			max = in.Epoch
		}
	}
	return core.Epoch(max + 1), nil
}

// run is the loop that owns the coordinator. It keeps the core's failure
// contract (core/doc.go): a batch stops at its first failed command, which
// is reported as an event; the abort's batch runs whole, on a context of its
// own, since the abort may be the answer to the caller's cancelled one.
func (d *driver) run() error {
	d.pending = append(d.pending, core.Started{})
	ctxDone := d.ctx.Done()
	var stallC <-chan time.Time
	if d.opts.Stall > 0 {
		t := time.NewTicker(max(min(d.opts.Stall/8, time.Second), time.Millisecond))
		defer t.Stop()
		stallC = t.C
	}
	var progC <-chan time.Time
	if d.track != nil {
		t := time.NewTicker(progressInterval)
		defer t.Stop()
		progC = t.C
	}
	lastMoved, movedAt := d.moved.Load(), time.Now()
	for !d.commit && !d.aborted {
		var ev core.Event
		switch {
		case len(d.pending) > 0:
			ev, d.pending = d.pending[0], d.pending[1:]
		default:
			select {
			case ev = <-d.events:
				d.moved.Add(1)
			case <-progC:
				d.track.sample() // never blocks: the queue coalesces
				continue
			case <-ctxDone:
				ctxDone = nil // report it once; the abort runs on
				ev = core.SnapshotFailed{Err: d.ctx.Err()}
			case now := <-stallC:
				if m := d.moved.Load(); m != lastMoved {
					lastMoved, movedAt = m, now
					continue
				}
				if now.Sub(movedAt) < d.opts.Stall {
					continue
				}
				stallC = nil // report it once
				ev = core.SnapshotFailed{Err: fmt.Errorf("%w: no stream byte and no event for %v (%s)", ErrStalled, d.opts.Stall, d.copyStates())}
			}
		}
		cmds, err := d.co.Step(ev)
		if err != nil {
			// A backend bug or a stale event: abandon the snapshot cleanly.
			d.pending = append(d.pending, core.SnapshotFailed{Err: err})
			continue
		}
		d.noteEvent(ev)
		if d.co.State() == core.StateAborted {
			d.cleanup(cmds)
			continue
		}
		for _, c := range cmds {
			if err := d.execOrFault(c); err != nil {
				d.pending = append(d.pending, failure(c, err))
				break
			}
			d.noteCommand(c)
		}
		d.commit = d.co.State() == core.StateCommitted
	}
	d.stop()
	if d.aborted {
		err := fmt.Errorf("%w: %s", ErrAborted, d.co.Report().Reason)
		if len(d.cleanupErrs) > 0 {
			err = fmt.Errorf("%w (and the abort's cleanup failed: %w)", err, errors.Join(d.cleanupErrs...))
		}
		return err
	}
	return nil
}

func (d *driver) execOrFault(c core.Command) error {
	if d.opts.fault != nil {
		if err := d.opts.fault(c); err != nil {
			return err
		}
	}
	return d.exec(d.ctx, c)
}

// cleanupTimeout bounds each command of an abort's cleanup when a VM does
// not answer.
const cleanupTimeout = 30 * time.Second

// cleanup carries out an abort's batch: every command, even after one fails
// (each leaves one VM running, on the epoch, with no copy), Abort last. Its
// failures go to the log of the snapshot's error, not to the core. Each
// command has a budget of its own: a copy slow to cancel (a Xen live save
// under emulation can take longer than the bound to give its domain back)
// must not leave the commands after it, the other VMs' resumes, without
// time.
func (d *driver) cleanup(cmds []core.Command) {
	budget := cleanupTimeout
	if d.opts.cleanupTimeout > 0 {
		budget = d.opts.cleanupTimeout
	}
	for _, c := range cmds {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(d.ctx), budget)
		if err := d.exec(ctx, c); err != nil {
			d.cleanupErrs = append(d.cleanupErrs, fmt.Errorf("%v: %w", c, err))
		}
		cancel()
	}
}

// failure is the event that reports c's failure to the core.
func failure(c core.Command, err error) core.Event {
	if vc, ok := c.(core.VMCommand); ok {
		return core.Failed{VM: vc.Target(), Err: err}
	}
	return core.SnapshotFailed{Err: fmt.Errorf("%v: %w", c, err)}
}

// stop ends the loop: it releases every goroutine still waiting and waits
// for them. It resumes nothing: after an abort the core has already ordered
// every resume a VM needed.
func (d *driver) stop() {
	close(d.quit)
	for _, t := range d.timers {
		t.Stop()
	}
	for _, v := range d.vms {
		if v.cancel != nil && d.aborted {
			v.cancel()
		}
	}
	d.wg.Wait()
	for _, v := range d.vms {
		if v.cancel != nil {
			v.cancel()
		}
		if v.ram != nil {
			v.ram.Reset()
		}
		v.dropImageFile()
	}
}

// report assembles the report, measuring each VM's pause from outside.
func (d *driver) report() *Report {
	cr := d.co.Report()
	r := &Report{Name: d.opts.Name, Epoch: d.epoch, Start: d.clock.start, Core: cr}
	var last time.Duration
	for _, v := range cr.VMs {
		last = max(last, v.Resumed, v.Flushed)
	}
	r.Duration = last
	end := d.clock.start.Add(last)
	// Wait for a heartbeat after the last resume, so the gap that spans the
	// pause is closed; a guest silent for HeartbeatSilence is not running.
	for i, v := range d.vms {
		res := VMResult{Name: v.name, Save: v.stats, Frozen: v.frozen}
		if hb, ok := v.vm.(hv.Heartbeats); ok && d.env.Layout.VMs[i].Heartbeat {
			to := end
			if l, err := hb.WaitHeartbeatAfter(context.Background(), end, HeartbeatSilence); err == nil {
				to = l.At
			}
			res.Pause = hb.MaxHeartbeatGap(d.beforeStart(hb), to)
		}
		r.VMs = append(r.VMs, res)
	}
	return r
}

// HeartbeatSilence is how long the pause measurement waits for the first
// heartbeat after the last resume (the port's hv.HeartbeatSilence).
const HeartbeatSilence = hv.HeartbeatSilence

// beforeStart is the arrival of the last heartbeat before the snapshot
// began, so that a pause at the very start is measured too.
func (d *driver) beforeStart(hb hv.Heartbeats) time.Time {
	if l, ok := hb.LastHeartbeat(d.clock.start); ok {
		return l.At
	}
	return d.clock.start
}

// ramBuffer is the memory sink of one VM: the migration stream kept in RAM
// in 1 MiB blocks until FlushImage writes it to the store.
type ramBuffer struct {
	mu     sync.Mutex
	blocks [][]byte
	n      int64
}

const ramBlock = 1 << 20

// Write appends p.
func (b *ramBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := len(p)
	for len(p) > 0 {
		if len(b.blocks) == 0 || len(b.blocks[len(b.blocks)-1]) == ramBlock {
			b.blocks = append(b.blocks, make([]byte, 0, ramBlock))
		}
		last := &b.blocks[len(b.blocks)-1]
		k := min(len(p), ramBlock-len(*last))
		*last = append(*last, p[:k]...)
		p = p[k:]
	}
	b.n += int64(n)
	return n, nil
}

// WriteTo writes the buffered stream to w.
func (b *ramBuffer) WriteTo(w io.Writer) (int64, error) {
	b.mu.Lock()
	blocks := b.blocks
	b.mu.Unlock()
	var n int64
	for _, blk := range blocks {
		k, err := w.Write(blk)
		n += int64(k)
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// Len returns the number of bytes buffered.
func (b *ramBuffer) Len() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.n
}

// Reset frees the buffer.
func (b *ramBuffer) Reset() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.blocks, b.n = nil, 0
}

// sortedKeys returns m's keys in order (no map order leaks into output).
func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
