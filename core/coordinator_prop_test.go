package core_test

import (
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/vnsnap/vnsnap/core"
)

var (
	propSeeds = flag.Int("seeds", 3000, "random runs per property test")
	propSeed  = flag.Uint64("seed", 0, "run only this seed (0: all)")
)

// TestCoordinatorProperties drives coordinators with a random backend that
// keeps the failure contract (see core/doc.go): random configs (every
// algorithm, mode and sink, random stop policies and RAM budgets),
// completions in a random order with random latencies, commands that fail in
// the middle of a batch (the rest of the batch is skipped), failures that
// belong to no VM (a commit, a cancelled context), deadlines, completions of
// cancelled copies delivered late, and several snapshots in a row on the same
// VMs, each with a later epoch. Whatever happens, every snapshot must end
// committed or aborted with every VM running, unthrottled and on the
// snapshot's epoch; a colour change or a snapshot point (disk freeze, final
// copy, memory protection) must happen only while the VM is paused, or in the
// abort; Step must never fail.
func TestCoordinatorProperties(t *testing.T) {
	ends := map[string]int{}
	run := func(seed uint64) {
		err := runRandom(seed, ends)
		if err != nil {
			t.Errorf("seed %d: %v\nrerun with: go test ./core -run TestCoordinatorProperties -seed %d", seed, err, seed)
		}
	}
	if *propSeed != 0 {
		run(*propSeed)
		return
	}
	for s := uint64(1); s <= uint64(*propSeeds) && !t.Failed(); s++ {
		run(s)
	}
	// The runs must reach both ends for every algorithm, and every kind of
	// fault must have happened, or they prove little.
	for _, a := range core.Algorithms() {
		for _, st := range []core.State{core.StateCommitted, core.StateAborted} {
			if k := fmt.Sprintf("%s/%s", a, st); ends[k] == 0 && !t.Failed() {
				t.Errorf("no run ended %s in %d seeds", k, *propSeeds)
			}
		}
	}
	for _, k := range []string{
		"throttled/committed", "throttled/aborted", "sequence",
		"fault/mid-batch", "fault/commit", "fault/context", "fault/deadline",
		"fault/skipped-resume", "fault/skipped-colour", "fault/cow-before-resume", "fault/pause-in-flight",
	} {
		if ends[k] == 0 && !t.Failed() {
			t.Errorf("no run had %s in %d seeds", k, *propSeeds)
		}
	}
	t.Logf("ends: %v", ends)
}

// op is a completion the model backend owes the core.
type op struct {
	vm   core.VMID
	live bool       // Observed pre-copy: rounds, then the hypervisor's pause
	ev   core.Event // otherwise: the event to deliver
	copy bool       // a copy, which CancelCopy stops
}

// model is a random backend that keeps the failure contract: it carries out
// a batch in order and stops at its first failed command, which it reports;
// it carries out every command of an abort batch; SetColour to the epoch a
// port already has and ResumeVM of a running VM change nothing (ResumeVM
// still answers VMResumed). Its VMs and switch ports outlive one snapshot.
type model struct {
	r        *rand.Rand
	clock    core.ManualClock
	paused   []bool
	ports    []core.Epoch // each VM's switch port
	throttle []int
	ends     map[string]int

	// One snapshot's state.
	cfg      core.Config
	c        *core.Coordinator
	pending  []op
	timers   map[core.TimerID]time.Duration
	round    []int  // Observed: rounds reported so far
	changes  []int  // colour changes
	copied   []bool // FinalCopied delivered before the end of the snapshot
	flushed  []bool
	commits  int
	aborts   int
	failProb int // a command fails with probability 1/failProb (0: never)
	failed   bool
}

func randomPolicy(r *rand.Rand) core.PolicyFactory {
	switch r.IntN(5) {
	case 0:
		return nil
	case 1:
		return func() core.StopPolicy { return core.DefaultXen() }
	case 2:
		minDirty, rounds, factor := int64(r.IntN(100)), 1+r.IntN(30), int64(1+r.IntN(5))
		return func() core.StopPolicy {
			return &core.XenPolicy{MinDirty: minDirty, MaxRounds: rounds, MaxFactor: factor}
		}
	default:
		auto := r.IntN(3) > 0
		limit := time.Duration(1+r.IntN(1000)) * time.Millisecond
		rounds, initial, inc, thr := 1+r.IntN(40), 1+r.IntN(50), 1+r.IntN(30), 1+r.IntN(100)
		return func() core.StopPolicy {
			p := core.DefaultQEMU(auto)
			p.DowntimeLimit, p.MaxRounds, p.InitialPct, p.IncrementPct, p.ThresholdPct = limit, rounds, initial, inc, thr
			return p
		}
	}
}

// randomConfig returns a random config for vms on hosts (new ones if nil).
func randomConfig(r *rand.Rand, vms []core.VMSpec, hosts []core.HostSpec) core.Config {
	cfg := core.Config{
		Algorithm: core.Algorithms()[r.IntN(len(core.Algorithms()))],
		Sink:      core.Sink(r.IntN(2)),
		Mode:      core.Mode(r.IntN(2)),
		Policy:    randomPolicy(r),
		VMs:       vms,
		Hosts:     hosts,
	}
	if hosts == nil {
		for range 1 + r.IntN(2) {
			cfg.Hosts = append(cfg.Hosts, core.HostSpec{RAMBudget: int64(r.IntN(5)) << 20})
		}
		for range 1 + r.IntN(4) {
			cfg.VMs = append(cfg.VMs, core.VMSpec{Host: core.HostID(r.IntN(len(cfg.Hosts))), MemBytes: int64(1+r.IntN(256)) * core.PageSize})
		}
	}
	if r.IntN(2) == 0 {
		cfg.Deadline = time.Duration(50+r.IntN(2000)) * time.Millisecond
	}
	return cfg
}

// runRandom runs one to three snapshots of one random VNE, each with a later
// epoch, counting how they ended and which faults they met in ends.
func runRandom(seed uint64, ends map[string]int) error {
	r := rand.New(rand.NewPCG(seed, 0xc0de))
	first := randomConfig(r, nil, nil)
	n := len(first.VMs)
	m := &model{r: r, ends: ends, paused: make([]bool, n), ports: make([]core.Epoch, n), throttle: make([]int, n)}
	epoch := core.Epoch(1 + r.IntN(5))
	for i := range 1 + r.IntN(3) {
		cfg := first
		if i > 0 {
			cfg = randomConfig(r, first.VMs, first.Hosts)
			ends["sequence"]++
		}
		cfg.Epoch = epoch
		if err := m.snapshot(cfg); err != nil {
			return fmt.Errorf("snapshot %d (epoch %d): %w", i+1, epoch, err)
		}
		epoch += core.Epoch(1 + r.IntN(3))
	}
	return nil
}

func (m *model) snapshot(cfg core.Config) error {
	n := len(cfg.VMs)
	m.cfg, m.pending, m.timers = cfg, nil, map[core.TimerID]time.Duration{}
	m.round, m.changes, m.copied, m.flushed = make([]int, n), make([]int, n), make([]bool, n), make([]bool, n)
	m.commits, m.aborts, m.failProb, m.failed = 0, 0, 0, false
	if m.r.IntN(3) == 0 {
		m.failProb = 10 + m.r.IntN(100)
	}
	var err error
	if m.c, err = core.NewCoordinator(cfg, &m.clock); err != nil {
		return err
	}
	desc := fmt.Sprintf("%s/%s/%s vms=%d deadline=%v", cfg.Algorithm, cfg.Mode, cfg.Sink, n, cfg.Deadline)
	if err := m.step(core.Started{}); err != nil {
		return fmt.Errorf("%s: %w", desc, err)
	}
	if err := m.checkBudget(); err != nil {
		return fmt.Errorf("%s: %w", desc, err)
	}
	for steps := 0; len(m.pending) > 0 || len(m.timers) > 0; steps++ {
		if steps > 10000 {
			return fmt.Errorf("%s: no end after %d steps (state %s)", desc, steps, m.c.State())
		}
		if err := m.next(); err != nil {
			return fmt.Errorf("%s: %w", desc, err)
		}
	}
	if err := m.checkEnd(); err != nil {
		return fmt.Errorf("%s: %w", desc, err)
	}
	return nil
}

// next delivers one event: a timer that is due, an injected failure, or a
// random pending completion.
func (m *model) next() error {
	dt := time.Duration(m.r.IntN(50)) * time.Millisecond
	for id, at := range m.timers { // at most one timer
		if len(m.pending) == 0 || m.clock.Now()+dt >= at {
			m.clock.Set(max(at, m.clock.Now()))
			delete(m.timers, id)
			if m.c.State() == core.StateRunning {
				m.ends["fault/deadline"]++
			}
			return m.step(core.TimerFired{ID: id})
		}
	}
	m.clock.Set(m.clock.Now() + dt)
	if m.failProb > 0 && m.r.IntN(4*m.failProb) == 0 {
		// A failure that belongs to no VM: the backend's context was
		// cancelled.
		m.fault("fault/context")
		return m.step(core.SnapshotFailed{Err: errors.New("context canceled")})
	}
	i := m.r.IntN(len(m.pending))
	o := m.pending[i]
	m.pending = append(m.pending[:i], m.pending[i+1:]...)
	if !o.live {
		return m.step(o.ev)
	}
	// The hypervisor's own loop: another pass, or its final pause, which
	// takes effect now and is reported later (the report is in flight).
	if m.r.IntN(3) == 0 {
		m.paused[o.vm] = true
		m.pending = append(m.pending, op{vm: o.vm, ev: core.VMPaused{VM: o.vm}, copy: true})
		return nil
	}
	m.round[o.vm]++
	m.pending = append(m.pending, o)
	return m.step(m.roundCopied(o.vm, m.round[o.vm], m.round[o.vm] == 1))
}

// fault counts a fault, once per snapshot.
func (m *model) fault(kind string) {
	if m.c.State() == core.StateRunning || m.c.State() == core.StateCommitting {
		m.ends[kind]++
	}
}

func (m *model) roundCopied(vm core.VMID, round int, all bool) core.RoundCopied {
	pages := m.cfg.VMs[vm].MemBytes / core.PageSize
	sent := pages
	if !all {
		sent = m.r.Int64N(pages + 1)
	}
	return core.RoundCopied{VM: vm, Round: round, Sent: sent, Dirty: m.r.Int64N(pages + 1),
		Elapsed: time.Duration(1+m.r.IntN(3000)) * time.Millisecond}
}

// step feeds ev and carries out the batch it returns. A command of a batch
// that is not an abort fails with probability 1/failProb: it and the rest of
// the batch are not carried out, and the failure is reported at once.
func (m *model) step(ev core.Event) error {
	before := m.c.State()
	cmds, err := m.c.Step(ev)
	if err != nil {
		return fmt.Errorf("Step(%v) in state %s: %w", ev, before, err)
	}
	if (before == core.StateAborted || before == core.StateCommitted) && len(cmds) > 0 {
		return fmt.Errorf("Step(%v) after the end returned %v", ev, cmds)
	}
	switch ev := ev.(type) {
	case core.FinalCopied:
		if before == core.StateRunning {
			m.copied[ev.VM] = true
		}
	case core.ImageFlushed:
		if before == core.StateRunning {
			m.flushed[ev.VM] = true
		}
	}
	aborting := len(cmds) > 0 && isAbort(cmds[len(cmds)-1])
	for i, c := range cmds {
		if !aborting && m.failProb > 0 && m.r.IntN(m.failProb) == 0 {
			m.noteSkipped(cmds[i:])
			return m.step(failure(c))
		}
		if err := m.exec(c, aborting, i == len(cmds)-1); err != nil {
			return fmt.Errorf("Step(%v) -> %v: %w", ev, c, err)
		}
	}
	return nil
}

// failure is the event a backend reports when c fails.
func failure(c core.Command) core.Event {
	if vc, ok := c.(core.VMCommand); ok {
		return core.Failed{VM: vc.Target(), Err: fmt.Errorf("injected: %v", c)}
	}
	return core.SnapshotFailed{Err: fmt.Errorf("injected: %v", c)}
}

// noteSkipped counts the kinds of command a failure mid-batch skipped.
func (m *model) noteSkipped(skipped []core.Command) {
	m.fault("fault/mid-batch")
	for _, c := range skipped {
		switch c.(type) {
		case core.ResumeVM:
			m.fault("fault/skipped-resume")
			if m.cfg.Algorithm.Method() == core.CopyOnWrite {
				m.fault("fault/cow-before-resume")
			}
		case core.SetColour:
			m.fault("fault/skipped-colour")
		case core.Commit:
			m.fault("fault/commit")
		}
	}
}

func isAbort(c core.Command) bool { _, ok := c.(core.Abort); return ok }

// exec carries out one command, checking it is legal now.
func (m *model) exec(c core.Command, aborting, last bool) error {
	needPaused := func(vm core.VMID) error {
		if !m.paused[vm] && !aborting {
			return errors.New("the VM is running")
		}
		return nil
	}
	switch c := c.(type) {
	case core.CopyRound:
		m.pending = append(m.pending, op{vm: c.VM, copy: true, ev: m.roundCopied(c.VM, c.Round, c.All)})
	case core.StartLiveCopy:
		m.pending = append(m.pending, op{vm: c.VM, copy: true, live: true})
	case core.PauseVM:
		if m.paused[c.VM] {
			return errors.New("already paused")
		}
		m.paused[c.VM] = true
		m.pending = append(m.pending, op{vm: c.VM, ev: core.VMPaused{VM: c.VM}})
	case core.SetColour:
		if c.Epoch != m.cfg.Epoch {
			return fmt.Errorf("epoch %d, want %d", c.Epoch, m.cfg.Epoch)
		}
		if m.ports[c.VM] != c.Epoch {
			m.ports[c.VM] = c.Epoch
			m.changes[c.VM]++
		}
		return needPaused(c.VM)
	case core.FreezeDisk:
		return needPaused(c.VM)
	case core.CopyFinal:
		m.pending = append(m.pending, op{vm: c.VM, copy: true, ev: core.FinalCopied{VM: c.VM, Sent: 1}})
		return needPaused(c.VM)
	case core.ProtectMemory:
		m.pending = append(m.pending, op{vm: c.VM, copy: true, ev: core.FinalCopied{VM: c.VM, Sent: 1}})
		return needPaused(c.VM)
	case core.ResumeVM:
		if !m.paused[c.VM] && !aborting {
			return errors.New("not paused")
		}
		m.paused[c.VM] = false
		m.pending = append(m.pending, op{vm: c.VM, ev: core.VMResumed{VM: c.VM}})
	case core.ThrottleVM:
		if m.cfg.Mode != core.Driven && c.Percent != 0 || m.paused[c.VM] && c.Percent != 0 {
			return errors.New("throttle outside a Driven live copy")
		}
		m.throttle[c.VM] = c.Percent
	case core.FlushImage:
		m.pending = append(m.pending, op{vm: c.VM, copy: true, ev: core.ImageFlushed{VM: c.VM}})
	case core.CancelCopy:
		if !aborting {
			return errors.New("outside an abort")
		}
		// Half the time the cancelled copy still reports, late.
		if m.r.IntN(2) == 0 {
			kept := m.pending[:0]
			for _, o := range m.pending {
				if o.vm != c.VM || !o.copy {
					kept = append(kept, o)
				}
			}
			m.pending = kept
		} else {
			for i, o := range m.pending {
				if o.vm == c.VM && o.live { // a late pass, not a pause
					m.pending[i] = op{vm: o.vm, ev: m.roundCopied(o.vm, m.round[o.vm]+1, false)}
				}
			}
		}
	case core.SetTimer:
		if len(m.timers) > 0 {
			return errors.New("a second timer")
		}
		m.timers[c.ID] = c.At
	case core.CancelTimer:
		// Idempotent: the SetTimer may have been skipped by a failure.
		delete(m.timers, c.ID)
	case core.Commit:
		m.commits++
		if c.Epoch != m.cfg.Epoch {
			return fmt.Errorf("commit of epoch %d, want %d", c.Epoch, m.cfg.Epoch)
		}
		if m.failProb > 0 && m.r.IntN(4) == 0 {
			m.fault("fault/commit")
			m.pending = append(m.pending, op{ev: core.SnapshotFailed{Err: errors.New("manifest")}})
		} else {
			m.pending = append(m.pending, op{ev: core.Committed{}})
		}
	case core.Abort:
		m.aborts++
		// An abort while a hypervisor's final pause is in flight (it took
		// effect, its report has not arrived): only the abort's ResumeVM
		// lets that VM run.
		for _, o := range m.pending {
			if _, ok := o.ev.(core.VMPaused); ok && o.copy {
				m.ends["fault/pause-in-flight"]++
				break
			}
		}
		if !last {
			return errors.New("Abort is not the last command")
		}
	default:
		return fmt.Errorf("unknown command %T", c)
	}
	return nil
}

// checkBudget checks the memory sink's reservations after Started: greedy in
// VMID order, never over a host's budget.
func (m *model) checkBudget() error {
	used := make([]int64, len(m.cfg.Hosts))
	for i, v := range m.c.Report().VMs {
		spec := m.cfg.VMs[i]
		fits := used[spec.Host]+spec.MemBytes <= m.cfg.Hosts[spec.Host].RAMBudget
		switch {
		case m.cfg.Sink == core.DiskSink:
			if v.Sink != core.DiskSink || v.Fallback {
				return fmt.Errorf("vm %d: sink %s fallback %t with the disk sink", i, v.Sink, v.Fallback)
			}
		case fits:
			if v.Sink != core.MemorySink || v.Fallback {
				return fmt.Errorf("vm %d fits its host's budget but got sink %s fallback %t", i, v.Sink, v.Fallback)
			}
			used[spec.Host] += spec.MemBytes
		default:
			if v.Sink != core.DiskSink || !v.Fallback {
				return fmt.Errorf("vm %d does not fit its host's budget but got sink %s fallback %t", i, v.Sink, v.Fallback)
			}
		}
	}
	return nil
}

func (m *model) checkEnd() error {
	rep := m.c.Report()
	m.ends[fmt.Sprintf("%s/%s", rep.Algorithm, rep.State)]++
	for _, v := range rep.VMs {
		if v.MaxThrottle > 0 {
			m.ends["throttled/"+rep.State.String()]++
			break
		}
	}
	for vm := range m.cfg.VMs {
		switch {
		case m.paused[vm]:
			return fmt.Errorf("vm %d left paused", vm)
		case m.ports[vm] != m.cfg.Epoch:
			return fmt.Errorf("vm %d left on epoch %d, want %d", vm, m.ports[vm], m.cfg.Epoch)
		case m.changes[vm] != 1:
			return fmt.Errorf("vm %d changed colour %d times, want once", vm, m.changes[vm])
		case m.throttle[vm] != 0:
			return fmt.Errorf("vm %d left throttled at %d%%", vm, m.throttle[vm])
		}
	}
	switch rep.State {
	case core.StateCommitted:
		if m.commits != 1 || m.aborts != 0 {
			return fmt.Errorf("committed after %d commits and %d aborts", m.commits, m.aborts)
		}
		for vm, v := range rep.VMs {
			if !m.copied[vm] || (v.Sink == core.MemorySink && !m.flushed[vm]) {
				return fmt.Errorf("committed with vm %d copied=%t flushed=%t", vm, m.copied[vm], m.flushed[vm])
			}
			if !v.Done || !v.HasPoint || v.Rounds < 1 || v.Downtime() < 0 || v.Resumed < v.Paused {
				return fmt.Errorf("committed with vm %d report %+v", vm, v)
			}
		}
	case core.StateAborted:
		if m.aborts != 1 || rep.Reason == "" {
			return fmt.Errorf("aborted after %d aborts, reason %q", m.aborts, rep.Reason)
		}
	default:
		return fmt.Errorf("ended in state %s", rep.State)
	}
	return nil
}
