package sim

import (
	"fmt"

	"github.com/vnsnap/vnsnap/core"
)

// engineClock is the core's Clock over virtual time.
type engineClock struct{ eng *Engine }

func (c engineClock) Now() Time { return c.eng.Now() }

// driver carries out the core's commands on the simulated world and feeds
// the outcomes back to the coordinator as events, through the event queue
// (never re-entrantly inside Step).
type driver struct {
	w       *World
	coord   *core.Coordinator
	events  slots[core.Event]
	fns     slots[func()]
	copies  map[core.VMID]*Transfer
	loops   map[core.VMID]*liveLoop // Observed pre-copy: the hypervisor's loop
	started map[core.VMID]Time      // start of the copy in progress
	// busy is when each VM's last command that takes time (a pause, the
	// colour flip, the disk freeze, the final copy's command) is done: the
	// VM's next command waits for it, as a real backend carries out one
	// VM's commands one after the other.
	busy map[core.VMID]Time
	// cgen counts each VM's CancelCopy: a delayed step of a cancelled copy
	// does nothing.
	cgen        map[core.VMID]int64
	maxThrottle map[core.VMID]int // the hypervisor's own auto-converge
	timers      map[core.TimerID]int64
	tgen        int64
	images      map[core.VMID]image
	copying     map[core.VMID]*copyImage // the image each copy in progress builds
	cows        map[core.VMID]*cowCopy   // copy-on-write copies in progress
	imgMem      map[core.VMID]*Memory    // each complete image's memory
	stale       map[core.VMID]int64      // units where a complete image differed from memory
	faults      map[core.VMID]int64
	epoch       core.Epoch
	err         error
	// OnEvent, if set, sees every event fed to the core and the commands
	// it returned (for tests and traces).
	OnStep func(ev core.Event, cmds []core.Command)
}

const (
	drvEvCore Kind = iota + 1
	drvEvTimer
	drvEvFunc
)

func newDriver(w *World, coord *core.Coordinator, epoch core.Epoch) *driver {
	return &driver{
		w: w, coord: coord, epoch: epoch,
		copies: map[core.VMID]*Transfer{}, started: map[core.VMID]Time{}, loops: map[core.VMID]*liveLoop{},
		busy: map[core.VMID]Time{}, cgen: map[core.VMID]int64{}, maxThrottle: map[core.VMID]int{},
		copying: map[core.VMID]*copyImage{}, cows: map[core.VMID]*cowCopy{}, imgMem: map[core.VMID]*Memory{}, stale: map[core.VMID]int64{},
		timers: map[core.TimerID]int64{}, images: map[core.VMID]image{}, faults: map[core.VMID]int64{},
	}
}

// emit queues an event for the core d from now.
func (d *driver) emit(delay Time, ev core.Event) {
	d.w.Eng.After(delay, d, drvEvCore, d.events.put(ev))
}

// later runs f at t unless vm's copy is cancelled first.
func (d *driver) later(t Time, vm core.VMID, f func()) {
	g := d.cgen[vm]
	d.w.Eng.At(t, d, drvEvFunc, d.fns.put(func() {
		if d.cgen[vm] == g {
			f()
		}
	}))
}

// reserve books cost on vm's command timeline and returns when it ends.
func (d *driver) reserve(vm core.VMID, cost Time) Time {
	end := max(d.w.Eng.Now(), d.busy[vm]) + cost
	d.busy[vm] = end
	return end
}

// Handle feeds a queued event to the core, or fires a core timer.
func (d *driver) Handle(kind Kind, arg int64) {
	switch kind {
	case drvEvCore:
		d.step(d.events.take(arg))
	case drvEvFunc:
		d.fns.take(arg)()
	case drvEvTimer:
		id := core.TimerID(arg >> 32)
		if g, ok := d.timers[id]; ok && g == arg&0xffffffff {
			delete(d.timers, id)
			d.step(core.TimerFired{ID: id})
		}
	}
}

func (d *driver) step(ev core.Event) {
	cmds, err := d.coord.Step(ev)
	if err != nil {
		// A protocol error is a bug in the simulator or the core.
		panic(fmt.Sprintf("sim: seed %d: %v", d.w.Eng.Seed(), err))
	}
	if d.OnStep != nil {
		d.OnStep(ev, cmds)
	}
	for _, c := range cmds {
		d.exec(c)
	}
}

func (d *driver) sinkResource(vm core.VMID, s core.Sink) *Resource {
	h := d.w.Hosts[d.w.VMs[vm].Host]
	if s == core.MemorySink {
		return h.Mem
	}
	return h.Disk
}

func (d *driver) exec(c core.Command) {
	w := d.w
	now := w.Eng.Now()
	cal := &w.Cfg.Calibration
	switch c := c.(type) {
	case core.CopyRound:
		vm := w.VMs[c.VM]
		pages, units := vm.Mem.SyncUnits(now, nil)
		im := d.image(c.VM, c.All)
		if c.All {
			pages = vm.Mem.Full
			im.recordAll()
		} else {
			im.record(units)
		}
		d.started[c.VM] = now
		// A round runs while the VM does: at the live passes' bandwidth.
		d.copies[c.VM] = d.sinkResource(c.VM, c.Sink).StartCapped(pages*core.PageSize, cal.LiveBandwidth, func() {
			delete(d.copies, c.VM)
			t := w.Eng.Now()
			d.step(core.RoundCopied{VM: c.VM, Round: c.Round, Sent: pages, Dirty: vm.Mem.Dirty(t), Elapsed: t - d.started[c.VM]})
		})
	case core.StartLiveCopy:
		d.startLive(c.VM, c.Sink)
	case core.PauseVM:
		// The VM runs on until the pause takes effect; the core hears of
		// it in the same instant, so its colour flips exactly at the pause
		// and nothing reaches the paused VM in an earlier colour.
		w.Eng.At(d.reserve(c.VM, Time(cal.Stop)), vmFunc{d, c.VM, true}, 0, 0)
	case core.SetColour:
		// The core may re-issue a colour change (on abort it re-issues,
		// idempotently, those a VM still needs): a port already in the
		// epoch has passed its snapshot point and has its image; a second
		// cut would be a malformed trace. The flip takes effect at once;
		// its cost delays the VM's next command.
		if w.Net.Epoch(c.VM) >= c.Epoch {
			break
		}
		w.Net.SetEpoch(c.VM, c.Epoch)
		d.images[c.VM] = w.capture(c.VM)
		d.reserve(c.VM, Time(cal.ColourFlip))
	case core.FreezeDisk:
		// The simulated VMs' state is memory and TCP; the freeze costs
		// what a disk snapshot of a real guest costs.
		d.reserve(c.VM, Time(cal.DiskFreeze))
	case core.CopyFinal:
		start := d.reserve(c.VM, Time(cal.QMPRoundTrip))
		if l := d.loops[c.VM]; l != nil {
			l.final(start)
			break
		}
		d.later(start, c.VM, func() { d.copyFinal(c) })
	case core.ProtectMemory:
		d.protect(c)
	case core.ResumeVM:
		if cw := d.cows[c.VM]; cw != nil && !cw.armed {
			cw.resume = true // realbackend's protect returns once armed
			break
		}
		d.resume(c.VM)
	case core.ThrottleVM:
		w.VMs[c.VM].SetThrottle(c.Percent)
	case core.FlushImage:
		d.copies[c.VM] = w.Hosts[w.VMs[c.VM].Host].Disk.Start(w.VMs[c.VM].Mem.Full*core.PageSize+cal.pausedState(), func() {
			delete(d.copies, c.VM)
			d.step(core.ImageFlushed{VM: c.VM})
		})
	case core.CancelCopy:
		d.cgen[c.VM]++
		if t, ok := d.copies[c.VM]; ok {
			t.Cancel()
			delete(d.copies, c.VM)
		}
		if l := d.loops[c.VM]; l != nil {
			l.cancel()
			delete(d.loops, c.VM)
		}
		// A ResumeVM that waited for the arming is re-issued by the abort.
		delete(d.cows, c.VM)
	case core.SetTimer:
		d.tgen++
		d.timers[c.ID] = d.tgen & 0xffffffff
		w.Eng.At(max(c.At, now), d, drvEvTimer, int64(c.ID)<<32|d.tgen&0xffffffff)
	case core.CancelTimer:
		delete(d.timers, c.ID)
	case core.Commit:
		// The simulated store writes the manifest at once.
		d.emit(0, core.Committed{})
	case core.Abort:
		d.images = map[core.VMID]image{}
		d.imgMem = map[core.VMID]*Memory{}
	default:
		panic(fmt.Sprintf("sim: unknown command %T", c))
	}
}

// resume lets vm run once its earlier commands are done.
func (d *driver) resume(vm core.VMID) {
	d.w.Eng.At(d.reserve(vm, Time(d.w.Cfg.Calibration.Cont)), vmFunc{d, vm, false}, 0, 0)
}

// copyFinal copies what remains of a paused VM (Driven pre-copy's last
// round, or stop-and-copy's one pass) with its device and vCPU state.
func (d *driver) copyFinal(c core.CopyFinal) {
	w := d.w
	vm := w.VMs[c.VM]
	pages, units := vm.Mem.SyncUnits(w.Eng.Now(), nil)
	im := d.image(c.VM, c.All)
	if c.All {
		pages = vm.Mem.Full
		im.recordAll()
	} else {
		im.record(units)
	}
	d.copies[c.VM] = d.sinkResource(c.VM, c.Sink).Start(pages*core.PageSize+w.Cfg.Calibration.pausedState(), func() {
		delete(d.copies, c.VM)
		d.complete(c.VM, vm.Mem.Versions())
		// The hypervisor's switchover after the last byte (it ends the
		// stream and flushes the sink) before the copy is complete.
		done := func() { d.step(core.FinalCopied{VM: c.VM, Sent: pages}) }
		if sw := Time(w.Cfg.Calibration.switchover(c.Sink)); sw > 0 {
			d.later(w.Eng.Now()+sw, c.VM, done)
			return
		}
		done()
	})
}

// image returns the image vm's copy builds, a new one if fresh (a copy
// that starts by copying every page).
func (d *driver) image(vm core.VMID, fresh bool) *copyImage {
	im := d.copying[vm]
	if fresh || im == nil {
		im = newCopyImage(d.w.VMs[vm].Mem, d.w.Cfg.brokenCopy)
		d.copying[vm] = im
	}
	return im
}

// complete ends vm's copy: its image is checked against want, the
// versions of memory at the snapshot point, and kept for a restore.
func (d *driver) complete(vm core.VMID, want []uint32) {
	im := d.copying[vm]
	delete(d.copying, vm)
	d.stale[vm] = im.stale(want)
	d.imgMem[vm] = im.memory()
}

// vmFunc pauses or resumes a VM and tells the core.
type vmFunc struct {
	d     *driver
	vm    core.VMID
	pause bool
}

func (f vmFunc) Handle(Kind, int64) {
	if f.pause {
		f.d.w.VMs[f.vm].Pause()
		f.d.step(core.VMPaused{VM: f.vm})
		return
	}
	f.d.w.VMs[f.vm].Resume()
	f.d.step(core.VMResumed{VM: f.vm})
}
