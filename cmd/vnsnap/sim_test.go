package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"strings"
	"testing"
)

// TestSimRejectsNonsense runs `vnsnap sim` with numbers that used to panic
// the simulator, run as something else, or exhaust memory in validation:
// each must be a usage error (exit 2) naming its flag, with nothing on
// stdout.
func TestSimRejectsNonsense(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--latency", "-1s"}, "--latency"},
		{[]string{"--disk-bw", "NaN"}, "--disk-bw"},
		{[]string{"--disk-bw", "NaN MB/s"}, "--disk-bw"},
		{[]string{"--disk-bw", "Inf"}, "--disk-bw"},
		{[]string{"--disk-bw", "0"}, "--disk-bw"},
		{[]string{"--mem-bw", "1e400MB/s"}, "--mem-bw"},
		{[]string{"--link-bw", "1e308GB/s"}, "--link-bw"},
		{[]string{"--dirty", "NaN"}, "--dirty"},
		{[]string{"--flow-rate", "+Inf"}, "--flow-rate"},
		{[]string{"--mem", "9200000000000000000"}, "--mem"},
		{[]string{"--mem", "1e19"}, "--mem"},
		{[]string{"--mem", "NaN"}, "--mem"},
		{[]string{"--hot", "Inf"}, "--hot"},
		{[]string{"--budget", "-1"}, "--budget"},
		{[]string{"--queue", "NaN"}, "--queue"},
		{[]string{"--queue", "9000000000000000000"}, "--queue"},
		{[]string{"--loss", "NaN"}, "--loss"},
		{[]string{"--loss", "-0.1"}, "--loss"},
		{[]string{"--loss", "1"}, "--loss"},
		{[]string{"--dirty-spread", "NaN"}, "--dirty-spread"},
		{[]string{"--dirty-spread", "Inf"}, "--dirty-spread"},
		{[]string{"--deadline", "-1ns"}, "--deadline"},
		{[]string{"--warmup", "-5s"}, "--warmup"},
		{[]string{"--warmup", "2000000h"}, "--warmup"},
		{[]string{"--run-on", "-1s"}, "--run-on"},
		{[]string{"--interval", "-1s"}, "--interval"},
		{[]string{"--snapshots", "-1"}, "--snapshots"},
		{[]string{"--snapshots", "1000000000000"}, "--snapshots"},
		{[]string{"--snapshots", "1000000", "--interval", "100000h"}, "--interval"},
		{[]string{"--hosts", "-3"}, "--hosts"},
		{[]string{"--hosts", "1000000000"}, "--hosts"},
		{[]string{"--vms", "1000000000"}, "--vms"},
		// 10^10 all-to-all flows: refused by arithmetic, not by building them.
		{[]string{"--vms", "100000"}, "--traffic"},
		{[]string{"--restore", "--snapshots", "0"}, "--restore"},
		{[]string{"--downlink-bw", "NaN"}, "--downlink-bw"},
		{[]string{"--downlink-bw", "0"}, "--downlink-bw"},
		{[]string{"--downlink-bw", "1e308GB/s"}, "--downlink-bw"},
		{[]string{"--downlink-queue", "0"}, "--downlink-queue"},
		{[]string{"--downlink-queue", "9000000000000000000"}, "--downlink-queue"},
		{[]string{"--delack", "-1ms"}, "--delack"},
		{[]string{"--delack", "1s"}, "--delack"},
		{[]string{"--sack=maybe"}, "sack"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(append([]string{"sim"}, tt.args...), &out, &errb)
			if code != 2 {
				t.Errorf("exit %d, want 2; stderr %q", code, errb.String())
			}
			if !strings.Contains(errb.String(), tt.want+":") {
				t.Errorf("stderr %q does not name %q", errb.String(), tt.want)
			}
			if strings.Contains(errb.String(), "panic") || strings.Contains(errb.String(), "goroutine") {
				t.Errorf("stderr %q shows a panic", errb.String())
			}
			if out.Len() != 0 {
				t.Errorf("stdout %q, want nothing", out.String())
			}
		})
	}
}

// TestSimLargeRingValidates checks that a large VNE is validated in time
// linear in its size: 100,000 VMs in a ring pass validation (all-to-all
// among them is refused above); running it is another matter, so only the
// flags are parsed here.
func TestSimLargeRingValidates(t *testing.T) {
	fs := flag.NewFlagSet("vnsnap sim", flag.ContinueOnError)
	f := newSimFlags(fs)
	if err := fs.Parse([]string{"--vms", "100000", "--hosts", "1000", "--traffic", "ring"}); err != nil {
		t.Fatal(err)
	}
	if err := f.parse(); err != nil {
		t.Fatalf("100,000 VMs in a ring: got %v, want valid", err)
	}
}

// TestSimAbortExitsNonZero runs a snapshot that cannot finish before its
// deadline: the summary says so, the exit status is 1 (not a usage error),
// and no VM shows a negative duration.
func TestSimAbortExitsNonZero(t *testing.T) {
	for _, asJSON := range []bool{false, true} {
		args := []string{"sim", "--vms", "2", "--hosts", "1", "--mem", "64MiB", "--deadline", "50ms",
			"--warmup", "200ms", "--run-on", "200ms"}
		if asJSON {
			args = append(args, "--json")
		}
		var out, errb bytes.Buffer
		code := run(args, &out, &errb)
		if code != 1 {
			t.Errorf("json %t: exit %d, want 1; stderr %q", asJSON, code, errb.String())
		}
		if !strings.Contains(errb.String(), "aborted") {
			t.Errorf("json %t: stderr %q does not say the snapshot aborted", asJSON, errb.String())
		}
		if !asJSON {
			if !strings.Contains(out.String(), "snapshot aborted") {
				t.Errorf("summary does not say aborted:\n%s", out.String())
			}
			if strings.Contains(out.String(), " -") {
				t.Errorf("summary shows a negative number:\n%s", out.String())
			}
			continue
		}
		var res struct {
			State string `json:"state"`
			VMs   []map[string]any
		}
		if err := json.Unmarshal(out.Bytes(), &res); err != nil {
			t.Fatalf("output is not JSON: %v\n%s", err, out.String())
		}
		if res.State != "aborted" || len(res.VMs) != 2 {
			t.Fatalf("state %q with %d VMs, want aborted with 2", res.State, len(res.VMs))
		}
		for _, v := range res.VMs {
			for k, x := range v {
				if f, ok := x.(float64); ok && f < 0 {
					t.Errorf("vm %v: %s = %g, want >= 0", v["vm"], k, x)
				}
			}
		}
	}
}

// TestSimRestoreFailureExitsNonZero restores a snapshot that aborted: the
// restore fails, and the exit status says so.
func TestSimRestoreFailureExitsNonZero(t *testing.T) {
	var out, errb bytes.Buffer
	code := run([]string{"sim", "--vms", "2", "--hosts", "1", "--mem", "64MiB", "--deadline", "50ms", "--restore",
		"--warmup", "200ms", "--run-on", "200ms"}, &out, &errb)
	if code != 1 {
		t.Errorf("exit %d, want 1; stderr %q", code, errb.String())
	}
	if !strings.Contains(out.String(), "restore: FAILED") || !strings.Contains(errb.String(), "restore failed") {
		t.Errorf("want the failed restore in summary and error; stdout:\n%s\nstderr: %s", out.String(), errb.String())
	}
}

// TestSimHeldFrames checks that the frames VNsnap-log's colour rule holds
// are reported, in the summary and in the JSON object. Xen's loop iterates
// while the VMs' dirty rates spread their points apart (QEMU's 300 ms limit
// stops these equal VMs after one pass, together, and nothing is held).
func TestSimHeldFrames(t *testing.T) {
	args := []string{"sim", "--vms", "4", "--hosts", "2", "--mem", "16MiB", "--algo", "vnsnap-log", "--udp", "--hypervisor-model", "xen",
		"--warmup", "300ms", "--run-on", "200ms", "--seed", "2"}
	var out, errb bytes.Buffer
	if code := run(append(args, "--json"), &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	var m map[string]any
	if err := json.Unmarshal(out.Bytes(), &m); err != nil {
		t.Fatal(err)
	}
	held, ok := m["held_frames"].(float64)
	if !ok || held <= 0 {
		t.Fatalf("held_frames = %v, want a positive count", m["held_frames"])
	}
	out.Reset()
	if code := run(args, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	if want := fmt.Sprintf("%.0f held by the colour rule", held); !strings.Contains(out.String(), want) {
		t.Errorf("summary lacks %q:\n%s", want, out.String())
	}
}
