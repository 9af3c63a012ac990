package sim

import (
	"errors"
	"fmt"
	"math"
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
	// Downlink is the switch port toward the host, shared by every frame
	// from another host to one of its VMs (incast). A zero Bandwidth or
	// Queue means the uplink's; its Latency and Loss add to the uplink's.
	Downlink Link
	Local    Link // the host's software bridge between its own VMs
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
	// PopulatedBytes is the guest's non-zero memory per VM before its
	// working set is written (a booted guest's kernel, initramfs and page
	// cache); the rest are zero pages, which a copy of the whole VM does
	// not send (QEMU and Xen send a flag for each). A working set given by
	// HotBytes is populated too, at random over populated and zero pages.
	// 0 means every page is populated.
	PopulatedBytes int64
	Algorithm      core.Algorithm
	Sink           core.Sink
	// Mode says who runs pre-copy's loop. core.Observed (the default, as
	// on the real backends): a modelled hypervisor (Hypervisor) iterates
	// on its own and reports its passes. core.Driven: the core orders
	// every round and applies its stop policy (Policy).
	Mode core.Mode
	// Hypervisor is Observed mode's hypervisor model: "qemu" (tuned by
	// QEMU) or "xen" (tuned by Xen).
	Hypervisor string
	QEMU       QEMUModel
	Xen        XenModel
	Policy     string // Driven mode's stop policy: "xen", "qemu" or "qemu-autoconverge"
	// Calibration holds the fixed costs around the pause and the state
	// copied while paused.
	Calibration Calibration
	Deadline    Time   // abort the snapshot after this; 0 means none
	Traffic     string // "all-to-all", "ring", "pairs" or "none"
	FlowRate    float64
	UDP         bool // also send UDP datagrams around a ring
	// UDPInterval is the time between one VM's datagrams; 0 means 50 ms.
	UDPInterval Time
	Host        HostConfig
	Warmup      Time // the snapshot starts at this time
	RunOn       Time // applications keep writing this long after the snapshot ends
	Restore     bool // restore the VNE from the last committed snapshot and run it on
	// Snapshots is the number of snapshots taken (0: none, a baseline run),
	// starting at Warmup and then every Interval (or as soon as the previous
	// one has finished).
	Snapshots int
	Interval  Time
	// TCP configures every TCP endpoint.
	TCP TCPConfig
	// Workload, if set, runs instead of the simple traffic generator.
	Workload Workload
	// TimeLimit bounds the virtual time of a run with a Workload.
	TimeLimit Time
	// OnTCP, if set, receives TCP sender events (for timelines).
	OnTCP func(TCPEvent)
	// Trace, if set, also receives every trace record of the snapshot run.
	Trace func(r cut.Record)
	// admit, if set, sees the colour rule's action on every frame arriving
	// at a switch of the snapshot run, with the receiver's port epoch, and
	// returns the action to take (tests record the rule's decisions with
	// it, and mutate them to show that the properties catch a wrong rule).
	// It may turn Deliver and Drop into each other, nothing else.
	admit func(f *Frame, dst core.Epoch, act core.Action) core.Action
	// observe, if set, sees every event fed to a snapshot's coordinator and
	// the commands it returned (tests).
	observe func(ev core.Event, cmds []core.Command)
	// brokenCopy, for tests only, makes every copy step skip one page:
	// the image check must catch it.
	brokenCopy bool
}

// TCPConfig selects the TCP options of every connection. The defaults
// (DefaultConfig) are Linux's: SACK on, delayed ACKs with a 40 ms timer.
type TCPConfig struct {
	// SACK turns on selective acknowledgements (RFC 2018) and SACK-based
	// loss recovery (RFC 6675); off, loss recovery is NewReno (RFC 6582).
	SACK bool
	// DelayedACK is the delayed-ACK timeout: a receiver acknowledges every
	// second full segment at once and a lone one after this long (after a
	// quick-ACK phase, as Linux does). Zero acknowledges every segment at
	// once.
	DelayedACK Time
}

// MaxDelayedACK bounds TCPConfig.DelayedACK: RFC 1122 requires a delayed
// ACK to leave within 0.5 s.
const MaxDelayedACK = 500 * time.Millisecond

// downlink returns the host's downlink with its defaults filled in.
func (h *HostConfig) downlink() Link {
	d := h.Downlink
	if d.Bandwidth == 0 {
		d.Bandwidth = h.Link.Bandwidth
	}
	if d.Queue == 0 {
		d.Queue = h.Link.Queue
	}
	return d
}

// DefaultConfig returns a small VNE with sensible hardware: 1 GbE links with
// 100 µs latency both ways (each host's downlink like its uplink), a 150 MB/s
// disk, a 2 GB/s memory-sink copy rate and an 8 GiB RAM budget per host; and
// Linux's TCP options (SACK, delayed ACKs).
func DefaultConfig() Config {
	return Config{
		Seed: 1, VMs: 4, Hosts: 2, MemBytes: 256 << 20, DirtyRate: 20 << 20, HotFrac: 0.9, DirtySpread: 0.5,
		Algorithm: core.VNsnap, Sink: core.DiskSink, Policy: "xen",
		Mode: core.Observed, Hypervisor: HypervisorQEMU, QEMU: DefaultQEMUModel(), Xen: DefaultXenModel(),
		Calibration: DefaultCalibration(),
		Deadline:    10 * time.Minute, Traffic: "all-to-all", FlowRate: 1 << 20,
		Host: HostConfig{
			DiskBandwidth: 150e6, MemoryBandwidth: 2e9, RAMBudget: 8 << 30,
			Link:  Link{Bandwidth: 125e6, Latency: 100 * time.Microsecond, Queue: 512 << 10},
			Local: Link{Bandwidth: 1.25e9, Latency: 10 * time.Microsecond, Queue: 1 << 20},
		},
		TCP:    TCPConfig{SACK: true, DelayedACK: 40 * time.Millisecond},
		Warmup: 2 * time.Second, RunOn: 2 * time.Second, Snapshots: 1, TimeLimit: time.Hour,
	}
}

// Limits of a Config. They keep every product and sum of the simulator's
// virtual time and byte counts far from overflow (Time is int64 nanoseconds,
// about 292 years) and every structure it builds bounded: a config within
// them runs without a panic, though a large one may take long.
const (
	MaxVMs      = 1 << 20 // VMs, and hosts
	MaxFlows    = 1 << 22 // TCP flows of the traffic pattern
	MaxMemBytes = 1 << 50 // memory per VM (1 PiB); also hot set, device state, RAM budget, queues
	MaxRate     = 1e15    // bytes per second of any rate or bandwidth
	MinBW       = 1.0     // bytes per second: the slowest bandwidth
	MaxDuration = 1 << 55 // nanoseconds (about 1.1 years): any duration, and the whole run
	MaxSnaps    = 1 << 20 // snapshots per run
)

// checkRate checks a rate or bandwidth: finite, within [lo, MaxRate].
func checkRate(name string, v, lo float64) error {
	switch {
	case math.IsNaN(v) || math.IsInf(v, 0):
		return fmt.Errorf("%s: %g bytes/s, want a finite rate", name, v)
	case v < lo:
		if lo > 0 {
			return fmt.Errorf("%s: %g bytes/s, want at least %g", name, v, lo)
		}
		return fmt.Errorf("%s: %g bytes/s is negative", name, v)
	case v > MaxRate:
		return fmt.Errorf("%s: %g bytes/s, want at most %g", name, v, float64(MaxRate))
	}
	return nil
}

// checkFrac checks a fraction within [0, hi] (hi included if closed).
func checkFrac(name string, v, hi float64, closed bool) error {
	ok := v >= 0 && (v < hi || closed && v == hi) // false for NaN
	if !ok {
		rel := "<"
		if closed {
			rel = "<="
		}
		return fmt.Errorf("%s: %g, want 0 <= %s %s %g", name, v, name, rel, hi)
	}
	return nil
}

// checkDuration checks a duration: not negative, at most MaxDuration.
func checkDuration(name string, d Time) error {
	switch {
	case d < 0:
		return fmt.Errorf("%s: %v is negative", name, d)
	case d > MaxDuration:
		return fmt.Errorf("%s: %v, want at most %v", name, d, Time(MaxDuration))
	}
	return nil
}

// checkBytes checks a byte count within [0, MaxMemBytes].
func checkBytes(name string, n int64) error {
	switch {
	case n < 0:
		return fmt.Errorf("%s: %d bytes is negative", name, n)
	case n > MaxMemBytes:
		return fmt.Errorf("%s: %d bytes, want at most %d (1PiB)", name, n, int64(MaxMemBytes))
	}
	return nil
}

// checkLink checks a link's fields. names are those of its bandwidth,
// latency, queue and loss.
func checkLink(l Link, names [4]string) error {
	if err := checkRate(names[0], l.Bandwidth, MinBW); err != nil {
		return err
	}
	if err := checkDuration(names[1], l.Latency); err != nil {
		return err
	}
	if err := checkBytes(names[2], int64(l.Queue)); err != nil {
		return err
	}
	return checkFrac(names[3], l.Loss, 1, false)
}

// Validate reports the first problem, naming the field by its `vnsnap sim`
// flag where it has one (vms, mem, disk-bw, ...). Every number is checked for
// NaN, infinity, sign and the limits above. It takes time linear in the
// VNE's size at most (in fact constant): it never builds the traffic
// pattern.
func (c *Config) Validate() error {
	switch {
	case c.VMs < 1 || c.VMs > MaxVMs:
		return fmt.Errorf("vms: %d, want 1..%d", c.VMs, MaxVMs)
	case c.Hosts < 1 || c.Hosts > MaxVMs:
		return fmt.Errorf("hosts: %d, want 1..%d", c.Hosts, MaxVMs)
	case c.MemBytes < core.PageSize || c.MemBytes%core.PageSize != 0 || c.MemBytes > MaxMemBytes:
		return fmt.Errorf("mem: %d bytes, want a positive multiple of %d up to %d (1PiB)", c.MemBytes, core.PageSize, int64(MaxMemBytes))
	case c.HotBytes < 0 || c.HotBytes > c.MemBytes:
		return fmt.Errorf("hot: %d bytes, want 0..mem", c.HotBytes)
	case c.PopulatedBytes < 0 || c.PopulatedBytes > c.MemBytes:
		return fmt.Errorf("populated: %d bytes, want 0..mem", c.PopulatedBytes)
	case c.Snapshots < 0 || c.Snapshots > MaxSnaps:
		return fmt.Errorf("snapshots: %d, want 0..%d", c.Snapshots, MaxSnaps)
	case c.Restore && c.Snapshots == 0:
		return errors.New("restore: needs a snapshot to restore, but snapshots is 0")
	}
	h := &c.Host
	checks := []error{
		checkRate("dirty", c.DirtyRate, 0),
		checkFrac("dirty-spread", c.DirtySpread, 1, true),
		checkFrac("hot-frac", c.HotFrac, 1, true),
		checkRate("flow-rate", c.FlowRate, 0),
		checkRate("disk-bw", h.DiskBandwidth, MinBW),
		checkRate("mem-bw", h.MemoryBandwidth, MinBW),
		checkBytes("budget", h.RAMBudget),
		checkLink(h.Link, [4]string{"link-bw", "latency", "queue", "loss"}),
		checkLink(h.downlink(), [4]string{"downlink-bw", "downlink-latency", "downlink-queue", "downlink-loss"}),
		checkLink(h.Local, [4]string{"local-bw", "local-latency", "local-queue", "local-loss"}),
		checkDuration("deadline", c.Deadline),
		checkDuration("warmup", c.Warmup),
		checkDuration("run-on", c.RunOn),
		checkDuration("interval", c.Interval),
		checkDuration("time-limit", c.TimeLimit),
		checkDuration("udp-interval", c.UDPInterval),
		checkDuration("delack", c.TCP.DelayedACK),
	}
	for _, err := range checks {
		if err != nil {
			return err
		}
	}
	if c.TCP.DelayedACK > MaxDelayedACK {
		return fmt.Errorf("delack: %v, want at most %v (RFC 1122)", c.TCP.DelayedACK, MaxDelayedACK)
	}
	if c.Snapshots > 1 && c.Interval <= 0 {
		return fmt.Errorf("interval: %v, want a positive interval for %d snapshots", c.Interval, c.Snapshots)
	}
	// The last snapshot starts at Warmup + (Snapshots-1)*Interval; the run
	// then goes on for RunOn: all of it within MaxDuration. The products
	// are bounded (MaxSnaps * MaxDuration < 2^75) only in float64.
	if c.Snapshots > 1 && float64(c.Warmup)+float64(c.Snapshots-1)*float64(c.Interval)+float64(c.RunOn) > MaxDuration {
		return fmt.Errorf("interval: %d snapshots every %v after a warm-up of %v run beyond %v of virtual time",
			c.Snapshots, c.Interval, c.Warmup, Time(MaxDuration))
	}
	if n, err := flowCount(c.Traffic, c.VMs); err != nil {
		return fmt.Errorf("traffic: %w", err)
	} else if n > MaxFlows {
		return fmt.Errorf("traffic: %s among %d VMs is %d TCP flows, want at most %d", c.Traffic, c.VMs, n, MaxFlows)
	}
	if _, err := core.ParsePolicy(c.Policy); err != nil {
		return fmt.Errorf("policy: %w", err)
	}
	switch c.Mode {
	case core.Driven:
	case core.Observed:
		switch c.Hypervisor {
		case HypervisorQEMU:
			if err := c.QEMU.validate(); err != nil {
				return err
			}
		case HypervisorXen:
			if err := c.Xen.validate(); err != nil {
				return err
			}
		default:
			return fmt.Errorf("hypervisor-model: %q, want qemu or xen", c.Hypervisor)
		}
	default:
		return fmt.Errorf("mode: %d, want observed or driven", c.Mode)
	}
	if err := c.Calibration.Validate(); err != nil {
		return fmt.Errorf("calibration: %w", err)
	}
	return nil
}
