package realrun

import (
	"math"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/vnsnap/vnsnap/core"
	"github.com/vnsnap/vnsnap/experiments/calib"
	sim "github.com/vnsnap/vnsnap/simbackend"
	"github.com/vnsnap/vnsnap/vne"
)

func TestPointVNE(t *testing.T) {
	p := Point{VMs: 3, MemMiB: 128, Guest: "dirtier", Rate: 16, WSMiB: 32}
	v, err := vne.Parse("e9.yaml", []byte(p.yaml()), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if len(v.VMs) != 3 || len(v.Hosts) != 2 || v.VMs[2].Host != "h1" || v.VMs[1].Host != "h2" {
		t.Errorf("VNE of %s: %d VMs on %d hosts, third on %s", p.Name(), len(v.VMs), len(v.Hosts), v.VMs[2].Host)
	}
	if g := v.VMs[0].Guest; g.Builtin != "dirtier" || strings.Join(g.Args, " ") != "-rate=16 -ws=32" {
		t.Errorf("guest %+v, want dirtier -rate=16 -ws=32", g)
	}
	for _, bad := range []Point{
		{VMs: 0, MemMiB: 128, Guest: "idle"}, {VMs: 2, MemMiB: 8, Guest: "idle"},
		{VMs: 2, MemMiB: 128, Guest: "tcpstream"}, {VMs: 2, MemMiB: 128, Guest: "dirtier", Rate: 8, WSMiB: 128},
	} {
		if err := bad.validate(); err == nil {
			t.Errorf("point %+v accepted", bad)
		}
	}
}

func TestParseCase(t *testing.T) {
	c, err := ParseCase("vnsnap-log/memory")
	if err != nil || c.Algorithm != core.VNsnapLog || c.Sink != core.MemorySink {
		t.Errorf("ParseCase: %v, %v", c, err)
	}
	for _, bad := range []string{"vnsnap", "vnsnap/tape", "fast/memory"} {
		if _, err := ParseCase(bad); err == nil || !strings.Contains(err.Error(), bad) {
			t.Errorf("ParseCase(%q): %v, want an error naming it", bad, err)
		}
	}
	for _, g := range []Grid{DefaultGrid(), FullGrid()} {
		for _, s := range g.Cases {
			if _, err := ParseCase(s); err != nil {
				t.Error(err)
			}
		}
		for _, p := range g.Points {
			if err := p.validate(); err != nil {
				t.Error(err)
			}
		}
	}
}

func sampleRows() []Row {
	var rows []Row
	for rep := 0; rep < 2; rep++ {
		for _, a := range []string{"vnsnap", "stop-copy"} {
			for vm := 1; vm <= 2; vm++ {
				k := float64(rep + vm)
				rows = append(rows, Row{Point: "2x128MiB-dirtier-8", VMs: 2, MemMiB: 128, Guest: "dirtier", Rate: 8, WSMiB: 32,
					Measured: 7 + k, Algorithm: a, Sink: "memory", Repeat: rep, VM: "v" + string(rune('0'+vm)),
					PauseMs: 100 + k, OutsideMs: 300 + k, QEMUPauseMs: 80, DurationMs: 900 + k, BytesCopied: 1 << 26,
					StreamBytes: 1<<26 + 1000, MemoryCopied: 1 << 26, Passes: 3, WindowMs: 200, SnapshotMs: 1000, StallMs: 280 + k})
			}
		}
	}
	return rows
}

func TestWriteRead(t *testing.T) {
	dir := t.TempDir()
	rows := sampleRows()
	cfg := RunConfig{Grid: DefaultGrid(), QEMU: "10.0.2", Machine: "pc-i440fx-10.0", CPU: "x", Cores: 2, Date: "2026-12-02T05:00:00Z"}
	if err := Write(dir, cfg, rows); err != nil {
		t.Fatal(err)
	}
	gc, got, err := Read(filepath.Join(dir, Name+".json"))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(cfg, gc); diff != "" {
		t.Errorf("config (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(rows, got); diff != "" {
		t.Errorf("rows (-want +got):\n%s", diff)
	}
}

func TestSimConfig(t *testing.T) {
	f := &calib.File{BW: calib.BW{Memory: 3e8, Disk: 1e8}, Sim: calib.Costs{Stop: calib.Duration(time.Millisecond), Cont: calib.Duration(2 * time.Millisecond), DeviceState: 1000, VCPUState: 24}}
	rows := sampleRows()[:2]
	c := SimConfig(rows, Case{core.VNsnap, core.DiskSink}, f, 3)
	if c.VMs != 2 || c.MemBytes != 128<<20 || c.HotBytes != 32<<20 || c.Traffic != "none" || c.Seed != 3 {
		t.Errorf("config %+v", c)
	}
	if want := 8.5 * (1 << 20); c.DirtyRate != want { // median of 8 and 9 MiB/s
		t.Errorf("dirty rate %v, want %v", c.DirtyRate, want)
	}
	if c.Host.DiskBandwidth != 1e8 || c.Host.MemoryBandwidth != 3e8 || c.Calibration.DeviceState != 1000 ||
		c.Calibration.VCPUState != 24 || c.Calibration.Cont != sim.Duration(2*time.Millisecond) {
		t.Errorf("calibration not applied: %+v, %+v", c.Host, c.Calibration)
	}
	if c.Mode != core.Observed || c.Hypervisor != sim.HypervisorQEMU || !c.QEMU.AutoConverge {
		t.Errorf("mode %s, model %q, auto-converge %t; want QEMU's own loop with auto-converge, as realbackend runs", c.Mode, c.Hypervisor, c.QEMU.AutoConverge)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("SimConfig is not a valid simulator config: %v", err)
	}
	// The file's "sim" member, as `vnsnap sim --calibration` reads it, is
	// the calibration SimConfig applies.
	f.Sim.Source, f.Sim.QMPRoundTrip, f.Sim.DiskFreeze = "test", calib.Duration(3*time.Millisecond), calib.Duration(time.Millisecond)
	b, err := f.SimJSON()
	if err != nil {
		t.Fatal(err)
	}
	loaded, err := sim.ParseCalibration(b)
	if err != nil {
		t.Fatalf("simbackend refuses the calibration's sim member: %v\n%s", err, b)
	}
	if diff := cmp.Diff(loaded, SimConfig(rows, Case{core.VNsnap, core.DiskSink}, f, 3).Calibration); diff != "" {
		t.Errorf("loaded (-) and applied (+) calibrations differ:\n%s", diff)
	}
}

func TestErrorsAndOrdering(t *testing.T) {
	pairs := []Pair{
		{Point: "p", Case: "a", Real: map[string][]float64{"pause": {100, 110, 90}}, Pred: map[string][]float64{"pause": {120}}},
		{Point: "p", Case: "b", Real: map[string][]float64{"pause": {10}}, Pred: map[string][]float64{"pause": {4}}},
		{Point: "p", Case: "c", Real: map[string][]float64{"pause": {0}}, Pred: map[string][]float64{"pause": {5}}},
	}
	if e := pairs[0].RelErr("pause"); math.Abs(e-0.2) > 1e-9 {
		t.Errorf("RelErr = %v, want 0.2", e)
	}
	if e := MedianRelErr(pairs, "pause"); math.Abs(e-0.4) > 1e-9 { // median of 0.2 and 0.6; c has no measured value
		t.Errorf("MedianRelErr = %v, want 0.4", e)
	}
	real, pred, agree := Ordering(pairs, "pause")
	if agree || strings.Join(real["p"], " ") != "c b a" || strings.Join(pred["p"], " ") != "b c a" {
		t.Errorf("Ordering: real %v, pred %v, agree %v, want c b a, b c a, false (c below b on QEMU, above on the simulator)", real, pred, agree)
	}
	// Ties: the simulator gives b and c within 5 % of each other, and
	// QEMU's measurements of a and b overlap: no order to contradict.
	ties := []Pair{
		{Point: "q", Case: "a", Real: map[string][]float64{"pause": {9, 12}}, Pred: map[string][]float64{"pause": {30}}},
		{Point: "q", Case: "b", Real: map[string][]float64{"pause": {10, 11}}, Pred: map[string][]float64{"pause": {20}}},
		{Point: "q", Case: "c", Real: map[string][]float64{"pause": {1, 2}}, Pred: map[string][]float64{"pause": {20.5}}},
	}
	if _, _, agree := Ordering(ties, "pause"); !agree {
		t.Error("Ordering of ties within noise: disagree, want agree")
	}
}
