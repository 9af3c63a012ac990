package xentest

import (
	"context"
	"errors"
	"testing"
	"time"
)

const dom0Input = "(XEN) *** Serial input to DOM0 (type 'CTRL-a' three times to switch input)"

// The fake answers each three Ctrl-A as Xen does, with a switch line, and
// otherwise stays silent: the wakes go on (Ctrl-A six times a wake) and the
// stall deadline still ends the wait, Xen's switch lines not being output.
func TestWakeSendsCtrlAAndKeepsTheStallDeadline(t *testing.T) {
	body := `echo "` + dom0Input + `"
while :; do
	x=$(dd bs=3 count=1 2>/dev/null | od -An -tx1 | tr -d ' \n')
	[ "$x" = 010101 ] || { echo "got $x"; sleep 60; }
	echo "(XEN) *** Serial input to Xen (type 'CTRL-a' three times to switch input)"
	x=$(dd bs=3 count=1 2>/dev/null | od -An -tx1 | tr -d ' \n')
	[ "$x" = 010101 ] || { echo "got $x"; sleep 60; }
	echo "` + dom0Input + `"
done`
	m := bootFakeConfig(t, body, BootConfig{Stall: 3 * time.Second, Wake: 200 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	_, err := m.Wait(ctx, "got")
	if !errors.Is(err, ErrStalled) {
		t.Fatalf("Wait on a machine silent but for Xen's answers to wakes: %v, want ErrStalled", err)
	}
	if n := m.Wakes(); n < 2 {
		t.Errorf("%d wakes over a silence of 3 s with Wake 200 ms, want several", n)
	}
}

// Before Xen has given the serial input to dom0 nothing is sent: a byte
// typed then would reach Xen's debug keys, or be lost with Xen's boot.
func TestWakeWaitsForDom0Input(t *testing.T) {
	body := `echo up
x=$(dd bs=1 count=1 2>/dev/null | od -An -tx1 | tr -d ' \n')
echo "got $x"
sleep 60`
	m := bootFakeConfig(t, body, BootConfig{Stall: time.Minute, Wake: 100 * time.Millisecond})
	ctx := context.Background()
	if _, err := m.Wait(ctx, "up"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // ten wake periods of silence
	if err := m.Send("z"); err != nil {
		t.Fatal(err)
	}
	if got, err := m.Wait(ctx, "got"); err != nil || got != "got 7a" {
		t.Fatalf("first byte on the serial line: %q, %v; want %q (the test's, no wake before dom0 has the input)", got, err, "got 7a")
	}
	if n := m.Wakes(); n != 0 {
		t.Errorf("%d wakes before Xen gave the input to dom0, want 0", n)
	}
}

// A switch line that leaves the input with Xen makes the next wake three
// Ctrl-A, which gives it back to dom0.
func TestWakeGivesTheInputBack(t *testing.T) {
	body := `echo "` + dom0Input + `"
echo "(XEN) *** Serial input to Xen (type 'CTRL-a' three times to switch input)"
x=$(dd bs=3 count=1 2>/dev/null | od -An -tx1 | tr -d ' \n')
echo "` + dom0Input + `"
echo "got $x"
y=$(dd bs=1 count=1 2>/dev/null | od -An -tx1 | tr -d ' \n')
echo "next $y"
sleep 60`
	m := bootFakeConfig(t, body, BootConfig{Stall: time.Minute, Wake: 2 * time.Second})
	ctx := context.Background()
	if got, err := m.Wait(ctx, "got"); err != nil || got != "got 010101" {
		t.Fatalf("first wake after the input was left with Xen: %q, %v; want %q", got, err, "got 010101")
	}
	// Sent at once, 2 s before the next wake's silence: a wake of six
	// would have left its last three Ctrl-A for this read.
	if err := m.Send("q"); err != nil {
		t.Fatal(err)
	}
	if got, err := m.Wait(ctx, "next"); err != nil || got != "next 71" {
		t.Fatalf("byte after the first wake: %q, %v; want %q (the wake sent three Ctrl-A, not six)", got, err, "next 71")
	}
}
