package sim

import (
	"math"

	"github.com/vnsnap/vnsnap/core"
)

// VM is a simulated virtual machine: memory with a dirtying model, a CPU
// that workloads consume, and a NIC. While it is paused nothing in it runs:
// its timers and CPU work wait, and frames arriving for it wait in the
// backend's ring (dropped when the ring is full), to be handled on resume.
type VM struct {
	ID       core.VMID
	Host     int
	Mem      *Memory
	RingSize int

	eng      *Engine
	net      *Network
	paused   bool // the guest does not run: held or stalled
	held     bool // paused by the core (Pause)
	throttle int
	ring     []*Frame
	evs      slots[vmEvent]
	deferred []int64
	cpu      cpuTask
	// PausedTotal is the time spent paused so far.
	PausedTotal Time
	pausedAt    Time
	// A stalled VM does not run either (a vCPU waiting for a write
	// fault's copy), but it is not paused: only the core pauses.
	stalled    bool
	stallStart Time
	stallEnd   Time
	stallGen   int64
	// StalledTotal is the time spent stalled so far.
	StalledTotal Time
}

type vmEvent struct {
	h    Handler
	kind Kind
	arg  int64
}

const (
	vmEvTimer Kind = iota + 1
	vmEvCPU
	vmEvUnstall
)

func newVM(eng *Engine, net *Network, id core.VMID, host int, mem *Memory) *VM {
	v := &VM{ID: id, Host: host, Mem: mem, RingSize: 256, eng: eng, net: net}
	net.vms[id] = v
	return v
}

// Paused reports whether the VM is paused (by Pause; a stall is not a
// pause).
func (v *VM) Paused() bool { return v.held }

// Speed is the fraction of CPU the guest gets: 0 paused or stalled, less
// than 1 when throttled.
func (v *VM) Speed() float64 {
	if v.halted() {
		return 0
	}
	return 1 - float64(v.throttle)/100
}

// halted reports whether the guest does not run: paused or stalled.
func (v *VM) halted() bool { return v.paused }

// After schedules an event for a handler inside the VM d from now. If the
// VM is paused when it is due, it fires at resume.
func (v *VM) After(d Time, h Handler, kind Kind, arg int64) {
	slot := v.evs.put(vmEvent{h, kind, arg})
	v.eng.After(d, v, vmEvTimer, slot)
}

// Handle dispatches the VM's own events.
func (v *VM) Handle(kind Kind, arg int64) {
	switch kind {
	case vmEvTimer:
		if v.halted() {
			v.deferred = append(v.deferred, arg)
			return
		}
		e := v.evs.take(arg)
		e.h.Handle(e.kind, e.arg)
	case vmEvCPU:
		v.cpu.fire(v, arg)
	case vmEvUnstall:
		if arg == v.stallGen && v.stalled {
			now := v.eng.Now()
			v.stalled = false
			v.StalledTotal += now - v.stallStart
			if !v.held {
				v.paused = false
				v.unhalt(now)
			}
		}
	default:
		panic("sim: unknown VM event")
	}
}

// Send puts a frame on the network.
func (v *VM) Send(f *Frame) {
	if v.halted() {
		panic("sim: a paused VM sent a frame")
	}
	f.Src = v.ID
	v.net.Send(f)
}

// accept takes a frame from the switch. It returns false if the frame is
// dropped because the ring of a paused VM is full.
func (v *VM) accept(f *Frame) bool {
	if v.halted() {
		if len(v.ring) >= v.RingSize {
			return false
		}
		v.ring = append(v.ring, f)
		return true
	}
	v.deliver(f)
	return true
}

func (v *VM) deliver(f *Frame) {
	v.net.delivered(f)
	if f.To != nil {
		f.To.Input(f)
	}
}

// Pause stops the VM.
func (v *VM) Pause() {
	if v.held {
		return
	}
	now := v.eng.Now()
	v.held = true
	v.pausedAt = now
	if !v.paused {
		v.halt(now)
		v.paused = true
	}
}

// Resume lets the VM run: frames that waited in the ring are delivered, then
// the timers that fell due while it was paused fire, in order. A VM still
// stalled runs when the stall ends.
func (v *VM) Resume() {
	if !v.held {
		return
	}
	now := v.eng.Now()
	v.held = false
	v.PausedTotal += now - v.pausedAt
	if !v.stalled {
		v.paused = false
		v.unhalt(now)
	}
}

// Stall stops the guest for d (a write fault waiting for its page's copy),
// after any stall in progress: frames wait in the ring and timers wait, as
// while paused.
func (v *VM) Stall(d Time) {
	if d <= 0 {
		return
	}
	now := v.eng.Now()
	if !v.stalled {
		if !v.paused {
			v.halt(now)
			v.paused = true
		}
		v.stalled = true
		v.stallStart, v.stallEnd = now, now
	}
	v.stallEnd += d
	v.stallGen++
	v.eng.At(v.stallEnd, v, vmEvUnstall, v.stallGen)
}

func (v *VM) halt(now Time) {
	v.cpu.advance(now, v.Speed())
	v.Mem.SetSpeed(now, 0)
}

func (v *VM) unhalt(now Time) {
	v.cpu.advance(now, 0)
	v.Mem.SetSpeed(now, v.Speed())
	ring := v.ring
	v.ring = nil
	for _, f := range ring {
		if v.halted() {
			v.ring = append(v.ring, f)
			continue
		}
		v.deliver(f)
	}
	def := v.deferred
	v.deferred = nil
	for _, slot := range def {
		if v.halted() {
			v.deferred = append(v.deferred, slot)
			continue
		}
		e := v.evs.take(slot)
		e.h.Handle(e.kind, e.arg)
	}
	v.cpu.reschedule(v)
}

// SetThrottle takes percent of the VM's CPU away (auto-converge).
func (v *VM) SetThrottle(percent int) {
	now := v.eng.Now()
	v.cpu.advance(now, v.Speed())
	v.throttle = percent
	v.Mem.SetSpeed(now, v.Speed())
	v.cpu.reschedule(v)
}

// Compute runs work of CPU time on the VM's CPU and fires the handler's
// event when it is done; pauses and throttling stretch it. One computation
// runs at a time: starting another replaces it.
func (v *VM) Compute(work Time, h Handler, kind Kind, arg int64) {
	now := v.eng.Now()
	v.cpu = cpuTask{remaining: work.Seconds(), h: h, kind: kind, arg: arg, last: now, gen: v.cpu.gen + 1, active: true}
	v.cpu.reschedule(v)
}

// ComputeLeft returns the CPU work left of the computation in progress, or
// zero if there is none.
func (v *VM) ComputeLeft() Time {
	if !v.cpu.active {
		return 0
	}
	v.cpu.advance(v.eng.Now(), v.Speed())
	return nanos(math.Max(v.cpu.remaining, 0) * 1e9)
}

// cpuTask is the VM's one computation in progress (a fluid model).
type cpuTask struct {
	remaining float64 // seconds of CPU work
	last      Time
	gen       int64
	active    bool
	h         Handler
	kind      Kind
	arg       int64
}

func (c *cpuTask) advance(now Time, speed float64) {
	if c.active && now > c.last {
		c.remaining -= (now - c.last).Seconds() * speed
	}
	c.last = now
}

func (c *cpuTask) reschedule(v *VM) {
	if !c.active {
		return
	}
	c.gen++
	s := v.Speed()
	if s <= 0 {
		return
	}
	d := nanos(math.Ceil(math.Max(c.remaining, 0) / s * 1e9))
	v.eng.After(d, v, vmEvCPU, c.gen)
}

func (c *cpuTask) fire(v *VM, gen int64) {
	if gen != c.gen || !c.active || v.halted() {
		return
	}
	c.advance(v.eng.Now(), v.Speed())
	c.active = false
	c.h.Handle(c.kind, c.arg)
}
