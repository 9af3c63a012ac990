package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// TestSnapshotStallBound checks that a stall bound out of range is refused
// by vnsnap snapshot (naming --stall, exit 2, before reaching a supervisor)
// and by the supervisor when it arrives on the control socket (naming
// stall_ms, before anything else is looked at).
func TestSnapshotStallBound(t *testing.T) {
	for _, v := range []string{"10ms", "-1m", "25h"} {
		var out, errb bytes.Buffer
		if code := run([]string{"snapshot", "--state", t.TempDir(), "--stall", v, "s1"}, &out, &errb); code != 2 {
			t.Errorf("--stall %s: exit %d, want 2", v, code)
		}
		if !strings.Contains(errb.String(), "--stall") || strings.Contains(errb.String(), "supervisor") {
			t.Errorf("--stall %s: stderr %q, want the flag named (and no supervisor reached)", v, errb.String())
		}
	}
	var s supervisor // no VNE up: a valid bound gets past the check
	for _, ms := range []int64{-1, 999, 24*3600*1000 + 1, 1 << 62} {
		_, _, err := s.do(context.Background(), request{Op: "snapshot", Name: "s1", StallMS: ms}, nil)
		if err == nil || !strings.Contains(err.Error(), "stall_ms") {
			t.Errorf("stall_ms %d: %v, want it refused naming stall_ms", ms, err)
		}
	}
	if _, _, err := s.do(context.Background(), request{Op: "snapshot", Name: "s1", StallMS: 300_000}, nil); err == nil || strings.Contains(err.Error(), "stall_ms") {
		t.Errorf("stall_ms 300000: %v, want it accepted (then: no VMs running)", err)
	}
}
