package sim

import (
	"errors"
	"fmt"
	"time"

	"github.com/vnsnap/vnsnap/core"
	"github.com/vnsnap/vnsnap/core/cut"
)

// HostConfig describes every host of the simulated cluster.
type HostConfig struct {
	DiskBandwidth   float64 // bytes per second: the disk sink and the memory sink's flush
	MemoryBandwidth float64 // bytes per second: the memory sink's copy rate
	RAMBudget       int64   // bytes the memory-sink daemon may hold
	Link            Link    // the host's uplink
	Local           Link    // the host's software bridge between its own VMs
	PauseLatency    Time    // time to pause a VM
	ResumeLatency   Time    // time to resume a VM
	DeviceState     int64   // bytes of CPU and device state in the final round
}

// Config describes one simulated VNE snapshot run.
type Config struct {
	Seed      uint64
	VMs       int
	Hosts     int
	MemBytes  int64   // per VM
	DirtyRate float64 // bytes per second of page writes per VM
	HotFrac   float64 // fraction of writes that fall on the hot working set
	// DirtySpread varies the dirty rate between VMs: each VM's rate is
	// DirtyRate times a factor drawn uniformly from [1-s, 1+s] by the seed.
	DirtySpread float64
	HotBytes    int64 // hot working set per VM; 0 means MemBytes/8
	Algorithm   core.Algorithm
	Sink        core.Sink
	Policy      string // "xen", "qemu" or "qemu-autoconverge"
	Deadline    Time   // abort the snapshot after this; 0 means none
	Traffic     string // "all-to-all", "ring", "pairs" or "none"
	FlowRate    float64
	UDP         bool // also send UDP datagrams around a ring
	Host        HostConfig
	Warmup      Time // the snapshot starts at this time
	RunOn       Time // applications keep writing this long after the snapshot ends
	Restore     bool // restore the VNE from the last committed snapshot and run it on
	// Snapshots is the number of snapshots taken (0: none, a baseline run),
	// starting at Warmup and then every Interval (or as soon as the previous
	// one has finished).
	Snapshots int
	Interval  Time
	// Workload, if set, runs instead of the simple traffic generator.
	Workload Workload
	// TimeLimit bounds the virtual time of a run with a Workload.
	TimeLimit Time
	// OnTCP, if set, receives TCP sender events (for timelines).
	OnTCP func(TCPEvent)
	// Trace, if set, also receives every trace record of the snapshot run.
	Trace func(r cut.Record)
}

// DefaultConfig returns a small VNE with sensible hardware: 1 GbE links with
// 100 µs latency, a 150 MB/s disk, a 2 GB/s memory-sink copy rate and an
// 8 GiB RAM budget per host.
func DefaultConfig() Config {
	return Config{
		Seed: 1, VMs: 4, Hosts: 2, MemBytes: 256 << 20, DirtyRate: 20 << 20, HotFrac: 0.9, DirtySpread: 0.5,
		Algorithm: core.VNsnap, Sink: core.DiskSink, Policy: "xen",
		Deadline: 10 * time.Minute, Traffic: "all-to-all", FlowRate: 1 << 20,
		Host: HostConfig{
			DiskBandwidth: 150e6, MemoryBandwidth: 2e9, RAMBudget: 8 << 30,
			Link:         Link{Bandwidth: 125e6, Latency: 100 * time.Microsecond, Queue: 512 << 10},
			Local:        Link{Bandwidth: 1.25e9, Latency: 10 * time.Microsecond, Queue: 1 << 20},
			PauseLatency: time.Millisecond, ResumeLatency: time.Millisecond, DeviceState: 256 << 10,
		},
		Warmup: 2 * time.Second, RunOn: 2 * time.Second, Snapshots: 1, TimeLimit: time.Hour,
	}
}

// Validate reports the first problem, naming the field.
func (c *Config) Validate() error {
	switch {
	case c.VMs < 1:
		return fmt.Errorf("vms: %d, want at least 1", c.VMs)
	case c.Hosts < 1:
		return fmt.Errorf("hosts: %d, want at least 1", c.Hosts)
	case c.MemBytes < core.PageSize || c.MemBytes%core.PageSize != 0:
		return fmt.Errorf("mem: %d bytes, want a positive multiple of %d", c.MemBytes, core.PageSize)
	case c.DirtyRate < 0:
		return fmt.Errorf("dirty: %g bytes/s is negative", c.DirtyRate)
	case c.DirtySpread < 0 || c.DirtySpread > 1:
		return fmt.Errorf("dirty-spread: %g, want 0..1", c.DirtySpread)
	case c.HotFrac < 0 || c.HotFrac > 1:
		return fmt.Errorf("hot-frac: %g, want 0..1", c.HotFrac)
	case c.HotBytes < 0 || c.HotBytes > c.MemBytes:
		return fmt.Errorf("hot: %d bytes, want 0..mem", c.HotBytes)
	case c.FlowRate < 0:
		return fmt.Errorf("flow-rate: %g is negative", c.FlowRate)
	case c.Host.DiskBandwidth <= 0:
		return errors.New("disk bandwidth must be positive")
	case c.Host.MemoryBandwidth <= 0:
		return errors.New("memory bandwidth must be positive")
	case c.Host.Link.Bandwidth <= 0:
		return errors.New("link bandwidth must be positive")
	case c.Host.Local.Bandwidth <= 0:
		return errors.New("local bridge bandwidth must be positive")
	case c.Host.Link.Loss < 0 || c.Host.Link.Loss >= 1:
		return fmt.Errorf("loss: %g, want 0 <= loss < 1", c.Host.Link.Loss)
	case c.Warmup < 0 || c.RunOn < 0 || c.Deadline < 0:
		return errors.New("warmup, run-on and deadline must not be negative")
	case c.Snapshots < 0:
		return fmt.Errorf("snapshots: %d is negative", c.Snapshots)
	case c.Snapshots > 1 && c.Interval <= 0:
		return fmt.Errorf("interval: %v, want a positive interval for %d snapshots", c.Interval, c.Snapshots)
	}
	if _, err := pairsFor(c.Traffic, c.VMs); err != nil {
		return fmt.Errorf("traffic: %w", err)
	}
	if _, err := core.ParsePolicy(c.Policy); err != nil {
		return fmt.Errorf("policy: %w", err)
	}
	return nil
}
