package sim

import (
	"fmt"
	"time"

	"github.com/vnsnap/vnsnap/core"
	"github.com/vnsnap/vnsnap/core/cut"
)

// VMResult is one VM's numbers in a Result.
type VMResult struct {
	VM          int     `json:"vm"`
	Host        int     `json:"host"`
	Sink        string  `json:"sink"`
	Fallback    bool    `json:"sink_fallback"`
	DowntimeMS  float64 `json:"downtime_ms"`
	DurationMS  float64 `json:"duration_ms"`
	FlushMS     float64 `json:"flush_ms"`
	BytesCopied int64   `json:"bytes_copied"`
	Rounds      int     `json:"rounds"`
	MaxThrottle int     `json:"max_throttle_pct"`
	COWFaults   int64   `json:"cow_faults,omitempty"`
	// StaleUnits counts the memory units (pages, for VMs up to MaxUnits
	// pages) where the VM's image differed from its memory at the
	// snapshot point: 0 unless the copy logic is wrong.
	StaleUnits int64 `json:"image_stale_units"`
	// StalledMS is the time the VM stalled on copy-on-write faults.
	StalledMS float64 `json:"cow_stalled_ms,omitempty"`
	// PointMS and ResumedMS are the VM's snapshot point and its resume, in
	// virtual time since the start of the run.
	PointMS   float64 `json:"point_ms"`
	ResumedMS float64 `json:"resumed_ms"`
}

// Result is the outcome of a simulated snapshot run. Its JSON form is what
// `vnsnap sim --json` prints.
type Result struct {
	Algo          string     `json:"algo"`
	Seed          uint64     `json:"seed"`
	VMCount       int        `json:"vm_count"`
	Hosts         int        `json:"hosts"`
	Sink          string     `json:"sink"`
	Policy        string     `json:"policy"`
	State         string     `json:"state"`
	AbortReason   string     `json:"abort_reason,omitempty"`
	VMs           []VMResult `json:"vms"`
	WindowMS      float64    `json:"window_ms"`
	TotalMS       float64    `json:"total_ms"` // snapshot start to commit
	Orphans       int        `json:"orphans"`
	InTransit     int        `json:"in_transit"`
	Recovered     int        `json:"recovered_by_tcp"`
	Replayed      int        `json:"replayed"`
	Lost          int        `json:"lost"`
	NetDropped    int        `json:"in_transit_net_dropped"`
	Dropped       int        `json:"dropped_frames"` // by the colour rule
	Held          int        `json:"held_frames"`    // by the colour rule (vnsnap-log)
	DroppedQueue  int        `json:"dropped_queue"`
	DroppedLoss   int        `json:"dropped_loss"`
	MaxStallMS    float64    `json:"max_app_stall_ms"`
	MaxBackoff    int        `json:"max_rto_backoff"`
	Timeouts      uint64     `json:"rto_timeouts"`
	Frames        uint64     `json:"frames"`
	Events        uint64     `json:"events"`
	TraceHash     string     `json:"trace_hash"`
	StreamsOK     bool       `json:"streams_ok"`
	RestoreOK     *bool      `json:"restore_ok,omitempty"`
	RestoreError  string     `json:"restore_error,omitempty"`
	RecoverMS     *float64   `json:"recover_ms,omitempty"`
	RestoreRetx   *uint64    `json:"restore_needed_retx_bytes,omitempty"`
	RestoreEvents uint64     `json:"restore_events,omitempty"`
	// Snaps has one entry per snapshot taken (Config.Snapshots); the
	// top-level snapshot fields above describe the last one.
	Snaps []SnapResult `json:"snapshots,omitempty"`
	// Workload results (Config.Workload).
	Workload         string    `json:"workload,omitempty"`
	AppDoneMS        float64   `json:"app_done_ms"` // when the applications finished; -1 if they did not
	AppOK            bool      `json:"app_ok"`      // the workload's own verification passed
	AppError         string    `json:"app_error,omitempty"`
	PeerDoneMS       []float64 `json:"peer_done_ms,omitempty"`
	ThroughputMBps   []float64 `json:"throughput_mbps,omitempty"`
	RestoreAppDoneMS *float64  `json:"restore_app_done_ms,omitempty"`
	// GoodputMBps is the TCP payload delivered in order to applications, in
	// MB/s per 100 ms of virtual time from the start of the run;
	// RestoreGoodputMBps the same from the restore on.
	GoodputMBps        []float64 `json:"goodput_mbps,omitempty"`
	RestoreGoodputMBps []float64 `json:"restore_goodput_mbps,omitempty"`
}

// SnapResult summarises one snapshot of a run.
type SnapResult struct {
	Epoch      int     `json:"epoch"`
	State      string  `json:"state"`
	StartMS    float64 `json:"start_ms"`
	TotalMS    float64 `json:"total_ms"`
	WindowMS   float64 `json:"window_ms"`
	MaxDownMS  float64 `json:"max_downtime_ms"`
	MeanDownMS float64 `json:"mean_downtime_ms"`
	Orphans    int     `json:"orphans"`
	InTransit  int     `json:"in_transit"`
	Recovered  int     `json:"recovered_by_tcp"`
	Replayed   int     `json:"replayed"`
	Lost       int     `json:"lost"`
	NetDropped int     `json:"in_transit_net_dropped"`
	Dropped    int     `json:"dropped_frames"`
	Held       int     `json:"held_frames"`
	// FirstPointMS and LastResumeMS bound the window in virtual time since
	// the start of the run.
	FirstPointMS float64    `json:"first_point_ms"`
	LastResumeMS float64    `json:"last_resume_ms"`
	VMs          []VMResult `json:"vms"`
}

func ms(d Time) float64 { return float64(d) / float64(time.Millisecond) }

// snapshotRun is one snapshot within a run: its coordinator, driver and checker.
type snapshotRun struct {
	// drops counts the colour rule's drops from this snapshot's start to
	// the next one's (or the end of the run); held its holds.
	dropStart, dropEnd uint64
	heldStart, heldEnd uint64
	epoch              core.Epoch
	start              Time
	end                Time
	coord              *core.Coordinator
	drv                *driver
	checker            *cut.Checker
}

func (sr *snapshotRun) finished() bool {
	st := sr.coord.State()
	return st == core.StateCommitted || st == core.StateAborted
}

// Run simulates a VNE as cfg describes: its applications, cfg.Snapshots
// snapshots (one by default) and, with cfg.Restore, a restore of the last
// committed one. Invalid configs return an error; a broken invariant panics
// with the seed.
func Run(cfg Config) (*Result, error) {
	if cfg.Workload != nil {
		if err := cfg.Workload.Configure(&cfg); err != nil {
			return nil, fmt.Errorf("workload %s: %w", cfg.Workload.Name(), err)
		}
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	policy, _ := core.ParsePolicy(cfg.Policy)
	eng := NewEngine(cfg.Seed)
	w, err := build(cfg, eng)
	if err != nil {
		return nil, err
	}
	var snaps []*snapshotRun
	var traceErr error
	w.Net.Observe(func(r cut.Record) {
		for _, sr := range snaps {
			if err := sr.checker.Observe(r); err != nil && traceErr == nil {
				traceErr = err
			}
		}
		if cfg.Trace != nil {
			cfg.Trace(r)
		}
	})
	ccfg := core.Config{
		Algorithm: cfg.Algorithm, Sink: cfg.Sink, Mode: cfg.Mode, Policy: policy, Deadline: cfg.Deadline,
	}
	for _, v := range w.VMs {
		ccfg.VMs = append(ccfg.VMs, core.VMSpec{Host: core.HostID(v.Host), MemBytes: v.Mem.Pages * core.PageSize})
	}
	for range w.Hosts {
		ccfg.Hosts = append(ccfg.Hosts, core.HostSpec{RAMBudget: cfg.Host.RAMBudget})
	}
	for _, s := range w.Streams {
		s.measure = cfg.Warmup
	}
	w.startApps()
	var last *snapshotRun
	var lastCommitted *snapshotRun
	for k := 0; k < cfg.Snapshots; k++ {
		at := cfg.Warmup + Time(k)*cfg.Interval
		if at < eng.Now() {
			at = eng.Now()
		}
		c := ccfg
		c.Epoch = core.Epoch(k + 1)
		coord, err := core.NewCoordinator(c, engineClock{eng})
		if err != nil {
			return nil, err
		}
		// Applications started before the checker: it joins the trace.
		sr := &snapshotRun{epoch: c.Epoch, start: at, coord: coord, checker: cut.NewJoinedChecker(c.Epoch, cfg.VMs)}
		if last != nil {
			last.dropEnd, last.heldEnd = w.Net.Counter.DroppedColour, w.Net.Counter.Held
		}
		sr.drv = newDriver(w, coord, c.Epoch)
		sr.drv.OnStep = cfg.observe
		snaps = append(snaps, sr)
		eng.RunUntil(at, nil)
		sr.dropStart, sr.heldStart = w.Net.Counter.DroppedColour, w.Net.Counter.Held
		eng.At(at, sr.drv, drvEvCore, sr.drv.events.put(core.Started{}))
		eng.RunUntil(horizon, sr.finished)
		if !sr.finished() {
			// Only a snapshot without a deadline can outlast the horizon
			// (a copy at a few bytes per second): a config error, not a
			// broken invariant.
			return nil, fmt.Errorf("deadline: snapshot %d did not finish within %v of virtual time; set a deadline", k+1, horizon)
		}
		sr.end = eng.Now()
		last = sr
		if coord.State() == core.StateCommitted {
			lastCommitted = sr
		}
	}
	end := eng.Now()
	if last == nil {
		end = cfg.Warmup
	}
	w.stopApps(end + cfg.RunOn)
	limit := end + cfg.RunOn + 3*MaxRTO
	if w.load != nil {
		limit = max(limit, cfg.TimeLimit)
	}
	eng.RunUntil(limit, w.done)
	if traceErr != nil {
		panic(fmt.Sprintf("sim: seed %d: malformed trace: %v", cfg.Seed, traceErr))
	}
	if last != nil {
		last.dropEnd, last.heldEnd = w.Net.Counter.DroppedColour, w.Net.Counter.Held
	}
	res := &Result{
		Algo: cfg.Algorithm.String(), Seed: cfg.Seed, VMCount: cfg.VMs, Hosts: cfg.Hosts,
		Sink: cfg.Sink.String(), Policy: cfg.Policy, State: "none",
		Frames: w.Net.Counter.Sent, StreamsOK: w.streamsDone(),
	}
	for _, sr := range snaps {
		res.Snaps = append(res.Snaps, sr.result())
	}
	if last != nil {
		ls := res.Snaps[len(res.Snaps)-1]
		rep := last.coord.Report()
		res.State, res.AbortReason = ls.State, rep.Reason
		res.WindowMS, res.TotalMS, res.VMs = ls.WindowMS, ls.TotalMS, ls.VMs
		res.Orphans, res.InTransit, res.Recovered, res.Replayed, res.Lost = ls.Orphans, ls.InTransit, ls.Recovered, ls.Replayed, ls.Lost
		res.NetDropped, res.Dropped, res.Held = ls.NetDropped, ls.Dropped, ls.Held
		cr := last.checker.Result()
		res.DroppedQueue, res.DroppedLoss = cr.DroppedQueue, cr.DroppedLoss
	}
	now := eng.Now()
	var stall Time
	for _, s := range w.Streams {
		stall = max(stall, s.stallAt(now))
	}
	res.MaxStallMS = ms(stall)
	for _, cs := range w.conns {
		for _, c := range cs {
			res.MaxBackoff = max(res.MaxBackoff, c.Stats.MaxBackoff)
			res.Timeouts += c.Stats.Timeouts
		}
	}
	w.workloadResult(res)
	res.GoodputMBps = w.Net.goodputMBps(0)
	if cfg.Restore {
		restoreRun(cfg, w, lastCommitted, res)
	}
	res.Events = eng.Fired()
	res.TraceHash = fmt.Sprintf("%016x", eng.Hash())
	return res, nil
}

// span is the time from a to b, or zero if b is not after a: a VM whose copy
// (or flush) never finished because the snapshot aborted has no end time,
// and its report must not show a negative duration.
func span(a, b Time) Time {
	if b < a {
		return 0
	}
	return b - a
}

func (sr *snapshotRun) result() SnapResult {
	rep := sr.coord.Report()
	cr := sr.checker.Result()
	out := SnapResult{
		Epoch: int(sr.epoch), State: rep.State.String(), StartMS: ms(sr.start), TotalMS: ms(sr.end - sr.start),
		WindowMS: ms(rep.Window()), Orphans: cr.Orphans, InTransit: cr.InTransit, Recovered: cr.RecoveredByTCP,
		Replayed: cr.Replayed, Lost: cr.Lost, NetDropped: cr.NetDropped, Dropped: int(sr.dropEnd - sr.dropStart),
		Held: int(sr.heldEnd - sr.heldStart),
	}
	var sum float64
	for _, v := range rep.VMs {
		vr := VMResult{
			VM: int(v.VM), Host: int(v.Host), Sink: v.Sink.String(), Fallback: v.Fallback,
			DowntimeMS: ms(v.Downtime()), DurationMS: ms(span(v.Start, v.Copied)), FlushMS: ms(span(v.Copied, v.Flushed)),
			BytesCopied: v.BytesCopied(), Rounds: v.Rounds, MaxThrottle: max(v.MaxThrottle, sr.drv.maxThrottle[v.VM]), COWFaults: sr.drv.faults[v.VM],
			StaleUnits: sr.drv.stale[v.VM], StalledMS: ms(sr.drv.w.VMs[v.VM].StalledTotal),
			PointMS: ms(v.Paused), ResumedMS: ms(v.Resumed),
		}
		if v.HasPoint {
			if len(out.VMs) == 0 || vr.PointMS < out.FirstPointMS {
				out.FirstPointMS = vr.PointMS
			}
			out.LastResumeMS = max(out.LastResumeMS, vr.ResumedMS)
		}
		out.VMs = append(out.VMs, vr)
		sum += vr.DowntimeMS
		out.MaxDownMS = max(out.MaxDownMS, vr.DowntimeMS)
	}
	if len(rep.VMs) > 0 {
		out.MeanDownMS = sum / float64(len(rep.VMs))
	}
	return out
}
