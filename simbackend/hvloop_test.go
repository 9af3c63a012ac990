package sim

import (
	"testing"
	"time"

	"github.com/vnsnap/vnsnap/core"
)

// oneVM is a VNsnap snapshot of one VM alone on its host, in Observed mode
// with the given hypervisor model.
func oneVM(model string, memMiB int64, dirtyMiBps float64) Config {
	cfg := DefaultConfig()
	cfg.VMs, cfg.Hosts, cfg.Traffic, cfg.DirtySpread = 1, 1, "none", 0
	cfg.MemBytes, cfg.DirtyRate = memMiB<<20, dirtyMiBps*(1<<20)
	cfg.Mode, cfg.Hypervisor = core.Observed, model
	cfg.Deadline = time.Minute
	return cfg
}

// liveEvents runs cfg and returns the events the core was fed for VM 0.
func liveEvents(t *testing.T, cfg Config) (*Result, []core.Event) {
	t.Helper()
	var evs []core.Event
	cfg.observe = func(ev core.Event, _ []core.Command) {
		switch ev.(type) {
		case core.RoundCopied, core.VMPaused, core.FinalCopied, core.VMResumed:
			evs = append(evs, ev)
		}
	}
	return mustRun(t, cfg), evs
}

// TestObservedReportsAsRealBackend checks the events of the modelled loops
// against what realbackend feeds the core from a real hypervisor: rounds
// numbered 1, 2, ... with Sent and Dirty unknown (zero), then VMPaused,
// FinalCopied with every page the save sent, VMResumed.
func TestObservedReportsAsRealBackend(t *testing.T) {
	for _, model := range []string{HypervisorQEMU, HypervisorXen} {
		res, evs := liveEvents(t, oneVM(model, 64, 40))
		if res.State != "committed" {
			t.Fatalf("%s: state %s", model, res.State)
		}
		rounds := 0
		for len(evs) > 0 {
			r, ok := evs[0].(core.RoundCopied)
			if !ok {
				break
			}
			rounds++
			if r.Round != rounds || r.Sent != 0 || r.Dirty != 0 || r.Elapsed <= 0 {
				t.Errorf("%s: %v, want round %d with only its elapsed time", model, r, rounds)
			}
			evs = evs[1:]
		}
		if len(evs) != 3 {
			t.Fatalf("%s: after %d rounds got %v, want VMPaused, FinalCopied, VMResumed", model, rounds, evs)
		}
		_, p := evs[0].(core.VMPaused)
		f, fc := evs[1].(core.FinalCopied)
		_, r := evs[2].(core.VMResumed)
		if !p || !fc || !r {
			t.Fatalf("%s: got %v, want VMPaused, FinalCopied, VMResumed", model, evs)
		}
		pages := int64(64 << 20 / core.PageSize)
		if f.Sent <= pages || f.Sent*core.PageSize != res.VMs[0].BytesCopied {
			t.Errorf("%s: FinalCopied sent %d pages (report %d bytes), want more than the %d of memory, all in the report",
				model, f.Sent, res.VMs[0].BytesCopied, pages)
		}
		if res.VMs[0].Rounds != rounds+1 {
			t.Errorf("%s: report has %d rounds, want %d live + the final", model, res.VMs[0].Rounds, rounds)
		}
	}
}

// TestXenModel checks libxc's rule: an idle VM needs one pass; one that
// dirties a lot stops after 5 live passes; one whose dirty set falls under
// 50 pages sends it live and stops.
func TestXenModel(t *testing.T) {
	tests := []struct {
		dirty      float64
		wantRounds int
	}{
		{0, 2},   // pass 1, nothing dirty: suspend
		{64, 6},  // 5 live passes, never under 50 pages
		{0.1, 3}, // a few pages dirty after pass 1 (under 50): pass 2 sends them, then suspend
	}
	for _, tt := range tests {
		cfg := oneVM(HypervisorXen, 64, tt.dirty)
		cfg.HotFrac = 0
		res := mustRun(t, cfg)
		if got := res.VMs[0].Rounds; got != tt.wantRounds {
			t.Errorf("dirty %g MiB/s: %d rounds, want %d", tt.dirty, got, tt.wantRounds)
		}
	}
}

// TestQEMUModel checks QEMU's rule: the pause sends no more than the
// downtime limit allows at the copy's bandwidth; without auto-converge a VM
// that dirties its hot set faster than the limit allows never stops (the
// deadline aborts it); with it, the throttle rises 20, 30, ... until it
// stops.
func TestQEMUModel(t *testing.T) {
	cfg := oneVM(HypervisorQEMU, 128, 400)
	cfg.HotBytes = 64 << 20
	cfg.QEMU.DowntimeLimit = 20 * time.Millisecond
	cfg.QEMU.AutoConverge = false
	cfg.Deadline = 20 * time.Second
	if res := mustRun(t, cfg); res.State != "aborted" {
		t.Errorf("no auto-converge: state %s, want aborted (QEMU never converges)", res.State)
	}
	cfg.QEMU.AutoConverge = true
	res := mustRun(t, cfg)
	if res.State != "committed" {
		t.Fatalf("auto-converge: state %s, want committed", res.State)
	}
	v := res.VMs[0]
	if v.MaxThrottle < 20 || (v.MaxThrottle-20)%10 != 0 {
		t.Errorf("auto-converge: max throttle %d%%, want 20 + a multiple of 10", v.MaxThrottle)
	}
	// The pause: the last dirty pages (at most what 20 ms moves at the
	// disk's 150 MB/s, plus what the guest dirtied during the 1 ms stop)
	// and the fixed costs.
	c := cfg.Calibration
	fixed := time.Duration(c.ColourFlip + c.DiskFreeze + c.QMPRoundTrip + c.Cont)
	state := time.Duration(float64(c.pausedState()) / cfg.Host.DiskBandwidth * 1e9)
	stopDirty := time.Duration(float64(time.Duration(c.Stop)) * cfg.DirtyRate / cfg.Host.DiskBandwidth)
	limit := cfg.QEMU.DowntimeLimit + fixed + state + stopDirty
	if down := time.Duration(v.DowntimeMS * float64(time.Millisecond)); down > limit {
		t.Errorf("downtime %v, want at most %v (downtime limit, fixed costs, state)", down, limit)
	}
}
