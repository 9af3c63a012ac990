package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSimJSON(t *testing.T) {
	var out, errb bytes.Buffer
	code := run([]string{"sim", "--vms", "3", "--hosts", "2", "--mem", "16MiB", "--algo", "vnsnap-log", "--sink", "memory",
		"--traffic", "ring", "--restore", "--json", "--seed", "5"}, &out, &errb)
	if code != 0 {
		t.Fatalf("exit %d, want 0; stderr: %s", code, errb.String())
	}
	var m map[string]any
	if err := json.Unmarshal(out.Bytes(), &m); err != nil {
		t.Fatalf("output is not one JSON object: %v\n%s", err, out.String())
	}
	for _, k := range []string{"algo", "seed", "vms", "window_ms", "orphans", "in_transit", "recovered_by_tcp", "replayed",
		"lost", "dropped_frames", "max_app_stall_ms", "restore_ok", "recover_ms"} {
		if _, ok := m[k]; !ok {
			t.Errorf("JSON lacks key %q", k)
		}
	}
	vms, _ := m["vms"].([]any)
	if len(vms) != 3 {
		t.Fatalf("got %d VMs in JSON, want 3", len(vms))
	}
	for _, k := range []string{"downtime_ms", "duration_ms", "bytes_copied", "rounds"} {
		if _, ok := vms[0].(map[string]any)[k]; !ok {
			t.Errorf("per-VM JSON lacks key %q", k)
		}
	}
	if m["algo"] != "vnsnap-log" || m["restore_ok"] != true {
		t.Errorf("got algo %v restore_ok %v, want vnsnap-log true", m["algo"], m["restore_ok"])
	}
}

func TestSimBadFlags(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"sim", "--algo", "chandy"}, "--algo"},
		{[]string{"sim", "--sink", "tape"}, "--sink"},
		{[]string{"sim", "--mem", "lots"}, "--mem"},
		{[]string{"sim", "--dirty", "fast"}, "--dirty"},
		{[]string{"sim", "--vms", "0"}, "vms"},
		{[]string{"sim", "--traffic", "star"}, "traffic"},
		{[]string{"sim", "--policy", "vmware"}, "policy"},
		{[]string{"sim", "--loss", "2"}, "loss"},
		{[]string{"sim", "--mode", "auto"}, "--mode"},
		{[]string{"sim", "--hypervisor-model", "vmware"}, "hypervisor-model"},
		{[]string{"sim", "--calibration", "/nonexistent/cal.json"}, "--calibration"},
		{[]string{"sim", "--nope"}, "-nope"},
		{[]string{"sim", "extra"}, "extra"},
		{[]string{"frobnicate"}, "unknown command"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var out, errb bytes.Buffer
			if code := run(tt.args, &out, &errb); code != 2 {
				t.Errorf("exit %d, want 2", code)
			}
			if !strings.Contains(errb.String(), tt.want) {
				t.Errorf("stderr %q does not name %q", errb.String(), tt.want)
			}
			if out.Len() != 0 {
				t.Errorf("stdout %q, want nothing", out.String())
			}
		})
	}
}

func TestSimSummary(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"sim", "--vms", "2", "--hosts", "1", "--mem", "8MiB", "--restore"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	for _, want := range []string{"snapshot committed", "consistency: 0 orphans", "restore: ok"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, out.String())
		}
	}
}

// TestE9BadPointsWritesNothing: experiment e9 --real refuses bad --points
// (out of range, not a number, given twice) before it makes --out.
func TestE9BadPointsWritesNothing(t *testing.T) {
	for _, pts := range []string{"0", "99", "x", "1,1"} {
		out := filepath.Join(t.TempDir(), "out")
		var o, errb bytes.Buffer
		code := run([]string{"experiment", "e9", "--real", "--out", out, "--points", pts}, &o, &errb)
		if code == 0 || !strings.Contains(errb.String(), "--points") {
			t.Errorf("--points %s: exit %d, stderr %q; want an error naming --points", pts, code, errb.String())
		}
		if _, err := os.Stat(out); !os.IsNotExist(err) {
			t.Errorf("--points %s: --out %s exists after the error (%v), want nothing written", pts, out, err)
		}
	}
}

// TestCalibrateBadFlags: calibrate refuses a missing or unwritable --out
// before it starts any VM.
func TestCalibrateBadFlags(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"calibrate"}, "--out"},
		{[]string{"calibrate", "--out", "/nonexistent-dir/c.json"}, "--out: directory"},
		{[]string{"calibrate", "--out", "c.json", "--sim-out", "/nonexistent-dir/s.json"}, "--sim-out"},
		{[]string{"calibrate", "--out", "c.json", "extra"}, "unexpected argument"},
		{[]string{"experiment", "e9", "--real", "--repeats", "-2"}, "--repeats"},
	} {
		var out, errb bytes.Buffer
		code := run(c.args, &out, &errb)
		if code == 0 || !strings.Contains(errb.String(), c.want) {
			t.Errorf("vnsnap %v: exit %d, stderr %q; want an error containing %q", c.args, code, errb.String(), c.want)
		}
	}
}
