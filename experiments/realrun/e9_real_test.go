package realrun_test

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/vnsnap/vnsnap/experiments"
	"github.com/vnsnap/vnsnap/experiments/calib"
	. "github.com/vnsnap/vnsnap/experiments/realrun"
	"github.com/vnsnap/vnsnap/qemubackend/qemutest"
	"github.com/vnsnap/vnsnap/qemubackend/qemutest/progress"
)

// ciGrid is the two-point E9 that CI runs on real QEMU: two VMs, an idle
// and a dirtying guest, the calibration's four cases (pre-copy and
// stop-and-copy, each sink), six repeats. The even repeats calibrate, the
// odd ones are predicted: calibration and measurement are taken turn about
// on the same booted VMs, so that a drift of the machine's speed (tens of
// per cent within minutes here) falls on both alike. Each predicted pair's
// measured side is the median of six snapshots of a VM; a pre-copy's pause
// is heavy-tailed (15-55 ms for one pair in one run), so the medians need
// the samples. About 5 minutes.
func ciGrid() Grid {
	return Grid{
		Points: []Point{
			{VMs: 2, MemMiB: 128, Guest: "idle"},
			{VMs: 2, MemMiB: 128, Guest: "dirtier", Rate: 16, WSMiB: 16},
		},
		Cases:   ciCalibration().Cases,
		Repeats: 6,
	}
}

// ciCalibration is what TestE9Real fits its in-run calibration with: `vnsnap
// calibrate`'s cases without copy-on-write, on the grid's two guests.
func ciCalibration() CalibrationPlan {
	p := DefaultCalibration()
	p.Rates = []float64{0, 16}
	p.Cases = []string{"stop-copy/memory", "stop-copy/disk", "vnsnap/memory", "vnsnap/disk"}
	return p
}

// splitRepeats returns the rows of even repeats (to calibrate with) and of
// odd ones (to predict).
func splitRepeats(rows []Row) (fit, check []Row) {
	for _, r := range rows {
		if r.Repeat%2 == 0 {
			fit = append(fit, r)
		} else {
			check = append(check, r)
		}
	}
	return fit, check
}

// TestE9Real runs the two-point E9 on real QEMU and checks that every
// measurement is there and sane, that the results file reads back, and
// that the simulator predicts the per-VM pause and duration within 15 % and
// bytes copied within 10 % (medians over the two points and four cases),
// with a calibration measured in the same run: fitted (`vnsnap
// calibrate`'s fit, Fit) on the grid's even repeats and checked on its odd
// ones, taken turn about. The shipped calibration's errors are logged
// beside them, and its bytes bound asserted (bytes do not depend on the
// machine's speed).
//
// Why turn about: in the CI of 7 December 2026 a calibration measured in
// the three minutes before the grid (the first minutes after the main
// stage) saw live passes at 493 MB/s and the grid at 550-720 MB/s, and the
// duration missed by 39 %.
//
// Why against a calibration measured in the same run, not the shipped one:
// The pause and duration predicted from a calibration measured on another
// day miss on this machine one way, not by noise: its speed moves by tens
// of per cent within minutes and 2-3 times between CI runs. 11 runs on 2
// December 2026 (QEMU 10.0.2 TCG, the then shipped calibration, load 1-4)
// gave median errors of pause 23-59 % and duration 25-54 % (bytes
// 1.3-1.8 %), every pair measured slower than predicted; a calibration
// measured in the same hour gave pause 5-47 %, duration 19-44 %. On 4
// December the shipped calibration measured back to back with the grid on
// a quiet machine gave pause 7.3 %, duration 12.3 %, bytes 1.7 %, and
// beside one nested Xen (load ~2.9) pause 24-28 %, duration 17-26 %. The
// model's claim is a prediction for the machine its calibration measured;
// measured turn about with the grid, the calibration is of the machine the
// grid runs on.
func TestE9Real(t *testing.T) {
	h := qemutest.RequireQEMU(t)
	img := qemutest.GuestImage(t, "../..")
	dir, err := os.MkdirTemp("", "e9t-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	ctx := qemutest.Context(t, 20*time.Minute, progress.DirBytes(dir))
	o := Options{Host: h, Image: img, Dir: dir, Log: t.Logf}
	plan := ciCalibration()
	mon, err := ProbeMonitor(ctx, plan, o)
	if err != nil {
		t.Fatal(progress.Why(ctx, err))
	}
	g := ciGrid()
	all := measureAndPredict(t, ctx, g, plan, o, mon)
	mem := int64(128 << 20)
	for _, r := range all {
		t.Logf("%s %s %s: pause %.1f ms (outside %.1f, qemu %.1f), duration %.1f ms, copied %d, stream %d, passes %d, window %.1f ms, dirty %.1f MiB/s (calc-dirty-rate), %.1f MiB/s (its own)",
			r.Point, r.Algorithm+"/"+r.Sink, r.VM, r.PauseMs, r.OutsideMs, r.QEMUPauseMs, r.DurationMs, r.BytesCopied, r.StreamBytes, r.Passes, r.WindowMs, r.Measured, r.GuestRate)
		switch {
		case r.PauseMs <= 0 || r.OutsideMs <= 0:
			t.Errorf("%s %s %s: pause %.2f ms, outside %.2f ms: want both > 0", r.Point, r.Algorithm, r.VM, r.PauseMs, r.OutsideMs)
		case r.DurationMs <= 0 || r.WindowMs < r.PauseMs:
			t.Errorf("%s %s %s: duration %.2f ms, window %.2f ms < pause %.2f ms", r.Point, r.Algorithm, r.VM, r.DurationMs, r.WindowMs, r.PauseMs)
		case r.StreamBytes < mem/64 || r.MemoryCopied <= 0:
			t.Errorf("%s %s %s: stream %d bytes, memory copied %d: an image of a %d-byte guest", r.Point, r.Algorithm, r.VM, r.StreamBytes, r.MemoryCopied, mem)
		}
		if r.Algorithm == "vnsnap" && r.Passes < 2 {
			t.Errorf("%s vnsnap %s: %d passes, want a live pass and the final one", r.Point, r.VM, r.Passes)
		}
		if r.Algorithm == "vnsnap" && (r.LiveBytes <= 0 || r.LiveBytes > r.MemoryCopied || r.LiveMs <= 0 || r.LiveMs > r.DurationMs) {
			t.Errorf("%s vnsnap %s: live passes %d bytes in %.1f ms, want some of the %d bytes copied in %.1f ms", r.Point, r.VM, r.LiveBytes, r.LiveMs, r.MemoryCopied, r.DurationMs)
		}
		if r.Algorithm == "vnsnap" {
			t.Logf("%s vnsnap %s: live passes %.0f MB/s (%d bytes in %.1f ms)", r.Point, r.VM, float64(r.LiveBytes)/r.LiveMs/1e3, r.LiveBytes, r.LiveMs)
		}
		if r.Algorithm == "stop-copy" && r.PauseMs < r.DurationMs*0.5 {
			t.Errorf("%s stop-copy %s: pause %.1f ms is less than half the copy %.1f ms: the VM ran during a stop-and-copy", r.Point, r.VM, r.PauseMs, r.DurationMs)
		}
	}
	// The dirtier ran: it finished sweeps of its working set (its own
	// account; QEMU's calc-dirty-rate in the rows is recorded, not
	// checked: under TCG it reads about 0 MiB/s). A working set that does
	// not fit beside the initramfs (64 MiB in a 128 MiB guest) leaves it
	// killed after filling part of it: no sweep, nothing dirtied.
	for _, r := range all {
		if r.Guest == "dirtier" && r.GuestRate <= 0 {
			t.Errorf("%s %s: the dirtier finished no sweep (rate %.1f MiB/s): did it run?", r.Point, r.VM, r.GuestRate)
		}
	}

	out := t.TempDir()
	cfg := RunConfig{Grid: g, QEMU: h.Version.String(), Machine: h.Machine, Date: time.Now().UTC().Format(time.RFC3339)}
	if err := Write(out, cfg, all); err != nil {
		t.Fatal(err)
	}
	gotCfg, got, err := Read(filepath.Join(out, Name+".json"))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(cfg, gotCfg); diff != "" {
		t.Errorf("config read back (-want +got):\n%s", diff)
	}
	if len(got) != len(all) || got[0].Point != all[0].Point || got[len(got)-1].BytesCopied != all[len(all)-1].BytesCopied {
		t.Errorf("rows read back differ: %d rows, first %+v", len(got), got[0])
	}

	// The simulator's prediction of these rows with the in-run calibration
	// (every bound asserted) and with the shipped one (logged; its bytes
	// bound asserted).
	shipped, err := calib.Default()
	if err != nil {
		t.Fatal(err)
	}
	checkPrediction(t, all, "shipped calibration", shipped, func(m string) bool { return m == "copied_mib" }, true)
}

// measureAndPredict runs the grid, fits the in-run calibration on its even
// repeats and checks the prediction of its odd ones against every bound.
// Where a median misses, it runs the grid once more and judges the rows of
// both runs together (more samples per pair, not a second chance on the
// same ones); a miss then fails the test. It returns every row measured.
//
// Why: the medians sit near the pause bound on this machine (in four runs
// on 7 December 2026: 11.6, 14.7, 13.5 % and one over 15 %), with pairs
// of two kinds, stop-and-copy ones within 5 % and pre-copy ones 18-31 %
// off (a dirtier's last pass is predicted short), so one noisy pair moves
// the median across the bound.
func measureAndPredict(t *testing.T, ctx context.Context, g Grid, plan CalibrationPlan, o Options, mon Monitor) []Row {
	t.Helper()
	var all []Row
	for run := 1; run <= 2; run++ {
		rs, err := g.Run(ctx, o)
		if err != nil {
			t.Fatal(progress.Why(ctx, err))
		}
		vms := 0
		for _, p := range g.Points {
			vms += p.VMs
		}
		if want := vms * len(g.Cases) * g.Repeats; len(rs) != want {
			t.Fatalf("%d rows, want %d (a row per VM of each point, case and repeat)", len(rs), want)
		}
		for i := range rs {
			rs[i].Repeat += (run - 1) * g.Repeats // the second run's repeats follow the first's (g.Repeats is even)
		}
		all = append(all, rs...)
		fit, checked := splitRepeats(all)
		inRun := Fit(plan, o, mon, fit)
		t.Logf("in-run calibration (even repeats of %d grid runs): stop-and-copy %.0f MB/s to memory, %.0f MB/s to disk, live passes %.0f MB/s; stop %v, cont %v, round trip %v",
			run, inRun.BW.Memory/1e6, inRun.BW.Disk/1e6, inRun.Sim.LiveBandwidth/1e6,
			time.Duration(inRun.Sim.Stop), time.Duration(inRun.Sim.Cont), time.Duration(inRun.Sim.QMPRoundTrip))
		if !checkPrediction(t, checked, "in-run calibration", inRun, func(string) bool { return true }, run == 2) {
			return all
		}
		t.Logf("in-run calibration: a bound missed on one grid run; measuring the grid again, judging both runs' rows together")
	}
	return all
}

// checkPrediction predicts rows with cal, logs every pair and the median
// relative errors, and says whether a metric for which assert is true
// misses its bound; if final, such a miss fails the test.
func checkPrediction(t *testing.T, rows []Row, name string, cal *calib.File, assert func(metric string) bool, final bool) (missed bool) {
	t.Helper()
	pairs, err := experiments.E9Pairs(rows, cal, 1)
	if err != nil {
		t.Fatal(err)
	}
	// Where a median misses, the pairs say which point and case, and
	// whether the miss is one way (a cost the model lacks or a slower
	// machine than the calibration's) or the real side's spread.
	for _, p := range pairs {
		for _, m := range []string{"pause_ms", "duration_ms", "copied_mib"} {
			real := slices.Sorted(slices.Values(p.Real[m]))
			t.Logf("%s: pair %s %s: %s measured %.1f, predicted %.1f: relative error %.1f %%",
				name, p.Point, p.Case, m, real, p.Pred[m], 100*p.RelErr(m))
		}
	}
	errs := experiments.E9PairErrors(pairs)
	for _, m := range []string{"pause_ms", "duration_ms", "copied_mib", "window_ms"} {
		e, ok := errs[m]
		if !ok {
			t.Fatalf("%s: no prediction error for %s", name, m)
		}
		t.Logf("%s: %s median relative error %.1f %% (bound %.0f %%)", name, m, 100*e[0], 100*e[1])
		if math.IsNaN(e[0]) {
			t.Errorf("%s: %s has no relative error (every measured median 0)", name, m)
			continue
		}
		if e[1] > 0 && e[0] > e[1] {
			if assert(m) {
				missed = true
				if final {
					t.Errorf("%s: %s median relative error %.1f %%, over the %.0f %% bound (%s)", name, m, 100*e[0], 100*e[1], cal.Sim.Source)
				} else {
					t.Logf("%s: %s median relative error %.1f %%, over the %.0f %% bound (%s)", name, m, 100*e[0], 100*e[1], cal.Sim.Source)
				}
			} else {
				t.Logf("%s: %s is outside its bound; logged, not asserted", name, m)
			}
		}
	}
	return missed
}
