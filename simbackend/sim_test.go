package sim

import (
	"testing"
	"time"

	"github.com/vnsnap/vnsnap/core"
)

func small() Config {
	cfg := DefaultConfig()
	cfg.VMs, cfg.Hosts, cfg.MemBytes = 6, 2, 64<<20
	cfg.Warmup, cfg.RunOn = 500*time.Millisecond, 500*time.Millisecond
	return cfg
}

func mustRun(t *testing.T, cfg Config) *Result {
	t.Helper()
	r, err := Run(cfg)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	return r
}

// TestDeadlineAborts checks that a snapshot past its deadline is abandoned:
// nothing to restore, every VM running again, applications complete.
func TestDeadlineAborts(t *testing.T) {
	cfg := small()
	cfg.Deadline = 50 * time.Millisecond // a disk-sink pre-copy of 64 MiB takes longer
	cfg.Restore = true
	r := mustRun(t, cfg)
	if r.State != "aborted" {
		t.Fatalf("state %s, want aborted", r.State)
	}
	if r.RestoreOK == nil || *r.RestoreOK {
		t.Errorf("restore of an aborted snapshot: got ok, want failure")
	}
	if !r.StreamsOK {
		t.Errorf("streams did not complete after the abort: some VM was left paused or partitioned")
	}
}

// TestBudgetFallback checks the memory sink's RAM budget: VMs that do not
// fit fall back to the disk sink and pause longer.
func TestBudgetFallback(t *testing.T) {
	cfg := small()
	cfg.Sink = core.MemorySink
	cfg.Host.RAMBudget = 2 * cfg.MemBytes // two of the three VMs on each host fit
	r := mustRun(t, cfg)
	var fell, fit int
	var worstFit, bestFell float64 = 0, 1e18
	for _, v := range r.VMs {
		if v.Fallback {
			fell++
			bestFell = min(bestFell, v.DowntimeMS)
			if v.Sink != "disk" {
				t.Errorf("vm %d fell back but used sink %s, want disk", v.VM, v.Sink)
			}
		} else {
			fit++
			worstFit = max(worstFit, v.DowntimeMS)
		}
	}
	if fell != 2 || fit != 4 {
		t.Fatalf("got %d VMs fallen back and %d fitting, want 2 and 4", fell, fit)
	}
	if bestFell <= worstFit {
		t.Errorf("fallback VMs paused %.1f ms at least, fitting VMs %.1f ms at most; want disk pauses longer", bestFell, worstFit)
	}
	if r.State != "committed" {
		t.Errorf("state %s, want committed", r.State)
	}
}

// TestDirections checks that the model moves the way the physics says.
func TestDirections(t *testing.T) {
	mean := func(r *Result, f func(VMResult) float64) float64 {
		var s float64
		for _, v := range r.VMs {
			s += f(v)
		}
		return s / float64(len(r.VMs))
	}
	down := func(v VMResult) float64 { return v.DowntimeMS }
	dur := func(v VMResult) float64 { return v.DurationMS }

	disk, mem := small(), small()
	mem.Sink = core.MemorySink
	rd, rm := mustRun(t, disk), mustRun(t, mem)
	if d, m := mean(rd, down), mean(rm, down); m >= d {
		t.Errorf("downtime: memory sink %.2f ms, disk sink %.2f ms; want memory shorter", m, d)
	}

	slow, fast := small(), small()
	slow.DirtyRate, fast.DirtyRate = 5<<20, 60<<20
	if a, b := mean(mustRun(t, slow), dur), mean(mustRun(t, fast), dur); b <= a {
		t.Errorf("duration: %.0f ms at 60 MiB/s dirtying, %.0f ms at 5 MiB/s; want longer with more dirtying", b, a)
	}

	var windows = map[core.Algorithm]float64{}
	for _, a := range []core.Algorithm{core.VNsnap, core.StopCopy, core.COW} {
		c := small()
		c.Algorithm = a
		windows[a] = mustRun(t, c).WindowMS
	}
	for a, w := range windows {
		if a != core.COW && windows[core.COW] >= w {
			t.Errorf("window: cow %.1f ms, %s %.1f ms; want cow smallest", windows[core.COW], a, w)
		}
	}

	// Xen's loop iterates while the VMs' different dirty rates spread their
	// points apart; QEMU's 300 ms limit would stop these equal VMs after one
	// pass, together, with nothing crossing between their points.
	u := small()
	u.Algorithm, u.Hypervisor = core.Uncoordinated, HypervisorXen
	if r := mustRun(t, u); r.Orphans == 0 {
		t.Errorf("uncoordinated: got 0 orphans, want some")
	}
}

// TestTCPBackoffAroundSnapshot checks the price of consistency: with the
// disk sink's long window, colour drops make TCP time out and back off,
// and the application stalls longer than with the memory sink.
func TestTCPBackoffAroundSnapshot(t *testing.T) {
	disk, mem := small(), small()
	mem.Sink = core.MemorySink
	disk.DirtySpread, mem.DirtySpread = 0.9, 0.9
	disk.MemBytes, mem.MemBytes = 256<<20, 256<<20
	rd, rm := mustRun(t, disk), mustRun(t, mem)
	if rd.Dropped == 0 || rd.Timeouts == 0 {
		t.Fatalf("disk sink: %d colour drops and %d timeouts, want some of each", rd.Dropped, rd.Timeouts)
	}
	if rd.MaxStallMS <= rm.MaxStallMS {
		t.Errorf("max stall: disk %.0f ms, memory %.0f ms; want disk longer", rd.MaxStallMS, rm.MaxStallMS)
	}
}

// TestWindowBounds checks that the window reported equals its bounds and
// that every VM's snapshot point and resume lie within them.
func TestWindowBounds(t *testing.T) {
	r := mustRun(t, small())
	s := r.Snaps[0]
	if d := s.LastResumeMS - s.FirstPointMS - s.WindowMS; d > 1e-6 || d < -1e-6 {
		t.Errorf("window %.3f ms, bounds %.3f..%.3f ms", s.WindowMS, s.FirstPointMS, s.LastResumeMS)
	}
	for _, v := range s.VMs {
		if v.PointMS < s.FirstPointMS || v.ResumedMS > s.LastResumeMS || v.ResumedMS-v.PointMS-v.DowntimeMS > 1e-6 {
			t.Errorf("vm %d: point %.3f, resumed %.3f, downtime %.3f outside the window %.3f..%.3f",
				v.VM, v.PointMS, v.ResumedMS, v.DowntimeMS, s.FirstPointMS, s.LastResumeMS)
		}
	}
}
