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
	copies  map[core.VMID]*Transfer
	started map[core.VMID]Time // start of the copy in progress
	timers  map[core.TimerID]int64
	tgen    int64
	images  map[core.VMID]image
	faults  map[core.VMID]int64
	epoch   core.Epoch
	err     error
	// OnEvent, if set, sees every event fed to the core and the commands
	// it returned (for tests and traces).
	OnStep func(ev core.Event, cmds []core.Command)
}

const (
	drvEvCore Kind = iota + 1
	drvEvTimer
)

func newDriver(w *World, coord *core.Coordinator, epoch core.Epoch) *driver {
	return &driver{
		w: w, coord: coord, epoch: epoch,
		copies: map[core.VMID]*Transfer{}, started: map[core.VMID]Time{},
		timers: map[core.TimerID]int64{}, images: map[core.VMID]image{}, faults: map[core.VMID]int64{},
	}
}

// emit queues an event for the core d from now.
func (d *driver) emit(delay Time, ev core.Event) {
	d.w.Eng.After(delay, d, drvEvCore, d.events.put(ev))
}

// Handle feeds a queued event to the core, or fires a core timer.
func (d *driver) Handle(kind Kind, arg int64) {
	switch kind {
	case drvEvCore:
		d.step(d.events.take(arg))
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
	hc := w.Cfg.Host
	switch c := c.(type) {
	case core.CopyRound:
		vm := w.VMs[c.VM]
		pages := vm.Mem.Sync(now)
		if c.All {
			pages = vm.Mem.Pages
		}
		d.started[c.VM] = now
		d.copies[c.VM] = d.sinkResource(c.VM, c.Sink).Start(pages*core.PageSize, func() {
			delete(d.copies, c.VM)
			t := w.Eng.Now()
			d.step(core.RoundCopied{VM: c.VM, Round: c.Round, Sent: pages, Dirty: vm.Mem.Dirty(t), Elapsed: t - d.started[c.VM]})
		})
	case core.StartLiveCopy:
		panic("sim: the simulator runs the core in Driven mode")
	case core.PauseVM:
		// The VM runs on until the pause takes effect; the core hears of
		// it in the same instant, so its colour flips exactly at the pause
		// and nothing reaches the paused VM in an earlier colour.
		w.Eng.After(hc.PauseLatency, vmFunc{d, c.VM, true}, 0, 0)
	case core.SetColour:
		// The core may re-issue a colour change (on abort it re-issues,
		// idempotently, those a VM still needs): a port already in the
		// epoch has passed its snapshot point and has its image; a second
		// cut would be a malformed trace.
		if w.Net.Epoch(c.VM) >= c.Epoch {
			break
		}
		w.Net.SetEpoch(c.VM, c.Epoch)
		d.images[c.VM] = w.capture(c.VM)
	case core.FreezeDisk:
		// The simulated VMs have no disks: their state is memory and TCP.
	case core.CopyFinal:
		vm := w.VMs[c.VM]
		pages := vm.Mem.Sync(now)
		if c.All {
			pages = vm.Mem.Pages
		}
		d.copies[c.VM] = d.sinkResource(c.VM, c.Sink).Start(pages*core.PageSize+hc.DeviceState, func() {
			delete(d.copies, c.VM)
			d.step(core.FinalCopied{VM: c.VM, Sent: pages})
		})
	case core.ProtectMemory:
		vm := w.VMs[c.VM]
		vm.Mem.Sync(now)
		d.copies[c.VM] = d.sinkResource(c.VM, c.Sink).Start(vm.Mem.Pages*core.PageSize+hc.DeviceState, func() {
			delete(d.copies, c.VM)
			// Pages written before the background copy reached them were
			// copied first, at a write fault; on average the copy had
			// reached half of memory when such a page was first written.
			d.faults[c.VM] = vm.Mem.Dirty(w.Eng.Now()) / 2
			d.step(core.FinalCopied{VM: c.VM, Sent: vm.Mem.Pages})
		})
	case core.ResumeVM:
		id := c.VM
		w.Eng.After(hc.ResumeLatency, vmFunc{d, id, false}, 0, 0)
	case core.ThrottleVM:
		w.VMs[c.VM].SetThrottle(c.Percent)
	case core.FlushImage:
		d.copies[c.VM] = w.Hosts[w.VMs[c.VM].Host].Disk.Start(w.VMs[c.VM].Mem.Pages*core.PageSize+hc.DeviceState, func() {
			delete(d.copies, c.VM)
			d.step(core.ImageFlushed{VM: c.VM})
		})
	case core.CancelCopy:
		if t, ok := d.copies[c.VM]; ok {
			t.Cancel()
			delete(d.copies, c.VM)
		}
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
	default:
		panic(fmt.Sprintf("sim: unknown command %T", c))
	}
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
