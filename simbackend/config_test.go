package sim

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/vnsnap/vnsnap/core"
	"github.com/vnsnap/vnsnap/core/cut"
)

// TestValidateRejectsNonsense sets one field of a valid config to NaN, an
// infinity, a negative or an overflowing value: Validate must refuse it,
// naming the field (as its `vnsnap sim` flag where there is one), instead
// of the run panicking or running on nonsense.
func TestValidateRejectsNonsense(t *testing.T) {
	nan, inf := math.NaN(), math.Inf(1)
	tests := []struct {
		name string
		set  func(c *Config)
	}{
		{"vms", func(c *Config) { c.VMs = 0 }},
		{"vms", func(c *Config) { c.VMs = MaxVMs + 1 }},
		{"hosts", func(c *Config) { c.Hosts = -1 }},
		{"hosts", func(c *Config) { c.Hosts = math.MaxInt }},
		{"mem", func(c *Config) { c.MemBytes = 9200000000000000000 }},
		{"mem", func(c *Config) { c.MemBytes = -4096 }},
		{"mem", func(c *Config) { c.MemBytes = 4097 }},
		{"hot", func(c *Config) { c.HotBytes = -1 }},
		{"dirty", func(c *Config) { c.DirtyRate = nan }},
		{"dirty", func(c *Config) { c.DirtyRate = inf }},
		{"dirty", func(c *Config) { c.DirtyRate = -1 }},
		{"dirty", func(c *Config) { c.DirtyRate = 1e300 }},
		{"dirty-spread", func(c *Config) { c.DirtySpread = nan }},
		{"dirty-spread", func(c *Config) { c.DirtySpread = 1.5 }},
		{"hot-frac", func(c *Config) { c.HotFrac = nan }},
		{"flow-rate", func(c *Config) { c.FlowRate = nan }},
		{"flow-rate", func(c *Config) { c.FlowRate = -inf }},
		{"disk-bw", func(c *Config) { c.Host.DiskBandwidth = nan }},
		{"disk-bw", func(c *Config) { c.Host.DiskBandwidth = 0 }},
		{"disk-bw", func(c *Config) { c.Host.DiskBandwidth = inf }},
		{"mem-bw", func(c *Config) { c.Host.MemoryBandwidth = 1e-300 }},
		{"budget", func(c *Config) { c.Host.RAMBudget = -1 }},
		{"link-bw", func(c *Config) { c.Host.Link.Bandwidth = nan }},
		{"latency", func(c *Config) { c.Host.Link.Latency = -time.Second }},
		{"latency", func(c *Config) { c.Host.Link.Latency = math.MaxInt64 }},
		{"queue", func(c *Config) { c.Host.Link.Queue = -1 }},
		{"loss", func(c *Config) { c.Host.Link.Loss = nan }},
		{"loss", func(c *Config) { c.Host.Link.Loss = 1 }},
		{"loss", func(c *Config) { c.Host.Link.Loss = -0.5 }},
		{"downlink-bw", func(c *Config) { c.Host.Downlink.Bandwidth = nan }},
		{"downlink-bw", func(c *Config) { c.Host.Downlink.Bandwidth = -1 }},
		{"downlink-queue", func(c *Config) { c.Host.Downlink.Queue = -1 }},
		{"downlink-latency", func(c *Config) { c.Host.Downlink.Latency = -1 }},
		{"downlink-loss", func(c *Config) { c.Host.Downlink.Loss = 1 }},
		{"delack", func(c *Config) { c.TCP.DelayedACK = -1 }},
		{"delack", func(c *Config) { c.TCP.DelayedACK = time.Second }},
		{"local-bw", func(c *Config) { c.Host.Local.Bandwidth = nan }},
		{"local-latency", func(c *Config) { c.Host.Local.Latency = -1 }},
		{"local-loss", func(c *Config) { c.Host.Local.Loss = nan }},
		{"calibration", func(c *Config) { c.Calibration.Stop = -1 }},
		{"calibration", func(c *Config) { c.Calibration.Cont = MaxDuration + 1 }},
		{"calibration", func(c *Config) { c.Calibration.DeviceState = -1 }},
		{"calibration", func(c *Config) { c.Calibration.VCPUState = MaxMemBytes + 1 }},
		{"mode", func(c *Config) { c.Mode = 7 }},
		{"hypervisor-model", func(c *Config) { c.Hypervisor = "vmware" }},
		{"downtime-limit", func(c *Config) { c.QEMU.DowntimeLimit = -1 }},
		{"cpu-throttle-initial", func(c *Config) { c.QEMU.ThrottleInitial = 0 }},
		{"max-cpu-throttle", func(c *Config) { c.QEMU.ThrottleMax = 100 }},
		{"sync-timeslice", func(c *Config) { c.QEMU.SyncTimeslice = 0 }},
		{"xen-max-iterations", func(c *Config) { c.Hypervisor, c.Xen.MaxIterations = HypervisorXen, 0 }},
		{"deadline", func(c *Config) { c.Deadline = -1 }},
		{"warmup", func(c *Config) { c.Warmup = math.MaxInt64 }},
		{"run-on", func(c *Config) { c.RunOn = -time.Second }},
		{"interval", func(c *Config) { c.Interval = -1 }},
		{"interval", func(c *Config) { c.Snapshots, c.Interval = 3, 0 }},
		{"interval", func(c *Config) { c.Snapshots, c.Interval = MaxSnaps, MaxDuration/2 }},
		{"time-limit", func(c *Config) { c.TimeLimit = -1 }},
		{"snapshots", func(c *Config) { c.Snapshots = -1 }},
		{"snapshots", func(c *Config) { c.Snapshots = math.MaxInt }},
		{"restore", func(c *Config) { c.Restore, c.Snapshots = true, 0 }},
		{"traffic", func(c *Config) { c.Traffic = "star" }},
		{"traffic", func(c *Config) { c.VMs = 100000 }}, // 10^10 all-to-all flows
		{"policy", func(c *Config) { c.Policy = "vmware" }},
	}
	for _, tt := range tests {
		cfg := DefaultConfig()
		tt.set(&cfg)
		err := cfg.Validate()
		if err == nil {
			t.Errorf("%s: got no error, want one", tt.name)
			continue
		}
		if !strings.HasPrefix(err.Error(), tt.name+": ") {
			t.Errorf("%s: error %q does not start with the field's name", tt.name, err)
		}
	}
}

// TestValidateLinear checks that validating a huge VNE neither builds its
// traffic pattern nor allocates per VM pair: 100,000 VMs in a ring and
// 2,048 all-to-all (4 million flows, the limit) validate with almost no
// allocation.
func TestValidateLinear(t *testing.T) {
	for _, c := range []struct {
		vms     int
		traffic string
	}{{100000, "ring"}, {2048, "all-to-all"}, {MaxVMs, "pairs"}} {
		cfg := DefaultConfig()
		cfg.VMs, cfg.Traffic = c.vms, c.traffic
		var err error
		allocs := testing.AllocsPerRun(3, func() { err = cfg.Validate() })
		if err != nil {
			t.Errorf("%d VMs %s: %v, want valid", c.vms, c.traffic, err)
		}
		if allocs > 10 {
			t.Errorf("%d VMs %s: %.0f allocations to validate, want a handful", c.vms, c.traffic, allocs)
		}
	}
}

// TestRunNeverNegative runs snapshots that abort on their deadline (one
// with a terabyte of memory per VM, whose copy cannot finish): the run
// returns, and no duration in the result is negative.
func TestRunNeverNegative(t *testing.T) {
	for _, mem := range []int64{64 << 20, 1 << 40} {
		cfg := DefaultConfig()
		cfg.VMs, cfg.Hosts, cfg.MemBytes, cfg.Traffic = 2, 1, mem, "none"
		cfg.Deadline, cfg.Warmup, cfg.RunOn = 50*time.Millisecond, 100*time.Millisecond, 100*time.Millisecond
		r := mustRun(t, cfg)
		if r.State != "aborted" {
			t.Fatalf("mem %d: state %s, want aborted", mem, r.State)
		}
		for _, v := range r.VMs {
			if v.DurationMS < 0 || v.FlushMS < 0 || v.DowntimeMS < 0 || v.PointMS < 0 || v.ResumedMS < 0 {
				t.Errorf("mem %d: vm %d: negative time in %+v", mem, v.VM, v)
			}
		}
		if r.TotalMS < 0 || r.WindowMS < 0 {
			t.Errorf("mem %d: total %g ms, window %g ms, want >= 0", mem, r.TotalMS, r.WindowMS)
		}
	}
}

// TestRunSaturates runs the extremes that Validate allows, a petabyte of
// memory on a disk of one byte per second and a link of one byte per
// second: durations saturate instead of overflowing into the past, and the
// deadline aborts the snapshot.
func TestRunSaturates(t *testing.T) {
	cfg := DefaultConfig()
	cfg.VMs, cfg.Hosts, cfg.MemBytes, cfg.Traffic = 2, 2, MaxMemBytes, "ring"
	cfg.Host.DiskBandwidth, cfg.Host.Link.Bandwidth, cfg.Host.Link.Queue = MinBW, MinBW, MaxMemBytes
	cfg.Deadline, cfg.Warmup, cfg.RunOn = time.Second, 100*time.Millisecond, 100*time.Millisecond
	if err := cfg.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	r := mustRun(t, cfg)
	if r.State != "aborted" {
		t.Errorf("state %s, want aborted", r.State)
	}
	// Without a deadline the copy outlasts the simulator's horizon: an
	// error naming the deadline, not a panic.
	cfg.Deadline = 0
	cfg.Traffic = "none"
	if _, err := Run(cfg); err == nil || !strings.HasPrefix(err.Error(), "deadline: ") {
		t.Errorf("no deadline: got %v, want an error naming the deadline", err)
	}
}

// TestSetColourIdempotent issues a VM's colour change twice, as the core
// may on abort: the second is a no-op, so the trace has one cut per VM and
// the image stays the one taken at the snapshot point.
func TestSetColourIdempotent(t *testing.T) {
	cfg := DefaultConfig()
	cfg.VMs, cfg.Hosts, cfg.Traffic = 2, 1, "none"
	eng := NewEngine(1)
	w, err := build(cfg, eng)
	if err != nil {
		t.Fatal(err)
	}
	cuts := 0
	w.Net.Observe(func(r cut.Record) {
		if r.Kind == cut.Cut {
			cuts++
		}
	})
	d := newDriver(w, nil, 1)
	d.exec(core.SetColour{VM: 0, Epoch: 1})
	first := d.images[0].point
	eng.RunUntil(time.Second, nil)
	d.exec(core.SetColour{VM: 0, Epoch: 1})
	if cuts != 1 {
		t.Errorf("got %d cuts, want 1", cuts)
	}
	if got := d.images[0].point; got != first {
		t.Errorf("image taken at %v, want the first colour change's %v", got, first)
	}
}

// TestFlowCountMatchesPairs checks the arithmetic Validate uses against the
// pairs the world builds.
func TestFlowCountMatchesPairs(t *testing.T) {
	for _, p := range append(append([]string(nil), Patterns...), "bogus") {
		for n := 1; n <= 9; n++ {
			pairs, perr := pairsFor(p, n)
			got, cerr := flowCount(p, n)
			if (perr != nil) != (cerr != nil) {
				t.Fatalf("%s among %d: pairsFor error %v, flowCount error %v", p, n, perr, cerr)
			}
			if got != int64(len(pairs)) {
				t.Errorf("%s among %d: got %d flows, want %d", p, n, got, len(pairs))
			}
		}
	}
}

// TestDownlinkDefaults checks that a zero downlink bandwidth or queue takes
// the uplink's (so a sweep of the uplink moves both), and a set one stays.
func TestDownlinkDefaults(t *testing.T) {
	h := DefaultConfig().Host
	h.Link.Bandwidth, h.Link.Queue = 1e6, 1000
	if d := h.downlink(); d.Bandwidth != 1e6 || d.Queue != 1000 {
		t.Errorf("zero downlink: %g B/s, %d B queue; want the uplink's 1e6 and 1000", d.Bandwidth, d.Queue)
	}
	h.Downlink.Bandwidth, h.Downlink.Queue = 5e5, 300
	if d := h.downlink(); d.Bandwidth != 5e5 || d.Queue != 300 {
		t.Errorf("set downlink: %g B/s, %d B queue; want 5e5 and 300", d.Bandwidth, d.Queue)
	}
}
