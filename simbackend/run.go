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
}

func ms(d Time) float64 { return float64(d) / float64(time.Millisecond) }

// Run simulates one VNE snapshot as cfg describes (and, with cfg.Restore, a
// restore of it) and returns what happened. Invalid configs return an
// error; a broken invariant panics with the seed.
func Run(cfg Config) (*Result, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	policy, _ := core.ParsePolicy(cfg.Policy)
	eng := NewEngine(cfg.Seed)
	w := build(cfg, eng)
	const epoch core.Epoch = 1
	checker := cut.NewChecker(epoch, cfg.VMs)
	var traceErr error
	w.Net.Observe(func(r cut.Record) {
		if err := checker.Observe(r); err != nil && traceErr == nil {
			traceErr = err
		}
		if cfg.Trace != nil {
			cfg.Trace(r)
		}
	})
	ccfg := core.Config{
		Algorithm: cfg.Algorithm, Sink: cfg.Sink, Mode: core.Driven, Policy: policy,
		Epoch: epoch, Deadline: cfg.Deadline,
	}
	for _, v := range w.VMs {
		ccfg.VMs = append(ccfg.VMs, core.VMSpec{Host: core.HostID(v.Host), MemBytes: cfg.MemBytes})
	}
	for range w.Hosts {
		ccfg.Hosts = append(ccfg.Hosts, core.HostSpec{RAMBudget: cfg.Host.RAMBudget})
	}
	coord, err := core.NewCoordinator(ccfg, engineClock{eng})
	if err != nil {
		return nil, err
	}
	drv := newDriver(w, coord, epoch)
	for _, s := range w.Streams {
		s.measure = cfg.Warmup
	}
	w.startApps()
	eng.At(cfg.Warmup, drv, drvEvCore, drv.events.put(core.Started{}))
	finished := func() bool {
		st := coord.State()
		return st == core.StateCommitted || st == core.StateAborted
	}
	const horizon = 1 << 62
	eng.RunUntil(horizon, finished)
	if !finished() {
		panic(fmt.Sprintf("sim: seed %d: snapshot neither committed nor aborted", cfg.Seed))
	}
	end := eng.Now()
	w.stopApps(end + cfg.RunOn)
	eng.RunUntil(end+cfg.RunOn+MaxRTO*3, w.streamsDone)
	if traceErr != nil {
		panic(fmt.Sprintf("sim: seed %d: malformed trace: %v", cfg.Seed, traceErr))
	}
	rep := coord.Report()
	res := &Result{
		Algo: cfg.Algorithm.String(), Seed: cfg.Seed, VMCount: cfg.VMs, Hosts: cfg.Hosts,
		Sink: cfg.Sink.String(), Policy: cfg.Policy, State: rep.State.String(), AbortReason: rep.Reason,
		WindowMS: ms(rep.Window()), TotalMS: ms(end - cfg.Warmup),
		Frames: w.Net.Counter.Sent, StreamsOK: w.streamsDone(),
	}
	for _, v := range rep.VMs {
		res.VMs = append(res.VMs, VMResult{
			VM: int(v.VM), Host: int(v.Host), Sink: v.Sink.String(), Fallback: v.Fallback,
			DowntimeMS: ms(v.Downtime()), DurationMS: ms(v.Duration()), FlushMS: ms(v.Flushed - v.Copied),
			BytesCopied: v.BytesCopied(), Rounds: v.Rounds, MaxThrottle: v.MaxThrottle, COWFaults: drv.faults[v.VM],
		})
	}
	cr := checker.Result()
	res.Orphans, res.InTransit, res.Recovered, res.Replayed, res.Lost = cr.Orphans, cr.InTransit, cr.RecoveredByTCP, cr.Replayed, cr.Lost
	res.NetDropped = cr.NetDropped
	res.Dropped, res.DroppedQueue, res.DroppedLoss = cr.DroppedColour, cr.DroppedQueue, cr.DroppedLoss
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
	if cfg.Restore {
		restoreRun(cfg, w, drv, rep, end, res)
	}
	res.Events = eng.Fired()
	res.TraceHash = fmt.Sprintf("%016x", eng.Hash())
	return res, nil
}
