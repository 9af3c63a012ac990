package qemubackend

import (
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestParseVersion(t *testing.T) {
	for _, tc := range []struct {
		out     string
		want    QEMUVersion
		tooOld  bool
		wantErr bool
	}{
		{"QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)\nCopyright (c) 2003-2025", QEMUVersion{10, 0, 2}, false, false},
		{"QEMU emulator version 7.2.15 (Debian 1:7.2+dfsg-7+deb12u13)\n", QEMUVersion{7, 2, 15}, true, false},
		{"QEMU emulator version 9.0.0\n", QEMUVersion{9, 0, 0}, false, false},
		{"QEMU emulator version 8.2\n", QEMUVersion{8, 2, 0}, true, false},
		{"bash: qemu: not found\n", QEMUVersion{}, false, true},
	} {
		got, err := ParseVersion([]byte(tc.out))
		if (err != nil) != tc.wantErr {
			t.Errorf("ParseVersion(%q) error = %v, want error %v", tc.out, err, tc.wantErr)
			continue
		}
		if got != tc.want {
			t.Errorf("ParseVersion(%q) = %v, want %v", tc.out, got, tc.want)
		}
		if !tc.wantErr && got.Less(MinQEMU) != tc.tooOld {
			t.Errorf("%v.Less(MinQEMU) = %v, want %v", got, !tc.tooOld, tc.tooOld)
		}
	}
}

func TestPickMachine(t *testing.T) {
	for _, tc := range []struct{ help, want string }{
		{"pc                   Standard PC (alias of pc-i440fx-10.0)\npc-i440fx-10.0       Standard PC (default)\npc-i440fx-9.2        Standard PC\n", "pc-i440fx-10.0"},
		{"pc-i440fx-9.1        x\npc-i440fx-9.2        x\npc-i440fx-10.1       x\npc-q35-11.0 x\n", "pc-i440fx-10.1"},
		{"pc-i440fx-8.2        x\npc-i440fx-9.0        x\n", "pc-i440fx-9.0"},
	} {
		got, err := PickMachine([]byte(tc.help))
		if err != nil || got != tc.want {
			t.Errorf("PickMachine(...) = %q, %v; want %q", got, err, tc.want)
		}
	}
	if _, err := PickMachine([]byte("microvm x\n")); err == nil {
		t.Error("PickMachine without any pc-i440fx: want error")
	}
}

func TestProbeMissingBinary(t *testing.T) {
	_, err := Probe(t.Context(), "/nonexistent/qemu-system-x86_64")
	if !errors.Is(err, ErrNoQEMU) {
		t.Fatalf("got %v, want ErrNoQEMU", err)
	}
}

// A fake qemu-system-x86_64 reporting 7.2 is refused.
func TestProbeRefusesOldQEMU(t *testing.T) {
	dir := t.TempDir()
	fake := dir + "/qemu-system-x86_64"
	script := "#!/bin/sh\necho 'QEMU emulator version 7.2.15 (Debian 1:7.2+dfsg-7+deb12u13)'\n"
	if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	_, err := Probe(t.Context(), fake)
	if !errors.Is(err, ErrQEMUTooOld) || !strings.Contains(err.Error(), "7.2.15") {
		t.Fatalf("got %v, want ErrQEMUTooOld naming 7.2.15", err)
	}
}

func TestMACForIsStable(t *testing.T) {
	if a, b := MACFor("vm1"), MACFor("vm1"); a != b || a == MACFor("vm2") || !strings.HasPrefix(a, "52:54:00:") {
		t.Errorf("MACFor: %s %s %s", a, b, MACFor("vm2"))
	}
}

func TestMaxHeartbeatGap(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	c := &Console{lines: []Line{
		{at(0), "HB 1"}, {at(10), "HB 2"}, {at(15), "DIRTIER OK cycle=1"},
		{at(20), "HB 3"}, {at(250), "HB 4"}, {at(260), "HB 5"}, {at(900), "HB 6"},
	}}
	got := c.MaxHeartbeatGap(at(0), at(300))
	want := HeartbeatGap{Gap: 230 * time.Millisecond, Before: 3, After: 4, At: at(20), Count: 5}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("MaxHeartbeatGap (-want +got):\n%s", diff)
	}
	if _, n, ok := c.LastHeartbeat(at(255)); !ok || n != 4 {
		t.Errorf("LastHeartbeat = %d, %v; want 4", n, ok)
	}
}
