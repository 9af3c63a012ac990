package core

import (
	"errors"
	"fmt"
	"time"
)

// VMSpec describes one VM of the VNE to the coordinator.
type VMSpec struct {
	Host     HostID
	MemBytes int64
}

// HostSpec describes one host: RAMBudget is the RAM its memory-sink daemon
// may hold at once, in bytes.
type HostSpec struct {
	RAMBudget int64
}

// Config configures one VNE snapshot.
type Config struct {
	Algorithm Algorithm
	Sink      Sink
	Mode      Mode
	// Policy makes the stop policy of each pre-copy VM (Driven mode). Nil
	// means Xen's defaults.
	Policy PolicyFactory
	// Epoch is the epoch this snapshot creates; it must be at least 1 and
	// greater than every earlier snapshot's.
	Epoch Epoch
	VMs   []VMSpec
	Hosts []HostSpec
	// Deadline aborts the snapshot if it has not committed this long after
	// Started. Zero means no deadline.
	Deadline time.Duration
}

// Validate reports the first problem with the config, naming the field.
func (c *Config) Validate() error {
	switch {
	case c.Algorithm >= numAlgorithms:
		return fmt.Errorf("config: Algorithm %d unknown", c.Algorithm)
	case c.Sink > MemorySink:
		return fmt.Errorf("config: Sink %d unknown", c.Sink)
	case c.Mode > Observed:
		return fmt.Errorf("config: Mode %d unknown", c.Mode)
	case c.Epoch == 0:
		return errors.New("config: Epoch must be at least 1")
	case len(c.VMs) == 0:
		return errors.New("config: VMs is empty")
	case len(c.Hosts) == 0:
		return errors.New("config: Hosts is empty")
	case c.Deadline < 0:
		return fmt.Errorf("config: Deadline %v is negative", c.Deadline)
	}
	for i, v := range c.VMs {
		if v.Host < 0 || int(v.Host) >= len(c.Hosts) {
			return fmt.Errorf("config: VMs[%d].Host %d out of range [0,%d)", i, v.Host, len(c.Hosts))
		}
		if v.MemBytes <= 0 || v.MemBytes%PageSize != 0 {
			return fmt.Errorf("config: VMs[%d].MemBytes %d must be a positive multiple of %d", i, v.MemBytes, PageSize)
		}
	}
	for i, h := range c.Hosts {
		if h.RAMBudget < 0 {
			return fmt.Errorf("config: Hosts[%d].RAMBudget %d is negative", i, h.RAMBudget)
		}
	}
	return nil
}

// State is the coordinator's overall state.
type State uint8

// The coordinator states.
const (
	StateIdle       State = iota
	StateRunning          // copies in progress
	StateCommitting       // every image complete; Commit issued
	StateCommitted        // the snapshot is recorded
	StateAborted          // abandoned; every VM resumed or being resumed
)

// String returns the state's name.
func (s State) String() string {
	return [...]string{"idle", "running", "committing", "committed", "aborted"}[s]
}

const deadlineTimer TimerID = 1

// Coordinator runs one VNE snapshot: it starts every VM's copy according to
// the algorithm, tracks each one, commits when all images are complete, and
// aborts cleanly (every VM resumed, images discarded, nothing recorded) on a
// failure or at the deadline. It is a pure state machine: feed it events with
// Step and carry out the commands it returns, in order.
type Coordinator struct {
	cfg    Config
	clock  Clock
	vms    []*liveCopy
	budget budget
	state  State
	reason string
	timer  bool // the deadline timer is set
	done   int  // VMs in phDone (Running state)
	paused int  // sync-freeze: VMs paused at their point
	copied int  // sync-freeze: VMs copied
}

// NewCoordinator validates cfg and returns a coordinator in state StateIdle.
func NewCoordinator(cfg Config, clock Clock) (*Coordinator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Policy == nil {
		cfg.Policy = func() StopPolicy { return DefaultXen() }
	}
	c := &Coordinator{cfg: cfg, clock: clock, budget: newBudget(cfg.Hosts)}
	method := cfg.Algorithm.Method()
	for i, v := range cfg.VMs {
		l := &liveCopy{
			id: VMID(i), host: v.Host, pages: v.MemBytes / PageSize,
			method: method, mode: cfg.Mode, sink: cfg.Sink, epoch: cfg.Epoch,
			freeze: cfg.Algorithm == SyncFreeze,
		}
		if method == PreCopy {
			l.policy = cfg.Policy()
		}
		l.rep = VMReport{VM: l.id, Host: v.Host, Method: method}
		c.vms = append(c.vms, l)
	}
	return c, nil
}

// State returns the coordinator's state.
func (c *Coordinator) State() State { return c.state }

// Step feeds one event and returns the commands to carry out, in order. An
// event that does not fit the state returns a *ProtocolError and no commands;
// the caller should treat it as a backend bug. After an abort, late events of
// the abandoned copies are accepted and ignored.
func (c *Coordinator) Step(ev Event) ([]Command, error) {
	now := c.clock.Now()
	if c.state == StateAborted || c.state == StateCommitted {
		// The resume of a VM the abort left paused (or resuming) is the
		// end of its downtime; any other late VMResumed is a duplicate.
		if r, ok := ev.(VMResumed); ok && c.state == StateAborted && r.VM >= 0 && int(r.VM) < len(c.vms) && c.vms[r.VM].rep.Resumed == 0 {
			c.vms[r.VM].rep.Resumed = now
		}
		return nil, nil
	}
	if vm, ok := eventVM(ev); ok && (vm < 0 || int(vm) >= len(c.vms)) {
		return nil, fmt.Errorf("core: %v: unknown vm %d", ev, vm)
	}
	switch ev := ev.(type) {
	case Started:
		return c.start(now)
	case RoundCopied:
		return c.vms[ev.VM].onRound(ev, now)
	case VMPaused:
		return c.onPaused(ev, now)
	case FinalCopied:
		return c.onFinal(ev, now)
	case VMResumed:
		l := c.vms[ev.VM]
		cmds, err := l.onResumed(ev, now)
		return c.after(l, cmds, err)
	case ImageFlushed:
		l := c.vms[ev.VM]
		err := l.onFlushed(ev, now)
		if err == nil {
			c.budget.release(l)
		}
		return c.after(l, nil, err)
	case TimerFired:
		if ev.ID != deadlineTimer {
			return nil, nil
		}
		c.timer = false // it fired: nothing left to cancel
		if c.state == StateRunning {
			return c.abort(fmt.Sprintf("deadline of %v passed", c.cfg.Deadline)), nil
		}
		return nil, nil
	case Failed:
		return c.abort(fmt.Sprintf("vm %d: %v", ev.VM, ev.Err)), nil
	case SnapshotFailed:
		if c.state == StateCommitting {
			return c.abort(fmt.Sprintf("commit failed: %v", ev.Err)), nil
		}
		return c.abort(fmt.Sprint(ev.Err)), nil
	case Committed:
		if c.state != StateCommitting {
			return nil, fmt.Errorf("core: Committed in state %s", c.state)
		}
		c.state = StateCommitted
		return c.cancelDeadline(), nil
	default:
		panic(fmt.Sprintf("core: unknown event %T", ev))
	}
}

func eventVM(ev Event) (VMID, bool) {
	switch ev := ev.(type) {
	case RoundCopied:
		return ev.VM, true
	case VMPaused:
		return ev.VM, true
	case FinalCopied:
		return ev.VM, true
	case VMResumed:
		return ev.VM, true
	case ImageFlushed:
		return ev.VM, true
	case Failed:
		return ev.VM, true
	}
	return 0, false
}

func (c *Coordinator) start(now time.Duration) ([]Command, error) {
	if c.state != StateIdle {
		return nil, fmt.Errorf("core: Started in state %s", c.state)
	}
	c.state = StateRunning
	var cmds []Command
	if c.cfg.Deadline > 0 {
		c.timer = true
		cmds = append(cmds, SetTimer{ID: deadlineTimer, At: now + c.cfg.Deadline})
	}
	for _, l := range c.vms {
		if l.sink == MemorySink && !c.budget.reserve(l) {
			l.sink = DiskSink
			l.rep.Fallback = true
		}
		l.rep.Sink = l.sink
		cmds = append(cmds, l.start(now)...)
	}
	return cmds, nil
}

func (c *Coordinator) onPaused(ev VMPaused, now time.Duration) ([]Command, error) {
	l := c.vms[ev.VM]
	cmds, err := l.onPaused(ev, now)
	if err != nil || !l.freeze {
		return cmds, err
	}
	c.paused++
	if c.paused == len(c.vms) {
		for _, v := range c.vms {
			cmds = append(cmds, v.release()...)
		}
	}
	return cmds, nil
}

func (c *Coordinator) onFinal(ev FinalCopied, now time.Duration) ([]Command, error) {
	l := c.vms[ev.VM]
	cmds, err := l.onFinal(ev, now)
	if err != nil || !l.freeze {
		return c.after(l, cmds, err)
	}
	c.copied++
	if c.copied == len(c.vms) {
		for _, v := range c.vms {
			cmds = append(cmds, v.release()...)
		}
	}
	return cmds, nil
}

// after counts a VM that reached phDone and commits when all have.
func (c *Coordinator) after(l *liveCopy, cmds []Command, err error) ([]Command, error) {
	if err != nil || l.phase != phDone {
		return cmds, err
	}
	c.done++
	if c.done == len(c.vms) {
		c.state = StateCommitting
		cmds = append(cmds, Commit{Epoch: c.cfg.Epoch})
	}
	return cmds, nil
}

func (c *Coordinator) abort(reason string) []Command {
	c.state = StateAborted
	c.reason = reason
	var cmds []Command
	for _, l := range c.vms {
		cmds = append(cmds, l.abort()...)
		c.budget.release(l)
	}
	cmds = append(cmds, c.cancelDeadline()...)
	return append(cmds, Abort{Epoch: c.cfg.Epoch, Reason: reason})
}

// cancelDeadline cancels the deadline timer if start set one.
func (c *Coordinator) cancelDeadline() []Command {
	if !c.timer {
		return nil
	}
	c.timer = false
	return []Command{CancelTimer{ID: deadlineTimer}}
}

// Report is the outcome of a snapshot as the coordinator saw it.
type Report struct {
	Algorithm Algorithm
	Epoch     Epoch
	State     State
	Reason    string // why it aborted
	VMs       []VMReport
}

// Report returns what the coordinator measured so far.
func (c *Coordinator) Report() Report {
	r := Report{Algorithm: c.cfg.Algorithm, Epoch: c.cfg.Epoch, State: c.state, Reason: c.reason}
	for _, l := range c.vms {
		r.VMs = append(r.VMs, l.rep)
	}
	return r
}

// Window is the VNE's snapshot window: from the first snapshot point to the
// last resume. During it some VMs are post-snapshot and others are not.
func (r Report) Window() time.Duration {
	var first, last time.Duration
	seen := false
	for _, v := range r.VMs {
		if !v.HasPoint {
			continue
		}
		if !seen || v.Paused < first {
			first = v.Paused
		}
		if !seen || v.Resumed > last {
			last = v.Resumed
		}
		seen = true
	}
	if last < first { // no VM has resumed since its point yet
		return 0
	}
	return last - first
}
