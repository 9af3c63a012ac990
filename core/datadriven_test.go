package core_test

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/datadriven"

	"github.com/vnsnap/vnsnap/core"
)

// TestInteraction runs the scripts in testdata/. Each script drives one
// Coordinator under a ManualClock; every directive prints the commands the
// coordinator returned, one per line, or its error. Rewrite the expected
// output with
//
//	go test ./core -run TestInteraction -rewrite
//
// and read the diff: an expected output must be what the protocol should do.
//
// Directives:
//
//	init algo=vnsnap sink=memory mode=driven vms=2 hosts=1 mem=64MiB budget=1GiB
//	     policy=xen deadline=10s epoch=1 place=(0,1)
//	  mem and budget take one value for all, or one per VM / host; place gives
//	  each VM's host (default VM i on host i mod hosts). policy is xen, qemu,
//	  qemu-autoconverge, stop-and-copy or default (nil: the coordinator's
//	  default); xen takes min-dirty, max-rounds and max-factor, qemu takes
//	  downtime-limit and max-rounds.
//	tick 100ms            advance the clock by a duration
//	at 1.5s               set the clock
//	event <Event> args    feed an event: Started, RoundCopied vm round sent
//	                      dirty elapsed, VMPaused vm, FinalCopied vm sent,
//	                      VMResumed vm, ImageFlushed vm, TimerFired id,
//	                      Failed vm err, SnapshotFailed err, Committed
//	report                print the coordinator's Report
func TestInteraction(t *testing.T) {
	datadriven.Walk(t, "testdata", func(t *testing.T, path string) {
		h := &harness{}
		datadriven.RunTest(t, path, func(t *testing.T, d *datadriven.TestData) string {
			return h.run(t, d)
		})
	})
}

type harness struct {
	clock core.ManualClock
	c     *core.Coordinator
}

func (h *harness) run(t *testing.T, d *datadriven.TestData) string {
	switch d.Cmd {
	case "init":
		return h.init(t, d)
	case "tick":
		h.clock.Set(h.clock.Now() + durArg(t, d))
		return fmt.Sprintf("t=%v", h.clock.Now())
	case "at":
		h.clock.Set(durArg(t, d))
		return fmt.Sprintf("t=%v", h.clock.Now())
	case "event":
		if h.c == nil {
			d.Fatalf(t, "event before init")
		}
		ev := parseEvent(t, d)
		cmds, err := h.c.Step(ev)
		if err != nil {
			if len(cmds) != 0 {
				d.Fatalf(t, "Step(%v) returned an error and commands %v", ev, cmds)
			}
			return "error: " + err.Error()
		}
		checkCommands(t, d, cmds)
		return formatCommands(cmds)
	case "report":
		if h.c == nil {
			d.Fatalf(t, "report before init")
		}
		return formatReport(h.c.Report())
	default:
		d.Fatalf(t, "unknown directive %q", d.Cmd)
		return ""
	}
}

// checkCommands asserts invariants every command list must keep.
func checkCommands(t *testing.T, d *datadriven.TestData, cmds []core.Command) {
	for i, c := range cmds {
		if _, ok := c.(core.Abort); ok && i != len(cmds)-1 {
			d.Fatalf(t, "Abort is command %d of %d, want it last", i+1, len(cmds))
		}
	}
}

func formatCommands(cmds []core.Command) string {
	if len(cmds) == 0 {
		return "(no commands)"
	}
	var b strings.Builder
	for _, c := range cmds {
		b.WriteString(c.String())
		b.WriteByte('\n')
	}
	return b.String()
}

func formatReport(r core.Report) string {
	var b strings.Builder
	fmt.Fprintf(&b, "state=%s algo=%s epoch=%d window=%v", r.State, r.Algorithm, r.Epoch, r.Window())
	if r.Reason != "" {
		fmt.Fprintf(&b, " reason=%q", r.Reason)
	}
	b.WriteByte('\n')
	at := func(name string, d time.Duration, ok bool) {
		if ok {
			fmt.Fprintf(&b, " %s=%v", name, d)
		} else {
			fmt.Fprintf(&b, " %s=-", name)
		}
	}
	for _, v := range r.VMs {
		fmt.Fprintf(&b, "vm%d: host=%d %s sink=%s", v.VM, v.Host, v.Method, v.Sink)
		if v.Fallback {
			b.WriteString(" fallback")
		}
		at("start", v.Start, true)
		at("paused", v.Paused, v.HasPoint)
		at("resumed", v.Resumed, v.Resumed != 0)
		at("copied", v.Copied, v.Copied != 0)
		at("flushed", v.Flushed, v.Flushed != 0)
		fmt.Fprintf(&b, " rounds=%d pages=%d", v.Rounds, v.PagesSent)
		if v.MaxThrottle > 0 {
			fmt.Fprintf(&b, " max-throttle=%d", v.MaxThrottle)
		}
		fmt.Fprintf(&b, " downtime=%v", v.Downtime())
		if v.Copied != 0 {
			fmt.Fprintf(&b, " duration=%v", v.Duration())
		}
		if v.Done {
			b.WriteString(" done")
		}
		b.WriteByte('\n')
	}
	return b.String()
}

func (h *harness) init(t *testing.T, d *datadriven.TestData) string {
	h.clock = core.ManualClock{}
	h.c = nil
	var cfg core.Config
	var err error
	algo, sink, mode, policy := "vnsnap", "disk", "driven", "xen"
	d.MaybeScanArgs(t, "algo", &algo)
	d.MaybeScanArgs(t, "sink", &sink)
	d.MaybeScanArgs(t, "mode", &mode)
	d.MaybeScanArgs(t, "policy", &policy)
	if cfg.Algorithm, err = core.ParseAlgorithm(algo); err != nil {
		d.Fatalf(t, "%v", err)
	}
	if cfg.Sink, err = core.ParseSink(sink); err != nil {
		d.Fatalf(t, "%v", err)
	}
	switch mode {
	case "driven":
		cfg.Mode = core.Driven
	case "observed":
		cfg.Mode = core.Observed
	default:
		d.Fatalf(t, "unknown mode %q", mode)
	}
	cfg.Policy = policyArg(t, d, policy)

	vms, hosts := 1, 1
	var epoch uint64 = 1
	d.MaybeScanArgs(t, "vms", &vms)
	d.MaybeScanArgs(t, "hosts", &hosts)
	d.MaybeScanArgs(t, "epoch", &epoch)
	cfg.Epoch = core.Epoch(epoch)
	if a, ok := d.Arg("deadline"); ok {
		cfg.Deadline = parseDur(t, d, a.SingleVal(t))
	}
	mem := perItem(t, d, "mem", vms, "64MiB")
	budget := perItem(t, d, "budget", hosts, "0")
	place := perItem(t, d, "place", vms, "")
	for i := 0; i < vms; i++ {
		host := i % hosts
		if place[i] != "" {
			host = atoi(t, d, place[i])
		}
		cfg.VMs = append(cfg.VMs, core.VMSpec{Host: core.HostID(host), MemBytes: parseSize(t, d, mem[i])})
	}
	for i := 0; i < hosts; i++ {
		cfg.Hosts = append(cfg.Hosts, core.HostSpec{RAMBudget: parseSize(t, d, budget[i])})
	}
	c, err := core.NewCoordinator(cfg, &h.clock)
	if err != nil {
		return "error: " + err.Error()
	}
	h.c = c
	return "ok"
}

func policyArg(t *testing.T, d *datadriven.TestData, name string) core.PolicyFactory {
	intArg := func(key string, dst *int) { d.MaybeScanArgs(t, key, dst) }
	switch name {
	case "default":
		return nil
	case "stop-and-copy":
		return func() core.StopPolicy { return core.StopAndCopyPolicy{} }
	case "xen":
		p := *core.DefaultXen()
		var minDirty, maxFactor int = int(p.MinDirty), int(p.MaxFactor)
		intArg("min-dirty", &minDirty)
		intArg("max-rounds", &p.MaxRounds)
		intArg("max-factor", &maxFactor)
		p.MinDirty, p.MaxFactor = int64(minDirty), int64(maxFactor)
		return func() core.StopPolicy { q := p; return &q }
	case "qemu", "qemu-autoconverge":
		p := *core.DefaultQEMU(name == "qemu-autoconverge")
		if a, ok := d.Arg("downtime-limit"); ok {
			p.DowntimeLimit = parseDur(t, d, a.SingleVal(t))
		}
		intArg("max-rounds", &p.MaxRounds)
		return func() core.StopPolicy { q := p; return &q }
	}
	d.Fatalf(t, "unknown policy %q", name)
	return nil
}

// perItem returns n values of key: one value applies to all, else exactly n.
func perItem(t *testing.T, d *datadriven.TestData, key string, n int, def string) []string {
	out := make([]string, n)
	a, ok := d.Arg(key)
	switch {
	case !ok:
		for i := range out {
			out[i] = def
		}
	case len(a.Vals) == 1:
		for i := range out {
			out[i] = a.Vals[0]
		}
	case len(a.Vals) == n:
		copy(out, a.Vals)
	default:
		d.Fatalf(t, "%s has %d values, want 1 or %d", key, len(a.Vals), n)
	}
	return out
}

func parseEvent(t *testing.T, d *datadriven.TestData) core.Event {
	if len(d.CmdArgs) == 0 {
		d.Fatalf(t, "event needs a type")
	}
	kind := d.CmdArgs[0].Key
	vm := func() core.VMID {
		var v int
		d.ScanArgs(t, "vm", &v)
		return core.VMID(v)
	}
	i64 := func(key string) int64 {
		var v int64
		d.ScanArgs(t, key, &v)
		return v
	}
	switch kind {
	case "Started":
		return core.Started{}
	case "RoundCopied":
		var round int
		d.ScanArgs(t, "round", &round)
		a, _ := d.Arg("elapsed")
		return core.RoundCopied{VM: vm(), Round: round, Sent: i64("sent"), Dirty: i64("dirty"),
			Elapsed: parseDur(t, d, a.SingleVal(t))}
	case "VMPaused":
		return core.VMPaused{VM: vm()}
	case "FinalCopied":
		return core.FinalCopied{VM: vm(), Sent: i64("sent")}
	case "VMResumed":
		return core.VMResumed{VM: vm()}
	case "ImageFlushed":
		return core.ImageFlushed{VM: vm()}
	case "TimerFired":
		return core.TimerFired{ID: core.TimerID(i64("id"))}
	case "Failed":
		var msg string
		d.ScanArgs(t, "err", &msg)
		return core.Failed{VM: vm(), Err: errors.New(msg)}
	case "SnapshotFailed":
		var msg string
		d.ScanArgs(t, "err", &msg)
		return core.SnapshotFailed{Err: errors.New(msg)}
	case "Committed":
		return core.Committed{}
	}
	d.Fatalf(t, "unknown event %q", kind)
	return nil
}

func durArg(t *testing.T, d *datadriven.TestData) time.Duration {
	if len(d.CmdArgs) != 1 {
		d.Fatalf(t, "%s takes one duration", d.Cmd)
	}
	return parseDur(t, d, d.CmdArgs[0].Key)
}

func parseDur(t *testing.T, d *datadriven.TestData, s string) time.Duration {
	v, err := time.ParseDuration(s)
	if err != nil {
		d.Fatalf(t, "%v", err)
	}
	return v
}

func parseSize(t *testing.T, d *datadriven.TestData, s string) int64 {
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		n      int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}} {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSuffix(s, u.suffix), u.n
			break
		}
	}
	return int64(atoi(t, d, s)) * mult
}

func atoi(t *testing.T, d *datadriven.TestData, s string) int {
	v, err := strconv.Atoi(s)
	if err != nil {
		d.Fatalf(t, "%v", err)
	}
	return v
}
