package realrun

import (
	"math"
	"sort"
	"time"

	"github.com/vnsnap/vnsnap/core"
	"github.com/vnsnap/vnsnap/experiments/calib"
	sim "github.com/vnsnap/vnsnap/simbackend"
)

// SimConfig returns the simulator's description of a measured grid point
// and case: the same VMs on two hosts, the dirty rate the dirtiers achieved
// by their own account (Row.GuestRate; where not measured, QEMU's
// calc-dirty-rate), the median over the point's VMs, on a working set of the
// dirtier's size, the guest's populated memory as the calibration measured
// it (the rest zero pages, not sent), no traffic between the guests (the
// built-in idle and dirtier guests send none), and the calibration's copy
// bandwidths and pause costs. seed is the repeat.
func SimConfig(rows []Row, c Case, f *calib.File, seed uint64) sim.Config {
	p := rows[0]
	var rates []float64
	for _, r := range rows {
		if r.GuestRate > 0 {
			rates = append(rates, r.GuestRate)
		} else {
			rates = append(rates, r.Measured)
		}
	}
	cfg := sim.DefaultConfig()
	cfg.Seed = seed
	cfg.VMs, cfg.Hosts = p.VMs, 2
	cfg.MemBytes = int64(p.MemMiB) << 20
	cfg.DirtyRate = medianF(rates) * (1 << 20)
	cfg.HotFrac, cfg.DirtySpread = 1, 0
	cfg.HotBytes = int64(p.WSMiB) << 20
	if p.Guest != "dirtier" {
		cfg.DirtyRate, cfg.HotBytes = 0, 0
	}
	cfg.Algorithm, cfg.Sink = c.Algorithm, c.Sink
	cfg.PopulatedBytes = min(f.Guest.PopulatedBytes, cfg.MemBytes)
	cfg.Policy = "qemu-autoconverge" // realbackend runs QEMU's loop, auto-converge on (qemubackend sets it)
	cfg.Traffic = "none"
	cfg.Warmup, cfg.RunOn = time.Second, time.Second
	applyCalibration(&cfg, f)
	return cfg
}

// applyCalibration gives the simulator the calibration's bandwidths and
// pause costs (calib.Costs is simbackend's Calibration field for field).
// The simulator runs pre-copy in Observed mode with its QEMU model, as
// realbackend runs QEMU's own loop.
func applyCalibration(cfg *sim.Config, f *calib.File) {
	cfg.Host.MemoryBandwidth = f.BW.Memory
	cfg.Host.DiskBandwidth = f.BW.Disk
	cfg.Mode, cfg.Hypervisor, cfg.QEMU.AutoConverge = core.Observed, sim.HypervisorQEMU, true
	cfg.Calibration = f.Sim
}

// Pair is one grid point and case on both backends: the measured values
// (one per VM and repeat) and the predicted ones (one per VM and seed).
type Pair struct {
	Point, Case string
	Real, Pred  map[string][]float64 // by metric name
}

// RelErr is |median predicted - median measured| / median measured.
func (p Pair) RelErr(metric string) float64 {
	m := medianF(p.Real[metric])
	if m == 0 {
		return math.NaN()
	}
	return math.Abs(medianF(p.Pred[metric])-m) / m
}

// MedianRelErr is the median over pairs of a metric's relative error
// (pairs whose measured median is 0 left out).
func MedianRelErr(pairs []Pair, metric string) float64 {
	var e []float64
	for _, p := range pairs {
		if v := p.RelErr(metric); !math.IsNaN(v) {
			e = append(e, v)
		}
	}
	if len(e) == 0 {
		return math.NaN()
	}
	return medianF(e)
}

// Ordering returns, per grid point, the cases sorted by a metric's median
// on the real side and on the simulated side, and whether they agree: no
// two cases are ordered one way by QEMU and the other by the simulator.
// QEMU orders two cases only where their measurements (over VMs and
// repeats) do not overlap, the simulator only where its medians differ by
// more than predTie: cases the model gives the same cost (vnsnap and
// vnsnap-log pause alike) are a tie, not an order, and so are measurements
// within each other's noise.
func Ordering(pairs []Pair, metric string) (real, pred map[string][]string, agree bool) {
	real, pred = map[string][]string{}, map[string][]string{}
	by := map[string][]Pair{}
	for _, p := range pairs {
		by[p.Point] = append(by[p.Point], p)
	}
	agree = true
	for pt, ps := range by {
		order := func(side func(Pair) []float64) []string {
			s := append([]Pair(nil), ps...)
			sort.SliceStable(s, func(i, j int) bool { return medianF(side(s[i])) < medianF(side(s[j])) })
			names := make([]string, len(s))
			for i, p := range s {
				names[i] = p.Case
			}
			return names
		}
		real[pt] = order(func(p Pair) []float64 { return p.Real[metric] })
		pred[pt] = order(func(p Pair) []float64 { return p.Pred[metric] })
		for i := range ps {
			for j := range ps {
				if realBelow(ps[i].Real[metric], ps[j].Real[metric]) && predBelow(ps[j].Pred[metric], ps[i].Pred[metric]) {
					agree = false
				}
			}
		}
	}
	return real, pred, agree
}

// predTie is the relative difference below which two predicted medians
// are a tie.
const predTie = 0.05

// realBelow reports whether every measurement of a is below every one of b.
func realBelow(a, b []float64) bool {
	if len(a) == 0 || len(b) == 0 {
		return false
	}
	hi, lo := a[0], b[0]
	for _, v := range a {
		hi = max(hi, v)
	}
	for _, v := range b {
		lo = min(lo, v)
	}
	return hi < lo
}

// predBelow reports whether a's median is below b's by more than predTie.
func predBelow(a, b []float64) bool {
	if len(a) == 0 || len(b) == 0 {
		return false
	}
	return medianF(a) < medianF(b)*(1-predTie)
}
