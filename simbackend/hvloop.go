package sim

import "github.com/vnsnap/vnsnap/core"

// liveLoop is a modelled hypervisor's own pre-copy loop for one VM
// (Observed mode, the answer to StartLiveCopy). It reports to the core
// exactly what realbackend reports from a real hypervisor: RoundCopied for
// each live pass (Round and Elapsed only: QEMU's MIGRATION_PASS n > 1
// before the pause is round n-1), VMPaused when the hypervisor has paused
// the VM at its snapshot point (QEMU: pre-switchover), and after the core's
// CopyFinal releases it, FinalCopied with every page the save sent. The
// hypervisor throttles the VM itself (auto-converge) and lifts the throttle
// when the copy ends or is cancelled, as QEMU does.
type liveLoop struct {
	d    *driver
	id   core.VMID
	vm   *VM
	res  *Resource
	sink core.Sink
	xen  bool

	gen       int64 // bumped by cancel: stale events are ignored
	xfer      *Transfer
	pass      int   // live passes finished
	syncs     int   // QEMU's dirty-sync count
	passPages int64 // pages of the pass in progress
	passStart Time
	lastEvent Time  // the previous RoundCopied (realbackend's Elapsed)
	sent      int64 // pages sent by finished passes (the final copy's included, once out)
	img       *copyImage
	pending   int64   // dirty pages found at the last sync, not sent live
	pendUnits []int32 // their units
	stopAfter bool    // Xen: the pass in progress is the last live one
	paused    bool

	// auto-converge
	throttle, high   int
	periodStart      Time
	periodSentBytes  float64
	periodDirtyPages int64
	tickSyncs        int
}

const (
	lpEvPause Kind = iota + 1
	lpEvTick
	lpEvFinal
	lpEvDone
)

func (d *driver) startLive(id core.VMID, sink core.Sink) {
	w := d.w
	now := w.Eng.Now()
	l := &liveLoop{
		d: d, id: id, vm: w.VMs[id], res: d.sinkResource(id, sink), sink: sink,
		xen: w.Cfg.Hypervisor == HypervisorXen, lastEvent: now, periodStart: now,
	}
	d.loops[id] = l
	// Dirty logging starts with every page to send (QEMU's setup sync,
	// libxc's bitmap_set): the log of writes so far is discarded.
	l.vm.Mem.Sync(now)
	l.syncs = 1
	q := &w.Cfg.QEMU
	if !l.xen && q.AutoConverge {
		w.Eng.After(q.SyncTimeslice, l, lpEvTick, l.gen)
	}
	l.img = d.image(id, true)
	l.img.recordAll()
	l.startPass(l.vm.Mem.Full)
}

// startPass sends pages (whose units the caller has recorded in the image:
// a pass copies the versions the units have at its start; one written
// during the pass is found by the next sync and sent again).
func (l *liveLoop) startPass(pages int64) {
	l.passPages = pages
	l.passStart = l.d.w.Eng.Now()
	g := l.gen
	l.xfer = l.res.StartCapped(pages*core.PageSize, l.d.w.Cfg.Calibration.LiveBandwidth, func() { l.passDone(g) })
}

// sentBytes is what the save has sent so far, the pass in progress included.
func (l *liveLoop) sentBytes() float64 {
	b := float64(l.sent * core.PageSize)
	if l.xfer != nil {
		b += float64(l.passPages*core.PageSize - l.xfer.Remaining())
	}
	return b
}

func (l *liveLoop) passDone(g int64) {
	if g != l.gen {
		return
	}
	w := l.d.w
	now := w.Eng.Now()
	l.xfer = nil
	l.sent += l.passPages
	l.pass++
	if l.xen {
		l.xenNext(now)
		return
	}
	dirty, units := l.sync(now)
	elapsed := now - l.passStart
	// QEMU's threshold: what the measured bandwidth moves within the
	// downtime limit. A pass that took no time measured no bandwidth and
	// left nothing to send.
	fits := elapsed <= 0
	if !fits {
		bw := float64(l.passPages*core.PageSize) / elapsed.Seconds()
		fits = float64(dirty*core.PageSize) <= bw*w.Cfg.QEMU.DowntimeLimit.Seconds()
	}
	if fits {
		l.pending = dirty
		l.pendUnits = append(l.pendUnits[:0], units...)
		l.suspend()
		return
	}
	l.img.record(units)
	l.startPass(dirty)
}

// sync is QEMU's migration_bitmap_sync: it returns the pages dirtied since
// the last sync (and their units), reports the pass to the core, and runs
// auto-converge's check once a period has passed.
func (l *liveLoop) sync(now Time) (int64, []int32) {
	q := &l.d.w.Cfg.QEMU
	dirty, units := l.vm.Mem.SyncUnits(now, nil)
	l.syncs++
	l.periodDirtyPages += dirty
	if now-l.periodStart > q.Period {
		sent := l.sentBytes()
		if q.AutoConverge {
			xfer := sent - l.periodSentBytes
			if float64(l.periodDirtyPages*core.PageSize) > xfer*float64(q.TriggerThreshold)/100 {
				l.high++
				if l.high >= 2 {
					l.high = 0
					l.throttleUp()
				}
			}
		}
		l.periodStart, l.periodSentBytes, l.periodDirtyPages = now, sent, 0
	}
	l.report(l.syncs-1, now)
	return dirty, units
}

func (l *liveLoop) throttleUp() {
	q := &l.d.w.Cfg.QEMU
	next := q.ThrottleInitial
	if l.throttle > 0 {
		next = min(l.throttle+q.ThrottleIncrement, q.ThrottleMax)
	}
	l.throttle = next
	l.d.maxThrottle[l.id] = max(l.d.maxThrottle[l.id], next)
	l.vm.SetThrottle(next)
}

// report tells the core of a live pass, as realbackend does.
func (l *liveLoop) report(round int, now Time) {
	ev := core.RoundCopied{VM: l.id, Round: round, Elapsed: now - l.lastEvent}
	l.lastEvent = now
	l.d.step(ev)
}

// xenNext is libxc's loop after live pass l.pass: stop after the pass that
// found few dirty pages or after MaxIterations passes, else send what the
// pass let the guest dirty.
func (l *liveLoop) xenNext(now Time) {
	x := l.d.w.Cfg.Xen
	l.report(l.pass, now)
	if l.stopAfter || l.pass >= x.MaxIterations {
		l.suspend()
		return
	}
	dirty, units := l.vm.Mem.SyncUnits(now, nil)
	l.stopAfter = dirty < x.TargetDirty
	if dirty == 0 {
		l.suspend()
		return
	}
	l.img.record(units)
	l.startPass(dirty)
}

// suspend stops the VM for the final copy; the core hears VMPaused when it
// is paused.
func (l *liveLoop) suspend() {
	l.d.w.Eng.After(Time(l.d.w.Cfg.Calibration.Stop), l, lpEvPause, l.gen)
}

// Handle fires the loop's own events.
func (l *liveLoop) Handle(kind Kind, g int64) {
	if g != l.gen {
		return
	}
	w := l.d.w
	switch kind {
	case lpEvPause:
		l.paused = true
		l.vm.Pause()
		l.d.step(core.VMPaused{VM: l.id})
	case lpEvTick:
		// QEMU's dirty-sync timer: a sync when none happened for a
		// timeslice, the pages it finds added to the pass in progress.
		if l.paused || l.xfer == nil {
			return
		}
		if l.syncs > 1 && l.syncs == l.tickSyncs {
			now := w.Eng.Now()
			dirty, units := l.sync(now)
			if g != l.gen || l.xfer == nil {
				return
			}
			l.img.record(units)
			rem := l.xfer.Remaining()
			l.xfer.Cancel()
			l.passPages += dirty
			gen := l.gen
			l.xfer = l.res.StartCapped(rem+dirty*core.PageSize, w.Cfg.Calibration.LiveBandwidth, func() { l.passDone(gen) })
		}
		l.tickSyncs = l.syncs
		w.Eng.After(w.Cfg.QEMU.SyncTimeslice, l, lpEvTick, l.gen)
	case lpEvFinal:
		now := w.Eng.Now()
		// What the last sync found and what the guest dirtied since.
		l.img.record(l.pendUnits)
		n, units := l.vm.Mem.SyncUnits(now, nil)
		l.img.record(units)
		dirty := l.pending + n
		if l.vm.Mem.UnitPages == 1 {
			// A unit is a page: send each dirty page once.
			set := newUnitSet(l.vm.Mem.Units())
			set.add(l.pendUnits)
			set.add(units)
			dirty = int64(len(set.list))
		}
		total := l.sent + dirty
		l.xfer = l.res.Start(dirty*core.PageSize+w.Cfg.Calibration.pausedState(), func() {
			if g != l.gen {
				return
			}
			l.xfer = nil
			l.sent = total
			l.d.complete(l.id, l.vm.Mem.Versions())
			// The switchover after the last byte (see copyFinal).
			if sw := Time(w.Cfg.Calibration.switchover(l.sink)); sw > 0 {
				w.Eng.After(sw, l, lpEvDone, l.gen)
				return
			}
			l.Handle(lpEvDone, l.gen)
		})
	case lpEvDone:
		l.unthrottle()
		delete(l.d.loops, l.id)
		l.d.step(core.FinalCopied{VM: l.id, Sent: l.sent})
	}
}

// final is the core's CopyFinal: the hypervisor is let go on (QEMU:
// migrate-continue) at start and sends the rest.
func (l *liveLoop) final(start Time) {
	l.d.w.Eng.At(start, l, lpEvFinal, l.gen)
}

func (l *liveLoop) unthrottle() {
	if l.throttle > 0 {
		l.throttle = 0
		l.vm.SetThrottle(0)
	}
}

// cancel stops the loop (QEMU's migrate_cancel): nothing more is sent or
// reported and the throttle is lifted; a VM the hypervisor paused stays
// paused for the core's ResumeVM.
func (l *liveLoop) cancel() {
	l.gen++
	if l.xfer != nil {
		l.xfer.Cancel()
		l.xfer = nil
	}
	l.unthrottle()
}
