package realrun

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/vnsnap/vnsnap/experiments/calib"
	"github.com/vnsnap/vnsnap/qemubackend"
	"github.com/vnsnap/vnsnap/results"
	sim "github.com/vnsnap/vnsnap/simbackend"
)

// CalibrationPlan is what `vnsnap calibrate` runs.
type CalibrationPlan struct {
	MemMiB  int
	Rates   []float64 // dirtier rates, MiB/s (0: the idle guest)
	WSMiB   int
	Cases   []string
	Repeats int
	// Probes is how many times each monitor command is timed.
	Probes int
	Full   bool
}

// DefaultCalibration is the small run (a few minutes here).
func DefaultCalibration() CalibrationPlan {
	return CalibrationPlan{
		MemMiB: 128, Rates: []float64{0, 8, 32}, WSMiB: 16, // what fits a 128 MiB guest (see DefaultGrid)
		Cases:   []string{"stop-copy/memory", "stop-copy/disk", "vnsnap/memory", "vnsnap/disk", "cow/memory"},
		Repeats: 1, Probes: 20,
	}
}

// FullCalibration is calibrate --full: more rates, every case, three
// repeats.
func FullCalibration() CalibrationPlan {
	p := DefaultCalibration()
	p.Rates = []float64{0, 4, 8, 16, 32, 64, 128}
	p.Cases = FullGrid().Cases
	p.Repeats, p.Probes, p.Full = 3, 50, true
	return p
}

// Calibrate measures the simulator's calibration on real QEMU: the monitor
// round trip, stop and cont timed directly on a running VM; the copy
// bandwidth per sink and the device state from stop-and-copy snapshots (the
// VM is paused for the whole copy, so stream bytes over pause is the sink's
// bandwidth and the stream less QEMU's RAM bytes the device state); the
// live passes' bandwidth from pre-copy snapshots to memory (QEMU's RAM sent
// before the pause over its time, by query-migrate at pre-switchover); and
// the dirtier's rates as calc-dirty-rate measures them. What cannot be measured
// on built-in guests (the disk freeze: they have no disk; the colour flip
// and the copy-on-write fault, far below the monitor's resolution) keeps
// the simulator's default and is named in the file's notes.
func Calibrate(ctx context.Context, plan CalibrationPlan, o Options) (*calib.File, []Row, error) {
	mon, err := ProbeMonitor(ctx, plan, o)
	if err != nil {
		return nil, nil, err
	}
	var rows []Row
	for i, r := range plan.Rates {
		p := Point{VMs: 2, MemMiB: plan.MemMiB, Guest: "idle"}
		if r > 0 {
			p = Point{VMs: 2, MemMiB: plan.MemMiB, Guest: "dirtier", Rate: r, WSMiB: plan.WSMiB}
		}
		o.logf("calibration point %d/%d: %s", i+1, len(plan.Rates), p.Name())
		g := Grid{Points: []Point{p}, Cases: plan.Cases, Repeats: plan.Repeats}
		rs, err := g.Run(ctx, o)
		rows = append(rows, rs...)
		if err != nil {
			return nil, rows, err
		}
	}
	return Fit(plan, o, mon, rows), rows, nil
}

// Monitor is the monitor's fixed costs, timed on a running idle VM
// (medians).
type Monitor struct {
	RoundTrip, Stop, Cont time.Duration
}

// ProbeMonitor boots one idle VM and times a monitor round trip, stop and
// cont plan.Probes times each.
func ProbeMonitor(ctx context.Context, plan CalibrationPlan, o Options) (Monitor, error) {
	p0 := Point{VMs: 1, MemMiB: plan.MemMiB, Guest: "idle"}
	env, done, err := boot(ctx, p0, &o)
	if err != nil {
		return Monitor{}, err
	}
	defer done()
	vm := env.Machine(0).(*qemubackend.Machine).VM()
	var rtt, stop, cont []time.Duration
	for i := 0; i < max(1, plan.Probes); i++ {
		d, err := vm.RoundTrip(ctx)
		if err != nil {
			return Monitor{}, err
		}
		rtt = append(rtt, d)
		t0 := time.Now()
		if err := vm.Stop(ctx); err != nil {
			return Monitor{}, err
		}
		stop = append(stop, time.Since(t0))
		t0 = time.Now()
		if err := vm.Cont(ctx); err != nil {
			return Monitor{}, err
		}
		cont = append(cont, time.Since(t0))
	}
	m := Monitor{RoundTrip: median(rtt), Stop: median(stop), Cont: median(cont)}
	o.logf("monitor: round trip %v, stop %v, cont %v (medians of %d)", m.RoundTrip, m.Stop, m.Cont, len(rtt))
	return m, nil
}

// Fit derives the calibration from the monitor's costs and snapshot rows
// of the plan's cases (rows of any points and repeats: TestE9Real fits
// on every other repeat of its grid and predicts the rest).
func Fit(plan CalibrationPlan, o Options, mon Monitor, rows []Row) *calib.File {
	f := &calib.File{
		Schema: calib.Schema, Date: time.Now().UTC().Format(time.RFC3339), Vnsnap: results.Version(),
		Machine: calib.Machine{CPU: CPUModel(), Cores: runtime.NumCPU()},
		QEMU:    o.Host.Version.String(), Accel: "tcg", Full: plan.Full,
	}
	def := defaultCosts()
	// The dirty rates, per guest in the rows' order (every row of a
	// point carries the rates measured once at its boot).
	type guestKey struct {
		guest string
		rate  float64
	}
	var order []guestKey
	measured, achieved := map[guestKey][]float64{}, map[guestKey][]float64{}
	for _, r := range rows {
		k := guestKey{r.Guest, r.Rate}
		if _, ok := measured[k]; !ok {
			order = append(order, k)
		}
		measured[k], achieved[k] = append(measured[k], r.Measured), append(achieved[k], r.GuestRate)
	}
	for _, k := range order {
		f.Dirty = append(f.Dirty, calib.Dirty{SetMiBps: k.rate, MeasuredMiBps: medianF(measured[k]), GuestMiBps: medianF(achieved[k])})
	}
	// The switchover per sink: an idle guest's pre-copy pause less the
	// fixed steps around it (its last pass has next to nothing to send).
	around := mon.Stop + mon.Cont + mon.RoundTrip // what every pause has: stop, cont, a round trip
	fixed := around + time.Duration(def.ColourFlip) + time.Duration(def.DiskFreeze)
	sw := map[string][]float64{}
	var arm, cowBW []float64
	for _, r := range rows {
		if r.Guest != "idle" {
			continue
		}
		switch r.Algorithm {
		case "vnsnap":
			sw[r.Sink] = append(sw[r.Sink], max(0, r.PauseMs/1000-fixed.Seconds()))
		case "cow":
			// The pause of a copy-on-write snapshot: stop, a round trip,
			// the arming, cont; its copy: the RAM sent over its duration.
			arm = append(arm, max(0, r.PauseMs/1000-around.Seconds()))
			if r.DurationMs > 0 {
				cowBW = append(cowBW, float64(r.MemoryCopied)/(r.DurationMs/1000))
			}
		}
	}
	swOf := map[string]time.Duration{}
	for sink, v := range sw {
		swOf[sink] = time.Duration(medianF(v) * float64(time.Second))
	}
	bw, live := map[string][]float64{}, map[string][]float64{}
	var dev, pop []float64
	for _, r := range rows {
		f.Runs = append(f.Runs, calib.Run{
			Guest: guestLabel(r), Algorithm: r.Algorithm, Sink: r.Sink, PauseMs: r.PauseMs, OutsideMs: r.OutsideMs,
			QEMUPauseMs: r.QEMUPauseMs, DurationMs: r.DurationMs, StreamBytes: r.StreamBytes,
			MemoryCopied: r.MemoryCopied, Passes: r.Passes, LiveBytes: r.LiveBytes, LiveMs: r.LiveMs,
		})
		// A pre-copy's live passes, by QEMU's count: their RAM over
		// their time.
		if r.Algorithm == "vnsnap" && r.LiveMs > 0 && r.LiveBytes > 0 {
			live[r.Sink] = append(live[r.Sink], float64(r.LiveBytes)/(r.LiveMs/1000))
		}
		if r.Algorithm != "stop-copy" || r.DurationMs <= 0 {
			continue
		}
		if r.Guest == "idle" {
			pop = append(pop, float64(r.MemoryCopied))
		}
		// The RAM QEMU sent (a memory sink's mapped-ram file is as large
		// as the guest, holes and all) over the copy less its switchover.
		if d := r.DurationMs/1000 - swOf[r.Sink].Seconds(); d > 0 {
			bw[r.Sink] = append(bw[r.Sink], float64(r.MemoryCopied)/d)
		}
		// A stream, not a mapped-ram file (as large as the guest's
		// memory, holes and all, whatever it holds): what it has besides
		// RAM is the device state.
		if d := r.StreamBytes - r.MemoryCopied; d > 0 && r.StreamBytes < int64(r.MemMiB)<<20 {
			dev = append(dev, float64(d))
		}
	}
	f.BW = calib.BW{Memory: medianF(bw["memory"]), Disk: medianF(bw["disk"])}
	o.logf("live passes: %.0f MB/s to memory, %.0f MB/s to disk (medians of %d, %d pre-copies); stop-and-copy %.0f, %.0f MB/s",
		medianF(live["memory"])/1e6, medianF(live["disk"])/1e6, len(live["memory"]), len(live["disk"]), f.BW.Memory/1e6, f.BW.Disk/1e6)
	f.Guest.PopulatedBytes = int64(medianF(pop))
	f.Sim = calib.Costs{
		Source: fmt.Sprintf("vnsnap calibrate %s: %s (%d cores), QEMU %s (tcg)", f.Date, f.Machine.CPU, f.Machine.Cores, f.QEMU),
		Stop:   calib.Duration(mon.Stop), Cont: calib.Duration(mon.Cont), QMPRoundTrip: calib.Duration(mon.RoundTrip),
		ColourFlip: def.ColourFlip, DiskFreeze: def.DiskFreeze, COWFault: def.COWFault,
		DeviceState: int64(medianF(dev)), VCPUState: 0,
		SwitchoverMemory: calib.Duration(swOf["memory"]), SwitchoverDisk: calib.Duration(swOf["disk"]),
		COWArm: calib.Duration(medianF(arm) * float64(time.Second)), COWBandwidth: medianF(cowBW),
		LiveBandwidth: medianF(live["memory"]),
	}
	devNote := "device_state_bytes is the stop-and-copy stream less QEMU's RAM bytes (it includes the vCPU state, so vcpu_state_bytes is 0); "
	if len(dev) == 0 {
		f.Sim.DeviceState, f.Sim.VCPUState = def.DeviceState, def.VCPUState
		devNote = "device_state_bytes and vcpu_state_bytes keep the simulator's defaults: every stop-and-copy image here was a mapped-ram file (the guest's size, holes and all) or no larger than QEMU's RAM bytes, so the device state is not measured; "
	}
	f.Notes = devNote +
		"colour_flip, disk_freeze and cow_fault are not measured (built-in guests have no disk; the flip and the fault are far below a monitor round trip) and keep the simulator's defaults; " +
		"switchover_memory and switchover_disk are the idle guest's pre-copy pause less stop, cont, a monitor round trip, the colour flip and the disk freeze (median per sink); " +
		"bandwidth is the RAM QEMU sent in a stop-and-copy over the core's copy duration less the sink's switchover, median over VMs and guests; " +
		"cow_arm is an idle guest's copy-on-write pause less stop, cont and a round trip, cow_bps its RAM sent over its copy duration (medians); " +
		"live_bps is a pre-copy's live passes to memory, the RAM QEMU had sent at the pause over its total time less its setup (query-migrate at pre-switchover), median: the copy thread's rate while TCG runs the vCPUs, a cap on every sink's live passes; " +
		"guest.populated_bytes is the RAM an idle guest's stop-and-copy sent (the rest are zero pages); " +
		"dirty_rates' guest_mibps is the dirtiers' own rate (working set over the time between two sweep lines), measured_mibps calc-dirty-rate's"
	return f
}

// defaultCosts are simbackend's placeholder costs, for what is not measured
// here.
func defaultCosts() calib.Costs { return sim.DefaultCalibration() }

func guestLabel(r Row) string {
	if r.Guest == "dirtier" {
		return fmt.Sprintf("dirtier-%g", r.Rate)
	}
	return r.Guest
}

func median(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

func medianF(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// CPUModel returns /proc/cpuinfo's first model name, or "unknown".
func CPUModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}
