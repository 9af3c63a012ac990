package core

import (
	"fmt"
	"time"
)

// Mode says who runs the pre-copy loop.
type Mode uint8

// The modes.
const (
	// Driven: the core orders every round (CopyRound) and applies its stop
	// policy. The simulator runs in this mode.
	Driven Mode = iota
	// Observed: the hypervisor runs its own loop (StartLiveCopy) and reports
	// rounds and the final pause as events. Real backends run in this mode.
	Observed
)

// String returns "driven" or "observed".
func (m Mode) String() string {
	if m == Observed {
		return "observed"
	}
	return "driven"
}

type phase uint8

const (
	phIdle     phase = iota
	phRound          // Driven pre-copy: a CopyRound is running
	phLive           // Observed pre-copy: the hypervisor is iterating
	phPausing        // PauseVM issued
	phPaused         // paused at the snapshot point, waiting for the coordinator (sync-freeze)
	phFinal          // CopyFinal issued
	phCopied         // copied while paused, waiting for the coordinator to resume (sync-freeze)
	phResuming       // ResumeVM issued
	phCOW            // copy-on-write: resumed or resuming, background copy running
	phFlushing       // FlushImage issued
	phDone           // image complete and, for the memory sink, on disk
)

var phaseNames = [...]string{"idle", "round", "live", "pausing", "paused", "final", "copied", "resuming", "cow", "flushing", "done"}

func (p phase) String() string { return phaseNames[p] }

// VMReport is what the core measured of one VM's copy. Times are Clock
// readings; a zero time with its flag false means it did not happen.
type VMReport struct {
	VM       VMID
	Host     HostID
	Method   Method
	Sink     Sink // the sink actually used
	Fallback bool // a memory-sink VM that found no RAM budget and wrote to disk
	Start    time.Duration
	Paused   time.Duration // the snapshot point
	Resumed  time.Duration
	Copied   time.Duration // the image is complete in its sink
	Flushed  time.Duration // memory sink: the image is on disk
	// Rounds counts pre-copy rounds including the final one.
	Rounds      int
	PagesSent   int64
	MaxThrottle int
	HasPoint    bool
	Done        bool
}

// Downtime is how long the VM was paused around its snapshot point.
func (r VMReport) Downtime() time.Duration {
	if !r.HasPoint || r.Resumed < r.Paused {
		return 0
	}
	return r.Resumed - r.Paused
}

// Duration is the time from the start of the VM's copy until its image was
// complete in its sink (the memory sink's later flush is not included); 0 if
// the image was never complete (an aborted copy).
func (r VMReport) Duration() time.Duration {
	if r.Copied < r.Start {
		return 0
	}
	return r.Copied - r.Start
}

// BytesCopied is the number of bytes of memory pages copied.
func (r VMReport) BytesCopied() int64 { return r.PagesSent * PageSize }

// liveCopy is the per-VM live-copy state machine. The coordinator owns one
// per VM and routes the VM's events to it.
type liveCopy struct {
	id       VMID
	host     HostID
	pages    int64
	method   Method
	mode     Mode
	sink     Sink
	epoch    Epoch
	policy   StopPolicy
	freeze   bool // sync-freeze: wait for the coordinator before copying and before resuming
	phase    phase
	round    int
	throttle int  // Driven pre-copy: the CPU throttle last set with ThrottleVM
	resumed  bool // copy-on-write: VMResumed seen
	copied   bool // copy-on-write: FinalCopied seen
	rep      VMReport
}

func (l *liveCopy) errorf(ev Event) error {
	return &ProtocolError{VM: l.id, Phase: l.phase.String(), Event: ev}
}

// start begins the copy.
func (l *liveCopy) start(now time.Duration) []Command {
	l.rep.Start = now
	switch {
	case l.method == PreCopy && l.mode == Observed:
		l.phase = phLive
		return []Command{StartLiveCopy{VM: l.id, Sink: l.sink}}
	case l.method == PreCopy:
		if l.policy.Decide(RoundStats{MemPages: l.pages, Dirty: l.pages}).Stop {
			l.phase = phPausing
			return []Command{PauseVM{VM: l.id}}
		}
		l.phase = phRound
		l.round = 1
		return []Command{CopyRound{VM: l.id, Round: 1, All: true, Sink: l.sink}}
	default:
		l.phase = phPausing
		return []Command{PauseVM{VM: l.id}}
	}
}

func (l *liveCopy) onRound(ev RoundCopied, now time.Duration) ([]Command, error) {
	switch l.phase {
	case phLive:
		l.round = ev.Round
		l.rep.Rounds = ev.Round
		l.rep.PagesSent += ev.Sent
		return nil, nil
	case phRound:
	default:
		return nil, l.errorf(ev)
	}
	if ev.Round != l.round {
		return nil, l.errorf(ev)
	}
	l.rep.Rounds = l.round
	l.rep.PagesSent += ev.Sent
	d := l.policy.Decide(RoundStats{
		Round: l.round, Sent: ev.Sent, Dirty: ev.Dirty, Elapsed: ev.Elapsed,
		TotalSent: l.rep.PagesSent, MemPages: l.pages,
	})
	var cmds []Command
	if d.Throttle >= 0 {
		if d.Throttle > l.rep.MaxThrottle {
			l.rep.MaxThrottle = d.Throttle
		}
		l.throttle = d.Throttle
		cmds = append(cmds, ThrottleVM{VM: l.id, Percent: d.Throttle})
	}
	if d.Stop {
		l.phase = phPausing
		return append(cmds, PauseVM{VM: l.id}), nil
	}
	l.round++
	return append(cmds, CopyRound{VM: l.id, Round: l.round, Sink: l.sink}), nil
}

// onPaused handles the pause at the snapshot point: the port's colour flips
// and the disk is frozen before the VM can run again.
func (l *liveCopy) onPaused(ev VMPaused, now time.Duration) ([]Command, error) {
	if l.phase != phPausing && l.phase != phLive {
		return nil, l.errorf(ev)
	}
	l.rep.Paused = now
	l.rep.HasPoint = true
	cmds := []Command{SetColour{VM: l.id, Epoch: l.epoch}, FreezeDisk{VM: l.id}}
	switch {
	case l.method == CopyOnWrite:
		l.phase = phCOW
		return append(cmds, ProtectMemory{VM: l.id, Sink: l.sink}, ResumeVM{VM: l.id}), nil
	case l.freeze:
		l.phase = phPaused
		return cmds, nil
	default:
		return append(cmds, l.copyFinal()), nil
	}
}

func (l *liveCopy) copyFinal() Command {
	l.phase = phFinal
	return CopyFinal{VM: l.id, All: l.method == StopAndCopy || l.round == 0, Sink: l.sink}
}

// release lets a frozen VM go on to its next step (sync-freeze barrier).
func (l *liveCopy) release() []Command {
	switch l.phase {
	case phPaused:
		return []Command{l.copyFinal()}
	case phCopied:
		l.phase = phResuming
		return []Command{ResumeVM{VM: l.id}}
	}
	panic(fmt.Sprintf("core: release of vm %d in phase %s", l.id, l.phase))
}

func (l *liveCopy) onFinal(ev FinalCopied, now time.Duration) ([]Command, error) {
	switch l.phase {
	case phFinal:
		l.rep.Copied = now
		l.rep.PagesSent += ev.Sent
		if l.method == PreCopy {
			l.rep.Rounds++
		} else {
			l.rep.Rounds = 1
		}
		if l.freeze {
			l.phase = phCopied
			return nil, nil
		}
		l.phase = phResuming
		return append(l.unthrottle(), ResumeVM{VM: l.id}), nil
	case phCOW:
		if l.copied {
			return nil, l.errorf(ev)
		}
		l.copied = true
		l.rep.Copied = now
		l.rep.PagesSent += ev.Sent
		l.rep.Rounds = 1
		return l.cowStep(), nil
	}
	return nil, l.errorf(ev)
}

func (l *liveCopy) onResumed(ev VMResumed, now time.Duration) ([]Command, error) {
	switch l.phase {
	case phResuming:
		l.rep.Resumed = now
		return l.finish(), nil
	case phCOW:
		if l.resumed {
			return nil, l.errorf(ev)
		}
		l.resumed = true
		l.rep.Resumed = now
		return l.cowStep(), nil
	}
	return nil, l.errorf(ev)
}

func (l *liveCopy) cowStep() []Command {
	if l.resumed && l.copied {
		return l.finish()
	}
	return nil
}

// finish runs once the VM runs again and its image is complete.
func (l *liveCopy) finish() []Command {
	if l.sink == MemorySink {
		l.phase = phFlushing
		return []Command{FlushImage{VM: l.id}}
	}
	l.phase = phDone
	l.rep.Flushed = l.rep.Copied
	l.rep.Done = true
	return nil
}

func (l *liveCopy) onFlushed(ev ImageFlushed, now time.Duration) error {
	if l.phase != phFlushing {
		return l.errorf(ev)
	}
	l.phase = phDone
	l.rep.Flushed = now
	l.rep.Done = true
	return nil
}

// unthrottle removes the auto-converge throttle, if any, before the VM runs on
// after its copy: as in QEMU, the throttle lasts only while the copy iterates.
func (l *liveCopy) unthrottle() []Command {
	if l.throttle <= 0 {
		return nil
	}
	l.throttle = 0
	return []Command{ThrottleVM{VM: l.id, Percent: 0}}
}

// abort returns the commands that leave the VM running in the snapshot's
// epoch with no copy in progress. A backend stops a batch at its first failed
// command, so a command the core issued may never have been carried out: the
// abort re-issues every colour change, unthrottle and resume the VM may still
// need, and the backend carries them out idempotently (see the failure
// contract in the package doc).
func (l *liveCopy) abort() []Command {
	var cmds []Command
	switch l.phase {
	case phRound, phLive, phFinal, phFlushing:
		cmds = append(cmds, CancelCopy{VM: l.id})
	case phCOW:
		if !l.copied {
			cmds = append(cmds, CancelCopy{VM: l.id})
		}
	}
	cmds = append(cmds, SetColour{VM: l.id, Epoch: l.epoch})
	if l.rep.MaxThrottle > 0 {
		l.throttle = 0
		cmds = append(cmds, ThrottleVM{VM: l.id, Percent: 0})
	}
	if l.mayBePaused() {
		cmds = append(cmds, ResumeVM{VM: l.id})
	}
	l.phase = phDone
	return cmds
}

// mayBePaused reports whether the VM may be paused now, as far as the core
// knows: a pause was asked for (or, in Observed pre-copy, the hypervisor may
// have reached its final pause) and no VMResumed has been seen since.
func (l *liveCopy) mayBePaused() bool {
	switch l.phase {
	case phLive, phPausing, phPaused, phFinal, phCopied, phResuming:
		return true
	case phCOW:
		return !l.resumed
	}
	return false
}

// ProtocolError reports an event that does not fit the state of the VM it
// names: a backend bug or a stale event.
type ProtocolError struct {
	VM    VMID
	Phase string
	Event Event
}

func (e *ProtocolError) Error() string {
	return fmt.Sprintf("core: vm %d in phase %s cannot take %v", e.VM, e.Phase, e.Event)
}
