package realbackend

import (
	"fmt"
	"strings"
	"testing"
)

// TestConsoleTail: a failing test's console tail keeps the workload's lines
// however many heartbeats came after them, and counts the heartbeats.
func TestConsoleTail(t *testing.T) {
	var b strings.Builder
	b.WriteString("19:33:10.000001 SWARM START peer=1\n")
	for i := 1; i <= 5000; i++ {
		fmt.Fprintf(&b, "19:33:10.%06d HB %d\n", i, i)
		if i == 2500 {
			b.WriteString("19:33:11.000000 SWARM PROGRESS have=3 rx=1 tx=2\n")
		}
	}
	got := consoleTail([]byte(b.String()), 3000)
	for _, want := range []string{"SWARM START peer=1", "SWARM PROGRESS have=3", "(5000 heartbeats; the last: 19:33:10.005000 HB 5000)"} {
		if !strings.Contains(got, want) {
			t.Errorf("tail %q lacks %q", got, want)
		}
	}
	if strings.Contains(got, "HB 4999") {
		t.Errorf("tail %q keeps heartbeats", got)
	}
	long := strings.Repeat("19:33:10.000001 line\n", 1000)
	if got := consoleTail([]byte(long), 100); len(got) != 103 || !strings.HasPrefix(got, "...") {
		t.Errorf("tail of a long log: %d bytes %q, want 103 starting with ...", len(got), got)
	}
}
