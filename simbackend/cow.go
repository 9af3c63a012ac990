package sim

import "github.com/vnsnap/vnsnap/core"

// cowCopy is a copy-on-write copy of one VM (the answer to ProtectMemory):
// with the VM paused at its snapshot point the hypervisor saves the device
// state and write-protects memory (armed), the VM runs again, and memory is
// copied in the background in cowChunks steps. A first write to a page the
// copy has not reached faults: the page's content at the point is copied
// first, and the writing VM stalls for that copy (its page at the sink's
// bandwidth share, plus the calibrated fault cost). The writes of each step
// are found by the sync at its end, before the step's pages are recorded,
// so a page written while its step was copying counts as a fault.
type cowCopy struct {
	d      *driver
	id     core.VMID
	vm     *VM
	res    *Resource
	img    *copyImage
	ref    []uint32 // the versions at the point: what the image must equal
	next   int64    // first unit not yet reached by the background copy
	step   int64    // units per step
	armed  bool
	resume bool // a ResumeVM waits for the arming
	faults int64
	gen    int64 // the VM's cancel generation at the start
}

// cowChunks is the number of steps of a background copy.
const cowChunks = 64

func (d *driver) protect(c core.ProtectMemory) {
	w := d.w
	vm := w.VMs[c.VM]
	vm.Mem.Sync(w.Eng.Now()) // the VM is paused: versions at the point
	ref := make([]uint32, vm.Mem.Units())
	copy(ref, vm.Mem.Versions())
	cw := &cowCopy{
		d: d, id: c.VM, vm: vm, res: d.sinkResource(c.VM, c.Sink), img: d.image(c.VM, true), ref: ref,
		step: max(1, (vm.Mem.Units()+cowChunks-1)/cowChunks), gen: d.cgen[c.VM],
	}
	d.cows[c.VM] = cw
	start := d.reserve(c.VM, Time(w.Cfg.Calibration.QMPRoundTrip+w.Cfg.Calibration.COWArm))
	d.later(start, c.VM, func() {
		d.copies[c.VM] = cw.res.Start(w.Cfg.Calibration.pausedState(), func() {
			if d.cgen[c.VM] != cw.gen {
				return
			}
			cw.armed = true
			if cw.resume {
				d.busy[c.VM] = w.Eng.Now()
				d.resume(c.VM)
			}
			cw.copyStep()
		})
	})
}

// copyStep starts the background copy's next step.
func (cw *cowCopy) copyStep() {
	m := cw.vm.Mem
	hi := min(cw.next+cw.step, m.Units())
	pages := min((hi-cw.next)*m.UnitPages, m.Pages-cw.next*m.UnitPages)
	// Zero pages cost nothing: each step sends its share of the
	// populated pages.
	bytes := pages * core.PageSize
	if m.Full < m.Pages {
		bytes = int64(float64(bytes) * float64(m.Full) / float64(m.Pages))
	}
	// A background copy slower than the sink takes the sink for longer
	// (as many more bytes at the sink's rate).
	if bw := cw.d.w.Cfg.Calibration.COWBandwidth; bw > 0 && bw < cw.res.Rate() {
		bytes = int64(float64(bytes) * cw.res.Rate() / bw)
	}
	d := cw.d
	d.copies[cw.id] = cw.res.Start(bytes, func() {
		if d.cgen[cw.id] != cw.gen {
			return
		}
		cw.stepDone(hi)
	})
}

func (cw *cowCopy) stepDone(hi int64) {
	d, w := cw.d, cw.d.w
	m := cw.vm.Mem
	// The step's writes: a first write to a page not yet copied faults,
	// and the fault copies the page before the write changes it.
	var faults int64
	_, _ = m.SyncUnits(w.Eng.Now(), func(u int32) {
		if !cw.img.copied(u) {
			cw.img.record([]int32{u})
			faults++
		}
	})
	cw.faults += faults
	cw.img.recordRange(int32(cw.next), int32(hi))
	cw.next = hi
	last := hi >= m.Units()
	if !last {
		cw.copyStep()
	}
	if faults > 0 {
		// A fault's copy shares the sink with the copies running now.
		share := cw.res.Rate() / float64(cw.res.Active()+1)
		per := float64(m.UnitPages*core.PageSize)/share*1e9 + float64(w.Cfg.Calibration.COWFault)
		cw.vm.Stall(nanos(float64(faults) * per))
	}
	if !last {
		return
	}
	delete(d.copies, cw.id)
	delete(d.cows, cw.id)
	d.faults[cw.id] = cw.faults
	d.complete(cw.id, cw.ref)
	d.step(core.FinalCopied{VM: cw.id, Sent: m.Full})
}
