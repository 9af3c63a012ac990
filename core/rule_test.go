package core_test

import (
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/vnsnap/vnsnap/core"
)

func TestRule(t *testing.T) {
	// want[i] is the action for a frame epoch below, equal to and above the
	// receiver's epoch.
	tests := []struct {
		algo core.Algorithm
		want [3]core.Action
	}{
		{core.VNsnap, [3]core.Action{core.Deliver, core.Deliver, core.Drop}},
		{core.VNsnapLog, [3]core.Action{core.DeliverLog, core.Deliver, core.Hold}},
		{core.SyncFreeze, [3]core.Action{core.Deliver, core.Deliver, core.Drop}},
		{core.StopCopy, [3]core.Action{core.Deliver, core.Deliver, core.Drop}},
		{core.COW, [3]core.Action{core.Deliver, core.Deliver, core.Drop}},
		{core.Uncoordinated, [3]core.Action{core.Deliver, core.Deliver, core.Deliver}},
	}
	if len(tests) != len(core.Algorithms()) {
		t.Fatalf("table covers %d algorithms, want %d", len(tests), len(core.Algorithms()))
	}
	const dst = 5
	for _, tt := range tests {
		for i, frame := range []core.Epoch{dst - 1, dst, dst + 1} {
			t.Run(fmt.Sprintf("%s/frame=%d/dst=%d", tt.algo, frame, dst), func(t *testing.T) {
				if got := core.Rule(tt.algo, frame, dst); got != tt.want[i] {
					t.Errorf("Rule(%s, %d, %d) = %s, want %s", tt.algo, frame, dst, got, tt.want[i])
				}
			})
		}
	}
	// The rule depends on the order of epochs, not their distance.
	if got := core.Rule(core.VNsnap, 9, 1); got != core.Drop {
		t.Errorf("Rule(vnsnap, 9, 1) = %s, want drop", got)
	}
	if got := core.Rule(core.VNsnapLog, 0, 7); got != core.DeliverLog {
		t.Errorf("Rule(vnsnap-log, 0, 7) = %s, want deliver-log", got)
	}
}

func TestActionString(t *testing.T) {
	for a, want := range map[core.Action]string{
		core.Deliver: "deliver", core.Drop: "drop", core.Hold: "hold", core.DropFull: "drop-full",
		core.DeliverLog: "deliver-log", core.Action(9): "Action(9)",
	} {
		if got := a.String(); got != want {
			t.Errorf("Action(%d).String() = %q, want %q", uint8(a), got, want)
		}
	}
}

func TestPortHoldAndRelease(t *testing.T) {
	var p core.Port[string]
	if got := p.Epoch(); got != 0 {
		t.Fatalf("zero Port epoch = %d, want 0", got)
	}
	admits := []struct {
		epoch core.Epoch
		frame string
		want  core.Action
	}{
		{1, "a", core.Hold},
		{2, "b", core.Hold},
		{0, "c", core.Deliver},
		{1, "d", core.Hold},
		{3, "e", core.Hold},
	}
	for _, a := range admits {
		if got := p.Admit(core.VNsnapLog, a.epoch, a.frame); got != a.want {
			t.Errorf("Admit(e%d, %s) = %s, want %s", a.epoch, a.frame, got, a.want)
		}
	}
	if got := p.Held(); got != 4 {
		t.Errorf("Held() = %d, want 4", got)
	}
	steps := []struct {
		epoch core.Epoch
		want  []string
		held  int
	}{
		{0, nil, 4},                // same epoch: nothing released
		{1, []string{"a", "d"}, 2}, // arrival order, only epochs <= 1
		{1, nil, 2},
		{3, []string{"b", "e"}, 0}, // skipping an epoch releases both
	}
	for _, s := range steps {
		got := p.SetEpoch(s.epoch)
		if diff := cmp.Diff(s.want, got); diff != "" {
			t.Errorf("SetEpoch(%d) released (-want +got):\n%s", s.epoch, diff)
		}
		if p.Held() != s.held {
			t.Errorf("after SetEpoch(%d): Held() = %d, want %d", s.epoch, p.Held(), s.held)
		}
		if p.Epoch() != s.epoch {
			t.Errorf("after SetEpoch(%d): Epoch() = %d", s.epoch, p.Epoch())
		}
	}
	// A pre-snapshot frame now reaches a post-snapshot VM: logged.
	if got := p.Admit(core.VNsnapLog, 2, "f"); got != core.DeliverLog {
		t.Errorf("Admit(e2) at epoch 3 = %s, want deliver-log", got)
	}
}

func TestPortOnlyHoldsForVNsnapLog(t *testing.T) {
	for _, a := range core.Algorithms() {
		if a == core.VNsnapLog {
			continue
		}
		t.Run(a.String(), func(t *testing.T) {
			var p core.Port[int]
			got := p.Admit(a, 1, 7)
			if want := core.Rule(a, 1, 0); got != want {
				t.Errorf("Admit = %s, want %s", got, want)
			}
			if p.Held() != 0 {
				t.Errorf("Held() = %d, want 0", p.Held())
			}
		})
	}
}

func TestPortMaxHeld(t *testing.T) {
	tests := []struct {
		maxHeld, limit int
	}{
		{2, 2},
		{1, 1},
		{0, 1024}, // the default
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("MaxHeld=%d", tt.maxHeld), func(t *testing.T) {
			p := core.Port[int]{MaxHeld: tt.maxHeld}
			for i := 0; i < tt.limit; i++ {
				if got := p.Admit(core.VNsnapLog, 1, i); got != core.Hold {
					t.Fatalf("Admit #%d = %s, want hold", i, got)
				}
			}
			if got := p.Admit(core.VNsnapLog, 1, -1); got != core.DropFull {
				t.Errorf("Admit beyond %d = %s, want drop-full", tt.limit, got)
			}
			if p.Held() != tt.limit {
				t.Errorf("Held() = %d, want %d", p.Held(), tt.limit)
			}
			out := p.SetEpoch(1)
			if len(out) != tt.limit || out[0] != 0 || out[len(out)-1] != tt.limit-1 {
				t.Errorf("SetEpoch(1) released %d frames [%d..%d], want %d [0..%d]",
					len(out), out[0], out[len(out)-1], tt.limit, tt.limit-1)
			}
			// Room again once released.
			if got := p.Admit(core.VNsnapLog, 2, 0); got != core.Hold {
				t.Errorf("Admit after release = %s, want hold", got)
			}
		})
	}
}

func TestPortEpochBackwardsPanics(t *testing.T) {
	var p core.Port[int]
	p.SetEpoch(3)
	defer func() {
		if recover() == nil {
			t.Errorf("SetEpoch(2) after SetEpoch(3) did not panic")
		}
	}()
	p.SetEpoch(2)
}
