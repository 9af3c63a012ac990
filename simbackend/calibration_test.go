package sim

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/vnsnap/vnsnap/core"
)

func TestParseCalibration(t *testing.T) {
	c, err := ParseCalibration([]byte(`{"source": "test box", "stop": "3ms", "cont": 2000000, "device_state_bytes": 1024}`))
	if err != nil {
		t.Fatal(err)
	}
	want := DefaultCalibration()
	want.Source, want.Stop, want.Cont, want.DeviceState = "test box", Duration(3*time.Millisecond), Duration(2*time.Millisecond), 1024
	if d := cmp.Diff(want, c); d != "" {
		t.Errorf("parsed calibration (-want +got):\n%s", d)
	}
	bad := []struct{ json, field string }{
		{`{"stop": "-1ms"}`, "stop"},
		{`{"cont": "soon"}`, "cont"},
		{`{"qmp_round_trip": true}`, "qmp_round_trip"},
		{`{"device_state_bytes": -5}`, "device_state_bytes"},
		{`{"vcpu_state_bytes": 1e30}`, "vcpu_state_bytes"},
		{`{"live_bps": -1}`, "live_bps"},
		{`{"live_bps": 1e13}`, "live_bps"},
		{`{"live_bps": "fast"}`, "live_bps"},
		{`{"stopp": "1ms"}`, "stopp"},
		{`{"stop": "1ms"} {}`, "trailing"},
		{`[1]`, "object"},
	}
	for _, b := range bad {
		_, err := ParseCalibration([]byte(b.json))
		if err == nil || !strings.Contains(err.Error(), b.field) {
			t.Errorf("%s: error %v, want one naming %q", b.json, err, b.field)
		}
	}
}

// TestLiveBandwidthField: a file without live_bps (one from before it was
// measured) keeps today's model, 0, the sink's bandwidth; a file with it
// sets it; NaN, which JSON cannot carry, is refused by Validate by name.
func TestLiveBandwidthField(t *testing.T) {
	c, err := ParseCalibration([]byte(`{"cow_bps": 2.5e8}`))
	if err != nil {
		t.Fatal(err)
	}
	if c.LiveBandwidth != 0 {
		t.Errorf("no live_bps: LiveBandwidth %g, want 0 (the sink's bandwidth)", c.LiveBandwidth)
	}
	if c, err = ParseCalibration([]byte(`{"live_bps": 1.1e9}`)); err != nil || c.LiveBandwidth != 1.1e9 {
		t.Errorf("live_bps 1.1e9: LiveBandwidth %g, error %v", c.LiveBandwidth, err)
	}
	bad := DefaultCalibration()
	bad.LiveBandwidth = math.NaN()
	if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "live_bps") {
		t.Errorf("live_bps NaN: error %v, want one naming live_bps", err)
	}
}

func TestLoadCalibration(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "cal.json")
	want := DefaultCalibration()
	want.Source, want.DiskFreeze = "measured", Duration(7*time.Millisecond)
	data, err := json.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := LoadCalibration(path)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("round trip (-want +got):\n%s", d)
	}
	if err := os.WriteFile(path, []byte(`{"colour_flip": "-3s"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadCalibration(path); err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "colour_flip") {
		t.Errorf("bad file: error %v, want one naming the file and colour_flip", err)
	}
	if _, err := LoadCalibration(filepath.Join(dir, "missing.json")); err == nil {
		t.Error("missing file: no error")
	}
}

// TestPauseCostsWhatCalibrationSays runs one idle VM and adds known costs
// to each step of the pause: the downtime grows by exactly their sum, in
// both modes and for pre-copy and stop-and-copy.
func TestPauseCostsWhatCalibrationSays(t *testing.T) {
	for _, algo := range []core.Algorithm{core.VNsnap, core.StopCopy} {
		for _, mode := range []core.Mode{core.Observed, core.Driven} {
			cfg := DefaultConfig()
			cfg.VMs, cfg.Hosts, cfg.MemBytes, cfg.DirtyRate, cfg.Traffic = 1, 1, 16<<20, 0, "none"
			cfg.Algorithm, cfg.Mode = algo, mode
			cfg.Calibration = Calibration{}
			base := mustRun(t, cfg).VMs[0].DowntimeMS
			c := &cfg.Calibration
			c.Cont, c.ColourFlip, c.DiskFreeze, c.QMPRoundTrip = Duration(time.Millisecond), Duration(2*time.Millisecond),
				Duration(4*time.Millisecond), Duration(8*time.Millisecond)
			// 150 kB of state at the 150 MB/s disk: 1 ms more; the
			// disk's switchover 32 ms (the memory sink's is not used).
			c.DeviceState, c.VCPUState = 100e3, 50e3
			c.SwitchoverDisk, c.SwitchoverMemory = Duration(32*time.Millisecond), Duration(time.Second)
			got := mustRun(t, cfg).VMs[0].DowntimeMS
			if d := got - base; d < 47.99 || d > 48.01 {
				t.Errorf("%s %s: downtime %.3f ms with the costs, %.3f without: grew %.3f ms, want 48", algo, mode, got, base, d)
			}
		}
	}
}

// TestZeroPagesAreNotSent checks Config.PopulatedBytes: a copy of a whole
// idle VM sends its populated pages only, and a working set adds the part
// of it that falls on zero pages (also when it is no longer written), for
// every method.
func TestZeroPagesAreNotSent(t *testing.T) {
	const mem, pop, ws = 64 << 20, 16 << 20, 32 << 20
	for _, algo := range []core.Algorithm{core.VNsnap, core.StopCopy, core.COW} {
		for _, guest := range []struct {
			ws    int64
			dirty float64
		}{{0, 0}, {ws, 0}, {ws, 1 << 20}} {
			dirty := guest.dirty
			cfg := DefaultConfig()
			cfg.VMs, cfg.Hosts, cfg.MemBytes, cfg.DirtyRate, cfg.Traffic = 1, 1, mem, dirty, "none"
			cfg.HotBytes, cfg.HotFrac, cfg.DirtySpread = guest.ws, 1, 0
			cfg.Algorithm, cfg.PopulatedBytes = algo, pop
			// The first copy of the whole VM, without what a pre-copy
			// sends again.
			want := int64(pop)
			if guest.ws > 0 {
				want = ws + pop/2 // half the populated pages lie outside the working set
			}
			got := mustRun(t, cfg).VMs[0].BytesCopied
			if algo == core.VNsnap && dirty > 0 {
				if got < want || got > want+8<<20 {
					t.Errorf("%s dirty %g: %d bytes copied, want %d plus what was dirtied during the copy", algo, dirty, got, want)
				}
				continue
			}
			if got != want {
				t.Errorf("%s dirty %g: %d bytes copied, want %d (populated %d of %d, working set %d)", algo, dirty, got, want, pop, mem, ws)
			}
		}
	}
}

// TestCOWCostsWhatCalibrationSays checks the copy-on-write costs: COWArm
// lengthens an idle VM's pause by itself, and a COWBandwidth below the
// sink's stretches the background copy of its pages to that bandwidth.
func TestCOWCostsWhatCalibrationSays(t *testing.T) {
	for _, mode := range []core.Mode{core.Observed, core.Driven} {
		cfg := DefaultConfig()
		cfg.VMs, cfg.Hosts, cfg.MemBytes, cfg.DirtyRate, cfg.Traffic = 1, 1, 16<<20, 0, "none"
		cfg.Algorithm, cfg.Mode = core.COW, mode
		cfg.Calibration = Calibration{}
		base := mustRun(t, cfg).VMs[0]

		arm := 16 * time.Millisecond
		cfg.Calibration.COWArm = Duration(arm)
		got := mustRun(t, cfg).VMs[0]
		if d, want := got.DowntimeMS-base.DowntimeMS, ms(arm); math.Abs(d-want) > 0.01 {
			t.Errorf("%s: cow_arm %v: downtime %.3f ms, %.3f without: grew %.3f ms, want %.3f", mode, arm, got.DowntimeMS, base.DowntimeMS, d, want)
		}

		cfg.Calibration.COWArm = 0
		sink := cfg.Host.DiskBandwidth
		cfg.Calibration.COWBandwidth = sink / 4
		got = mustRun(t, cfg).VMs[0]
		// The pages at a quarter of the sink's rate: three times their
		// copy at its rate more.
		want := 3 * float64(cfg.MemBytes) / sink * 1e3
		if d := got.DurationMS - base.DurationMS; math.Abs(d-want) > 0.01*want {
			t.Errorf("%s: cow_bps %g: copy %.3f ms, %.3f at the sink's %g: grew %.3f ms, want %.3f", mode, sink/4, got.DurationMS, base.DurationMS, sink, d, want)
		}
		cfg.Calibration.COWBandwidth = 2 * sink // faster than the sink: the sink's rate
		if got := mustRun(t, cfg).VMs[0]; got.DurationMS != base.DurationMS {
			t.Errorf("%s: cow_bps %g above the sink's %g: copy %.3f ms, want the sink's %.3f", mode, 2*sink, sink, got.DurationMS, base.DurationMS)
		}
	}
}

// TestLiveBandwidthCapsLivePasses: a LiveBandwidth below the sink's
// stretches an idle pre-copy's live pass (all of its pages) to that
// bandwidth and leaves its pause (the final pass, the VM paused) alone; a
// stop-and-copy, whose one pass runs paused, and a LiveBandwidth above the
// sink's change nothing.
func TestLiveBandwidthCapsLivePasses(t *testing.T) {
	for _, mode := range []core.Mode{core.Observed, core.Driven} {
		for _, algo := range []core.Algorithm{core.VNsnap, core.StopCopy} {
			cfg := DefaultConfig()
			cfg.VMs, cfg.Hosts, cfg.MemBytes, cfg.DirtyRate, cfg.Traffic = 1, 1, 16<<20, 0, "none"
			cfg.Algorithm, cfg.Mode = algo, mode
			cfg.Calibration = Calibration{}
			base := mustRun(t, cfg).VMs[0]
			sink := cfg.Host.DiskBandwidth
			cfg.Calibration.LiveBandwidth = sink / 4
			got := mustRun(t, cfg).VMs[0]
			want := 0.0
			if algo == core.VNsnap {
				// The pages at a quarter of the sink's rate: three
				// times their copy at its rate more.
				want = 3 * float64(cfg.MemBytes) / sink * 1e3
			}
			if d := got.DurationMS - base.DurationMS; math.Abs(d-want) > 0.01*want+1e-6 {
				t.Errorf("%s %s: live_bps %g: copy %.3f ms, %.3f at the sink's %g: grew %.3f ms, want %.3f", algo, mode, sink/4, got.DurationMS, base.DurationMS, sink, d, want)
			}
			if got.DowntimeMS != base.DowntimeMS {
				t.Errorf("%s %s: live_bps %g: downtime %.3f ms, want %.3f as at the sink's rate", algo, mode, sink/4, got.DowntimeMS, base.DowntimeMS)
			}
			cfg.Calibration.LiveBandwidth = 2 * sink
			if got := mustRun(t, cfg).VMs[0]; got.DurationMS != base.DurationMS || got.DowntimeMS != base.DowntimeMS {
				t.Errorf("%s %s: live_bps above the sink's: copy %.3f ms, pause %.3f, want %.3f, %.3f", algo, mode, got.DurationMS, got.DowntimeMS, base.DurationMS, base.DowntimeMS)
			}
		}
	}
}
