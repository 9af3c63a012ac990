package core_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/vnsnap/vnsnap/core"
)

func TestParseAlgorithmRoundTrip(t *testing.T) {
	want := []string{"vnsnap", "vnsnap-log", "sync-freeze", "stop-copy", "cow", "uncoordinated"}
	var got []string
	for _, a := range core.Algorithms() {
		got = append(got, a.String())
		t.Run(a.String(), func(t *testing.T) {
			b, err := core.ParseAlgorithm(a.String())
			if err != nil || b != a {
				t.Errorf("ParseAlgorithm(%q) = %v, %v; want %v, nil", a.String(), b, err, a)
			}
		})
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Algorithms() names (-want +got):\n%s", diff)
	}
	if core.Algorithm(0) != core.VNsnap {
		t.Errorf("zero Algorithm is %v, want vnsnap", core.Algorithm(0))
	}
	if got := core.Algorithm(200).String(); got != "Algorithm(200)" {
		t.Errorf("Algorithm(200).String() = %q", got)
	}
}

func TestParseAlgorithmError(t *testing.T) {
	for _, s := range []string{"", "VNsnap", "vnsnap ", "chandy-lamport"} {
		t.Run(s, func(t *testing.T) {
			_, err := core.ParseAlgorithm(s)
			if err == nil {
				t.Fatalf("ParseAlgorithm(%q) = nil error, want one", s)
			}
			// The error lists the valid names, sorted.
			want := "(want one of cow, stop-copy, sync-freeze, uncoordinated, vnsnap, vnsnap-log)"
			if !strings.Contains(err.Error(), want) {
				t.Errorf("got %q, want it to contain %q", err, want)
			}
		})
	}
}

func TestAlgorithmMethod(t *testing.T) {
	tests := []struct {
		algo       core.Algorithm
		method     core.Method
		consistent bool
	}{
		{core.VNsnap, core.PreCopy, true},
		{core.VNsnapLog, core.PreCopy, true},
		{core.SyncFreeze, core.StopAndCopy, true},
		{core.StopCopy, core.StopAndCopy, true},
		{core.COW, core.CopyOnWrite, true},
		{core.Uncoordinated, core.PreCopy, false},
	}
	for _, tt := range tests {
		t.Run(tt.algo.String(), func(t *testing.T) {
			if got := tt.algo.Method(); got != tt.method {
				t.Errorf("Method() = %s, want %s", got, tt.method)
			}
			if got := tt.algo.Consistent(); got != tt.consistent {
				t.Errorf("Consistent() = %t, want %t", got, tt.consistent)
			}
		})
	}
}

func TestParseSink(t *testing.T) {
	for _, s := range []core.Sink{core.DiskSink, core.MemorySink} {
		got, err := core.ParseSink(s.String())
		if err != nil || got != s {
			t.Errorf("ParseSink(%q) = %v, %v; want %v, nil", s.String(), got, err, s)
		}
	}
	for _, s := range []string{"", "ram", "Disk"} {
		if _, err := core.ParseSink(s); err == nil {
			t.Errorf("ParseSink(%q): got nil error, want one", s)
		}
	}
	if got := core.Sink(7).String(); got != "Sink(7)" {
		t.Errorf("Sink(7).String() = %q", got)
	}
}

func TestParsePolicy(t *testing.T) {
	tests := []struct {
		name string
		want core.StopPolicy
	}{
		{"xen", &core.XenPolicy{MinDirty: 50, MaxRounds: 5, MaxFactor: 3}},
		{"qemu", core.DefaultQEMU(false)},
		{"qemu-autoconverge", core.DefaultQEMU(true)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := core.ParsePolicy(tt.name)
			if err != nil {
				t.Fatalf("ParsePolicy(%q): %v", tt.name, err)
			}
			p1, p2 := f(), f()
			if diff := cmp.Diff(tt.want, p1, cmp.AllowUnexported(core.QEMUPolicy{})); diff != "" {
				t.Errorf("policy (-want +got):\n%s", diff)
			}
			// A policy may keep per-VM state: each call must make a new one.
			if p1 == p2 {
				t.Errorf("the factory returned the same policy twice, want a fresh one per VM")
			}
			if p1.String() != tt.want.String() {
				t.Errorf("String() = %q, want %q", p1.String(), tt.want.String())
			}
		})
	}
	for _, s := range []string{"", "Xen", "qemu-auto", "stop-and-copy"} {
		if _, err := core.ParsePolicy(s); err == nil {
			t.Errorf("ParsePolicy(%q): got nil error, want one", s)
		}
	}
}

func validConfig() core.Config {
	return core.Config{
		Algorithm: core.VNsnap, Sink: core.MemorySink, Mode: core.Driven, Epoch: 1,
		VMs:      []core.VMSpec{{Host: 0, MemBytes: 1 << 20}, {Host: 1, MemBytes: 1 << 20}},
		Hosts:    []core.HostSpec{{RAMBudget: 1 << 30}, {RAMBudget: 0}},
		Deadline: time.Second,
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*core.Config)
		field  string // the field the error must name; "" for no error
	}{
		{"valid", func(*core.Config) {}, ""},
		{"zero deadline", func(c *core.Config) { c.Deadline = 0 }, ""},
		{"algorithm", func(c *core.Config) { c.Algorithm = 6 }, "Algorithm"},
		{"sink", func(c *core.Config) { c.Sink = 2 }, "Sink"},
		{"mode", func(c *core.Config) { c.Mode = 2 }, "Mode"},
		{"epoch", func(c *core.Config) { c.Epoch = 0 }, "Epoch"},
		{"no vms", func(c *core.Config) { c.VMs = nil }, "VMs"},
		{"no hosts", func(c *core.Config) { c.Hosts = nil }, "Hosts"},
		{"deadline", func(c *core.Config) { c.Deadline = -time.Second }, "Deadline"},
		{"host too big", func(c *core.Config) { c.VMs[1].Host = 2 }, "VMs[1].Host"},
		{"host negative", func(c *core.Config) { c.VMs[0].Host = -1 }, "VMs[0].Host"},
		{"mem zero", func(c *core.Config) { c.VMs[0].MemBytes = 0 }, "VMs[0].MemBytes"},
		{"mem negative", func(c *core.Config) { c.VMs[1].MemBytes = -4096 }, "VMs[1].MemBytes"},
		{"mem not pages", func(c *core.Config) { c.VMs[1].MemBytes = 4097 }, "VMs[1].MemBytes"},
		{"budget", func(c *core.Config) { c.Hosts[1].RAMBudget = -1 }, "Hosts[1].RAMBudget"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := validConfig()
			tt.mutate(&cfg)
			err := cfg.Validate()
			switch {
			case tt.field == "" && err != nil:
				t.Errorf("got %v, want nil", err)
			case tt.field != "" && err == nil:
				t.Errorf("got nil, want an error naming %s", tt.field)
			case tt.field != "" && !strings.Contains(err.Error(), "config: "+tt.field+" "):
				t.Errorf("got %q, want it to name %s", err, tt.field)
			}
			var clock core.ManualClock
			c, nerr := core.NewCoordinator(cfg, &clock)
			if (nerr == nil) != (err == nil) || (err != nil && nerr.Error() != err.Error()) {
				t.Errorf("NewCoordinator: got %v, want %v", nerr, err)
			}
			if nerr == nil && c.State() != core.StateIdle {
				t.Errorf("NewCoordinator: state %s, want idle", c.State())
			}
		})
	}
}

func TestProtocolErrorIsTyped(t *testing.T) {
	var clock core.ManualClock
	c, err := core.NewCoordinator(validConfig(), &clock)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Step(core.VMPaused{VM: 1})
	var pe *core.ProtocolError
	if !errors.As(err, &pe) {
		t.Fatalf("got %v (%T), want a *ProtocolError", err, err)
	}
	if pe.VM != 1 || pe.Phase != "idle" || pe.Event != (core.VMPaused{VM: 1}) {
		t.Errorf("got %+v, want vm 1, phase idle, event VMPaused vm=1", *pe)
	}
}

func TestManualClock(t *testing.T) {
	var c core.ManualClock
	c.Set(time.Second)
	c.Set(time.Second)
	if got := c.Now(); got != time.Second {
		t.Errorf("Now() = %v, want 1s", got)
	}
	defer func() {
		if recover() == nil {
			t.Errorf("Set backwards did not panic")
		}
	}()
	c.Set(time.Millisecond)
}

func TestVMReport(t *testing.T) {
	r := core.VMReport{Start: 1 * time.Second, Paused: 3 * time.Second, Resumed: 3500 * time.Millisecond,
		Copied: 3400 * time.Millisecond, PagesSent: 10, HasPoint: true}
	if got := r.Downtime(); got != 500*time.Millisecond {
		t.Errorf("Downtime() = %v, want 500ms", got)
	}
	if got := r.Duration(); got != 2400*time.Millisecond {
		t.Errorf("Duration() = %v, want 2.4s", got)
	}
	if got := r.BytesCopied(); got != 10*core.PageSize {
		t.Errorf("BytesCopied() = %d, want %d", got, 10*core.PageSize)
	}
	r.HasPoint = false
	if got := r.Downtime(); got != 0 {
		t.Errorf("Downtime() without a point = %v, want 0", got)
	}
	r.HasPoint, r.Resumed = true, 0 // paused, not resumed yet
	if got := r.Downtime(); got != 0 {
		t.Errorf("Downtime() before resume = %v, want 0", got)
	}
	if got := (core.Report{}).Window(); got != 0 {
		t.Errorf("empty Window() = %v, want 0", got)
	}
}

// TestVMCommandTargets checks that every per-VM command names its VM and
// the VNE-wide ones do not claim one.
func TestVMCommandTargets(t *testing.T) {
	per := []core.Command{core.CopyRound{VM: 3}, core.StartLiveCopy{VM: 3}, core.PauseVM{VM: 3}, core.SetColour{VM: 3}, core.FreezeDisk{VM: 3},
		core.CopyFinal{VM: 3}, core.ProtectMemory{VM: 3}, core.ResumeVM{VM: 3}, core.ThrottleVM{VM: 3}, core.FlushImage{VM: 3}, core.CancelCopy{VM: 3}}
	for _, c := range per {
		vc, ok := c.(core.VMCommand)
		if !ok || vc.Target() != 3 {
			t.Errorf("%v: core.VMCommand %t, want a core.VMCommand targeting vm 3", c, ok)
		}
	}
	for _, c := range []core.Command{core.SetTimer{}, core.CancelTimer{}, core.Commit{}, core.Abort{}} {
		if _, ok := c.(core.VMCommand); ok {
			t.Errorf("%v is a core.VMCommand, want a VNE-wide command", c)
		}
	}
}
