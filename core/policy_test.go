package core_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/vnsnap/vnsnap/core"
)

const mem = 16384 // pages of a 64 MiB VM

func TestXenPolicy(t *testing.T) {
	p := core.DefaultXen()
	tests := []struct {
		name string
		s    core.RoundStats
		stop bool
	}{
		{"before the first round", core.RoundStats{Round: 0, Dirty: 0, MemPages: mem}, false},
		{"50 dirty", core.RoundStats{Round: 1, Dirty: 50, TotalSent: mem, MemPages: mem}, false},
		{"49 dirty", core.RoundStats{Round: 1, Dirty: 49, TotalSent: mem, MemPages: mem}, true},
		{"none dirty", core.RoundStats{Round: 2, Dirty: 0, TotalSent: mem, MemPages: mem}, true},
		{"round 4", core.RoundStats{Round: 4, Dirty: 9000, TotalSent: 2 * mem, MemPages: mem}, false},
		{"round 5", core.RoundStats{Round: 5, Dirty: 9000, TotalSent: 2 * mem, MemPages: mem}, true},
		{"round 6", core.RoundStats{Round: 6, Dirty: 9000, TotalSent: 2 * mem, MemPages: mem}, true},
		{"under 3x", core.RoundStats{Round: 3, Dirty: 9000, TotalSent: 3*mem - 1, MemPages: mem}, false},
		{"3x sent", core.RoundStats{Round: 3, Dirty: 9000, TotalSent: 3 * mem, MemPages: mem}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := p.Decide(tt.s)
			if d.Stop != tt.stop {
				t.Errorf("Decide(%+v).Stop = %t, want %t", tt.s, d.Stop, tt.stop)
			}
			if d.Throttle != -1 {
				t.Errorf("Decide(%+v).Throttle = %d, want -1 (Xen never throttles)", tt.s, d.Throttle)
			}
		})
	}
	old := &core.XenPolicy{MinDirty: 50, MaxRounds: 29, MaxFactor: 3}
	if old.Decide(core.RoundStats{Round: 5, Dirty: 9000, TotalSent: mem, MemPages: mem}).Stop {
		t.Errorf("old Xen (29 rounds) stopped at round 5")
	}
	if got, want := p.String(), "xen(min-dirty=50,max-rounds=5,max-factor=3)"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}

func TestQEMUPolicyStop(t *testing.T) {
	tests := []struct {
		name string
		p    *core.QEMUPolicy
		s    core.RoundStats
		stop bool
	}{
		{"before the first round", core.DefaultQEMU(false), core.RoundStats{Round: 0, Dirty: 0, MemPages: mem}, false},
		// 10000 pages/s: 3000 pages take 300ms.
		{"fits exactly", core.DefaultQEMU(false), core.RoundStats{Round: 1, Sent: 10000, Dirty: 3000, Elapsed: time.Second}, true},
		{"one page too many", core.DefaultQEMU(false), core.RoundStats{Round: 1, Sent: 10000, Dirty: 3001, Elapsed: time.Second}, false},
		{"longer limit", &core.QEMUPolicy{DowntimeLimit: time.Second}, core.RoundStats{Round: 1, Sent: 10000, Dirty: 9000, Elapsed: time.Second}, true},
		{"no bandwidth, nothing dirty", core.DefaultQEMU(false), core.RoundStats{Round: 2, Sent: 0, Dirty: 0}, true},
		{"no bandwidth, dirty", core.DefaultQEMU(false), core.RoundStats{Round: 2, Sent: 0, Dirty: 1, Elapsed: time.Second}, false},
		{"zero elapsed, dirty", core.DefaultQEMU(false), core.RoundStats{Round: 2, Sent: 10, Dirty: 1}, false},
		{"never gives up", core.DefaultQEMU(false), core.RoundStats{Round: 1000, Sent: 10, Dirty: 1000, Elapsed: time.Second}, false},
		{"max rounds", &core.QEMUPolicy{DowntimeLimit: time.Millisecond, MaxRounds: 3}, core.RoundStats{Round: 3, Sent: 10, Dirty: 1000, Elapsed: time.Second}, true},
		{"before max rounds", &core.QEMUPolicy{DowntimeLimit: time.Millisecond, MaxRounds: 3}, core.RoundStats{Round: 2, Sent: 10, Dirty: 1000, Elapsed: time.Second}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.p.Decide(tt.s).Stop; got != tt.stop {
				t.Errorf("Decide(%+v).Stop = %t, want %t", tt.s, got, tt.stop)
			}
		})
	}
}

func TestQEMUPolicyAutoConverge(t *testing.T) {
	// Each round sends 1000 pages in 10s (100 pages/s: 30 pages fit in
	// 300ms), so the policy never stops; dirty decides whether the round is
	// over the 50% threshold.
	const hi, lo = 600, 400
	tests := []struct {
		name  string
		p     *core.QEMUPolicy
		dirty []int64 // rounds 1, 2, ...
		want  []int   // the throttle decided after each round, -1 for none
	}{
		{"bulk round does not count", core.DefaultQEMU(true),
			[]int64{hi, hi, hi}, []int{-1, -1, 20}},
		{"two highs, not in a row", core.DefaultQEMU(true),
			[]int64{hi, hi, lo, hi}, []int{-1, -1, -1, 20}},
		{"rises by the increment", core.DefaultQEMU(true),
			[]int64{hi, hi, hi, hi, hi, lo, hi, hi}, []int{-1, -1, 20, -1, 30, -1, -1, 40}},
		{"threshold is strict", core.DefaultQEMU(true),
			[]int64{hi, 500, 500, 500}, []int{-1, -1, -1, -1}},
		{"off", core.DefaultQEMU(false),
			[]int64{hi, hi, hi, hi, hi}, []int{-1, -1, -1, -1, -1}},
		{"capped at max", &core.QEMUPolicy{DowntimeLimit: 300 * time.Millisecond, AutoConverge: true,
			InitialPct: 20, IncrementPct: 10, MaxPct: 35, ThresholdPct: 50},
			[]int64{hi, hi, hi, hi, hi, hi, hi, hi, hi}, []int{-1, -1, 20, -1, 30, -1, 35, -1, -1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for i, d := range tt.dirty {
				s := core.RoundStats{Round: i + 1, Sent: 1000, Dirty: d, Elapsed: 10 * time.Second, MemPages: mem}
				got := tt.p.Decide(s)
				if got.Stop {
					t.Fatalf("round %d: stopped, want to go on", i+1)
				}
				if got.Throttle != tt.want[i] {
					t.Errorf("round %d: got throttle %d, want %d", i+1, got.Throttle, tt.want[i])
				}
			}
		})
	}
}

func TestStopAndCopyPolicy(t *testing.T) {
	var p core.StopAndCopyPolicy
	for _, r := range []int{0, 1, 10} {
		if d := p.Decide(core.RoundStats{Round: r, Dirty: mem, MemPages: mem}); !d.Stop || d.Throttle != -1 {
			t.Errorf("round %d: got %+v, want stop without throttle", r, d)
		}
	}
}

func TestPolicyStrings(t *testing.T) {
	for _, tt := range []struct {
		p    fmt.Stringer
		want string
	}{
		{core.DefaultQEMU(true), "qemu(downtime-limit=300ms,auto-converge=true)"},
		{core.DefaultQEMU(false), "qemu(downtime-limit=300ms,auto-converge=false)"},
		{core.StopAndCopyPolicy{}, "stop-and-copy"},
	} {
		if got := tt.p.String(); got != tt.want {
			t.Errorf("got %q, want %q", got, tt.want)
		}
	}
}
