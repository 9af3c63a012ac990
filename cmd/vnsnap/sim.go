package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/vnsnap/vnsnap/core"
	"github.com/vnsnap/vnsnap/internal/units"
	sim "github.com/vnsnap/vnsnap/simbackend"
	"github.com/vnsnap/vnsnap/workloads/simload"
)

// simFlags binds the sim command's flags to a config. Values that need
// parsing are kept as strings and parsed in parse, so errors name the flag.
type simFlags struct {
	cfg                                             sim.Config
	algo, sink, mem, dirty, flowRate, hot, workload string
	diskBW, memBW, linkBW, budget, queue            string
	downBW, downQueue                               string
	mode, calibration                               string
	asJSON                                          bool
}

func newSimFlags(fs *flag.FlagSet) *simFlags {
	f := &simFlags{cfg: sim.DefaultConfig()}
	c := &f.cfg
	fs.IntVar(&c.VMs, "vms", c.VMs, "number of VMs")
	fs.IntVar(&c.Hosts, "hosts", c.Hosts, "number of hosts (VMs are placed round-robin)")
	fs.StringVar(&f.algo, "algo", "vnsnap", "algorithm: "+algoNames())
	fs.StringVar(&f.sink, "sink", "disk", "sink: disk or memory")
	fs.StringVar(&f.mode, "mode", c.Mode.String(), "who runs pre-copy's loop: observed (a modelled hypervisor, as on the real backends) or driven (the core, with --policy)")
	fs.StringVar(&c.Hypervisor, "hypervisor-model", c.Hypervisor, "observed mode's hypervisor model: qemu or xen")
	fs.BoolVar(&c.QEMU.AutoConverge, "auto-converge", c.QEMU.AutoConverge, "qemu model: QEMU's auto-converge (throttle a VM that dirties memory too fast)")
	fs.DurationVar(&c.QEMU.DowntimeLimit, "downtime-limit", c.QEMU.DowntimeLimit, "qemu model: QEMU's downtime-limit")
	fs.StringVar(&f.calibration, "calibration", "", "JSON file of measured costs (pause, resume, QMP round trip, colour flip, disk freeze, device state); default: built-in placeholders")
	fs.StringVar(&c.Policy, "policy", c.Policy, "driven mode's pre-copy stop policy: xen, qemu or qemu-autoconverge")
	fs.StringVar(&f.mem, "mem", "256MiB", "memory per VM")
	fs.StringVar(&f.dirty, "dirty", "20MiB/s", "page-write rate per VM")
	fs.Float64Var(&c.DirtySpread, "dirty-spread", c.DirtySpread, "per-VM variation of the dirty rate, 0..1")
	fs.StringVar(&f.hot, "hot", "", "hot working set per VM (default mem/8)")
	fs.StringVar(&c.Traffic, "traffic", c.Traffic, "traffic pattern: all-to-all, ring, pairs or none")
	fs.StringVar(&f.flowRate, "flow-rate", "1MiB/s", "application write rate per TCP flow")
	fs.BoolVar(&c.UDP, "udp", false, "also send UDP datagrams around a ring")
	fs.Float64Var(&c.Host.Link.Loss, "loss", 0, "probability of losing a frame on a link")
	fs.StringVar(&f.linkBW, "link-bw", "1Gbit/s", "host uplink bandwidth")
	fs.DurationVar(&c.Host.Link.Latency, "latency", c.Host.Link.Latency, "one-way latency between hosts")
	fs.StringVar(&f.queue, "queue", "512KiB", "uplink drop-tail queue")
	fs.StringVar(&f.downBW, "downlink-bw", "", "host downlink bandwidth, shared by every sender into the host (default --link-bw)")
	fs.StringVar(&f.downQueue, "downlink-queue", "", "downlink drop-tail queue (default --queue)")
	fs.BoolVar(&c.TCP.SACK, "sack", c.TCP.SACK, "TCP selective acknowledgements and SACK loss recovery (RFC 2018, 6675); false: NewReno")
	fs.DurationVar(&c.TCP.DelayedACK, "delack", c.TCP.DelayedACK, "TCP delayed-ACK timeout (Linux: 40ms); 0 acknowledges every segment at once")
	fs.StringVar(&f.diskBW, "disk-bw", "150MB/s", "disk bandwidth per host")
	fs.StringVar(&f.memBW, "mem-bw", "2GB/s", "memory-sink copy bandwidth per host")
	fs.StringVar(&f.budget, "budget", "8GiB", "RAM budget of each host's memory sink")
	fs.DurationVar(&c.Deadline, "deadline", c.Deadline, "abort the snapshot after this long (0: never)")
	fs.DurationVar(&c.Warmup, "warmup", c.Warmup, "virtual time before the snapshot starts")
	fs.DurationVar(&c.RunOn, "run-on", c.RunOn, "how long applications keep writing after the snapshot")
	fs.Uint64Var(&c.Seed, "seed", c.Seed, "master seed")
	fs.BoolVar(&c.Restore, "restore", false, "restore the VNE from the last snapshot, run on, and verify every TCP stream and the workload")
	fs.IntVar(&c.Snapshots, "snapshots", c.Snapshots, "number of snapshots (0: a baseline run without any)")
	fs.DurationVar(&c.Interval, "interval", c.Interval, "time between periodic snapshots' starts")
	fs.StringVar(&f.workload, "workload", "", "run a workload instead of --traffic: npb-KERNEL-CLASS-RANKS[-xREPEAT] (e.g. npb-cg-A-16) or bittorrent-PEERS-FILESIZE[-SEEDS] (e.g. bittorrent-16-256MiB); sets --vms and --mem")
	fs.BoolVar(&f.asJSON, "json", false, "print one JSON object")
	return f
}

func algoNames() string {
	var names []string
	for _, a := range core.Algorithms() {
		names = append(names, a.String())
	}
	return strings.Join(names, ", ")
}

// parse turns the string flags into the config, naming the flag on error.
func (f *simFlags) parse() error {
	c := &f.cfg
	var err error
	if c.Algorithm, err = core.ParseAlgorithm(f.algo); err != nil {
		return fmt.Errorf("--algo: %w", err)
	}
	if c.Sink, err = core.ParseSink(f.sink); err != nil {
		return fmt.Errorf("--sink: %w", err)
	}
	switch f.mode {
	case "observed":
		c.Mode = core.Observed
	case "driven":
		c.Mode = core.Driven
	default:
		return fmt.Errorf("--mode: %q, want observed or driven", f.mode)
	}
	if f.calibration != "" {
		if c.Calibration, err = sim.LoadCalibration(f.calibration); err != nil {
			return fmt.Errorf("--calibration: %w", err)
		}
	}
	if c.MemBytes, err = units.ParseBytes(f.mem); err != nil {
		return fmt.Errorf("--mem: %w", err)
	}
	if f.hot != "" {
		if c.HotBytes, err = units.ParseBytes(f.hot); err != nil {
			return fmt.Errorf("--hot: %w", err)
		}
	}
	rates := []struct {
		name string
		s    string
		dst  *float64
	}{
		{"--dirty", f.dirty, &c.DirtyRate}, {"--flow-rate", f.flowRate, &c.FlowRate},
		{"--link-bw", f.linkBW, &c.Host.Link.Bandwidth}, {"--disk-bw", f.diskBW, &c.Host.DiskBandwidth},
		{"--mem-bw", f.memBW, &c.Host.MemoryBandwidth},
	}
	for _, r := range rates {
		if *r.dst, err = units.ParseRate(r.s); err != nil {
			return fmt.Errorf("%s: %w", r.name, err)
		}
	}
	q, err := units.ParseBytes(f.queue)
	if err != nil {
		return fmt.Errorf("--queue: %w", err)
	}
	c.Host.Link.Queue = int(q)
	if f.downBW != "" {
		if c.Host.Downlink.Bandwidth, err = units.ParseRate(f.downBW); err != nil {
			return fmt.Errorf("--downlink-bw: %w", err)
		}
		if c.Host.Downlink.Bandwidth <= 0 {
			return fmt.Errorf("--downlink-bw: %s, want a positive rate", f.downBW)
		}
	}
	if f.downQueue != "" {
		if q, err = units.ParseBytes(f.downQueue); err != nil {
			return fmt.Errorf("--downlink-queue: %w", err)
		}
		if q <= 0 {
			return fmt.Errorf("--downlink-queue: %s, want a positive size", f.downQueue)
		}
		c.Host.Downlink.Queue = int(q)
	}
	if c.Host.RAMBudget, err = units.ParseBytes(f.budget); err != nil {
		return fmt.Errorf("--budget: %w", err)
	}
	if f.workload != "" {
		if c.Workload, err = simload.Parse(f.workload); err != nil {
			return fmt.Errorf("--workload: %w", err)
		}
		if err := c.Workload.Configure(c); err != nil {
			return fmt.Errorf("--workload: %w", err)
		}
	}
	if err := c.Validate(); err != nil {
		return fmt.Errorf("--%w", err)
	}
	return nil
}

func runSim(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("vnsnap sim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	f := newSimFlags(fs)
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return err
		}
		return errUsage
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if err := f.parse(); err != nil {
		return err
	}
	res, err := sim.Run(f.cfg)
	if err != nil {
		return err
	}
	if f.asJSON {
		if err := json.NewEncoder(stdout).Encode(res); err != nil {
			return err
		}
	} else {
		printSummary(stdout, f.cfg, res)
	}
	if err := simFailure(res); err != nil {
		return exitError{code: 1, err: err}
	}
	return nil
}

// simFailure reports what went wrong in a run that completed: a snapshot
// that aborted, a restore that failed, a workload that did not verify. The
// output has the details; the error makes the exit status say it.
func simFailure(r *sim.Result) error {
	var bad []string
	for i, sn := range r.Snaps {
		if sn.State == "committed" {
			continue
		}
		msg := fmt.Sprintf("snapshot %d %s", sn.Epoch, sn.State)
		if i == len(r.Snaps)-1 && r.AbortReason != "" {
			msg += " (" + r.AbortReason + ")" // the report keeps only the last reason
		}
		bad = append(bad, msg)
	}
	if r.RestoreOK != nil && !*r.RestoreOK {
		bad = append(bad, "restore failed: "+r.RestoreError)
	}
	if r.Workload != "" && !r.AppOK {
		bad = append(bad, "workload "+r.Workload+" failed: "+r.AppError)
	}
	if len(bad) == 0 {
		return nil
	}
	return errors.New(strings.Join(bad, "; "))
}

func printSummary(w io.Writer, cfg sim.Config, r *sim.Result) {
	fmt.Fprintf(w, "vnsnap sim: %s, %s sink, %d VMs on %d hosts, %s each, seed %d\n",
		r.Algo, r.Sink, r.VMCount, r.Hosts, units.FormatBytes(float64(cfg.MemBytes)), r.Seed)
	fmt.Fprintf(w, "snapshot %s", r.State)
	if r.AbortReason != "" {
		fmt.Fprintf(w, " (%s)", r.AbortReason)
	}
	fmt.Fprintf(w, " in %.0f ms; window %.1f ms\n\n", r.TotalMS, r.WindowMS)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "vm\thost\tsink\tdowntime ms\tduration ms\tflush ms\tcopied\trounds\t")
	for _, v := range r.VMs {
		sink := v.Sink
		if v.Fallback {
			sink += "*"
		}
		fmt.Fprintf(tw, "%d\t%d\t%s\t%.1f\t%.0f\t%.0f\t%s\t%d\t\n", v.VM, v.Host, sink, v.DowntimeMS, v.DurationMS,
			v.FlushMS, units.FormatBytes(float64(v.BytesCopied)), v.Rounds)
	}
	tw.Flush()
	fmt.Fprintf(w, "\nconsistency: %d orphans, %d in transit (%d recovered by TCP, %d replayed, %d lost)\n",
		r.Orphans, r.InTransit, r.Recovered, r.Replayed, r.Lost)
	fmt.Fprintf(w, "network: %d frames, %d dropped and %d held by the colour rule, %d dropped by full queues, %d by loss\n",
		r.Frames, r.Dropped, r.Held, r.DroppedQueue, r.DroppedLoss)
	fmt.Fprintf(w, "tcp: max application stall %.0f ms, %d timeouts, max backoff %d\n", r.MaxStallMS, r.Timeouts, r.MaxBackoff)
	if r.RestoreOK != nil {
		if *r.RestoreOK {
			fmt.Fprintf(w, "restore: ok, every stream intact; recovered in %.1f ms, %d bytes needed retransmission\n", *r.RecoverMS, *r.RestoreRetx)
		} else {
			fmt.Fprintf(w, "restore: FAILED: %s\n", r.RestoreError)
		}
	}
	if r.Workload != "" {
		status := "ok"
		if !r.AppOK {
			status = "FAILED: " + r.AppError
		}
		fmt.Fprintf(w, "workload %s: finished at %.0f ms, %s\n", r.Workload, r.AppDoneMS, status)
		if r.RestoreAppDoneMS != nil {
			fmt.Fprintf(w, "restored workload finished %.0f ms after the restore\n", *r.RestoreAppDoneMS)
		}
	}
	if len(r.Snaps) > 1 {
		fmt.Fprintf(w, "%d snapshots:", len(r.Snaps))
		for _, sn := range r.Snaps {
			fmt.Fprintf(w, " [e%d %s, max downtime %.1f ms, window %.1f ms]", sn.Epoch, sn.State, sn.MaxDownMS, sn.WindowMS)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "simulated %d events; trace hash %s\n", r.Events, r.TraceHash)
}
