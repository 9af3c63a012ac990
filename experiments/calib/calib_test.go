package calib

import (
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func sample() *File {
	return &File{
		Schema: Schema, Date: "2026-12-02T05:00:00Z", Vnsnap: "(devel) abc", QEMU: "10.0.2", Accel: "tcg",
		Machine: Machine{CPU: "Test CPU", Cores: 2},
		Sim: Costs{Source: "test", Stop: Duration(3 * time.Millisecond), Cont: Duration(2 * time.Millisecond),
			QMPRoundTrip: Duration(time.Millisecond), ColourFlip: Duration(50 * time.Microsecond),
			DiskFreeze: Duration(2 * time.Millisecond), COWFault: Duration(2 * time.Microsecond), DeviceState: 300 << 10},
		BW:    BW{Memory: 400e6, Disk: 200e6},
		Dirty: []Dirty{{SetMiBps: 8, MeasuredMiBps: 7.5}},
		Runs:  []Run{{Guest: "idle", Algorithm: "stop-copy", Sink: "disk", PauseMs: 500, StreamBytes: 1 << 20}},
	}
}

func TestWriteLoad(t *testing.T) {
	p := filepath.Join(t.TempDir(), "c.json")
	want := sample()
	if err := want.Write(p); err != nil {
		t.Fatal(err)
	}
	got, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("read back (-want +got):\n%s", diff)
	}
}

// TestSimJSONNames pins the simulator's part to simbackend's Calibration
// JSON names, which its LoadCalibration requires (it refuses unknown
// fields), and its durations to Go duration strings.
func TestSimJSONNames(t *testing.T) {
	b, err := sample().SimJSON()
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	want := []string{"colour_flip", "cont", "cow_arm", "cow_bps", "cow_fault", "device_state_bytes", "disk_freeze", "live_bps", "qmp_round_trip", "source", "stop", "switchover_disk", "switchover_memory", "vcpu_state_bytes"}
	if diff := cmp.Diff(want, keys); diff != "" {
		t.Errorf("sim keys (-want +got):\n%s", diff)
	}
	if m["stop"] != "3ms" {
		t.Errorf("stop = %v, want \"3ms\"", m["stop"])
	}
}

func TestBadFiles(t *testing.T) {
	for _, c := range []struct {
		name, edit, want string
	}{
		{"schema", `"schema": 1`, "schema"},
		{"date", `"date": "2026-12-02T05:00:00Z"`, "date"},
		{"negative stop", `"stop": "3ms"`, "sim.stop"},
		{"zero bandwidth", `"memory_bps": 400000000`, "bandwidth.memory_bps"},
		{"cores", `"cores": 2`, "machine.cores"},
		{"device", `"device_state_bytes": 307200`, "sim.device_state_bytes"},
		{"live", `"live_bps": 0`, "sim.live_bps"},
		{"unknown", `"qemu": "10.0.2"`, "unknown field"},
		{"trailing", "", "trailing"},
	} {
		t.Run(c.name, func(t *testing.T) {
			b, _ := json.Marshal(sample())
			s := strings.ReplaceAll(string(b), `":`, `": `)
			repl := map[string]string{
				"schema": `"schema": 7`, "date": `"date": "yesterday"`, "negative stop": `"stop": "-3ms"`,
				"zero bandwidth": `"memory_bps": 0`, "cores": `"cores": 0`, "device": `"device_state_bytes": -1`, "live": `"live_bps": -1`,
				"unknown": `"qemu": "10.0.2", "colour": 1`,
			}
			if c.edit != "" {
				if !strings.Contains(s, c.edit) {
					t.Fatalf("%q not in %s", c.edit, s)
				}
				s = strings.Replace(s, c.edit, repl[c.name], 1)
			} else {
				s += " {}"
			}
			p := filepath.Join(t.TempDir(), "bad.json")
			if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := Load(p)
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), p) {
				t.Errorf("Load: %v, want an error naming %s and %q", err, p, c.want)
			}
		})
	}
}

func TestWriteRefusesInvalid(t *testing.T) {
	p := filepath.Join(t.TempDir(), "c.json")
	f := sample()
	f.BW.Disk = -1
	if err := f.Write(p); err == nil || !strings.Contains(err.Error(), "bandwidth.disk_bps") {
		t.Errorf("Write: %v, want an error naming bandwidth.disk_bps", err)
	}
	if _, err := os.Stat(p); !os.IsNotExist(err) {
		t.Errorf("a refused calibration left %s behind: %v", p, err)
	}
}

// TestDefault: the shipped calibration is valid and says where it was
// measured.
func TestDefault(t *testing.T) {
	f, err := Default()
	if err != nil {
		t.Fatal(err)
	}
	if f.QEMU == "" || f.Machine.CPU == "" || f.Sim.Source == "" || len(f.Runs) == 0 {
		t.Errorf("shipped calibration lacks its provenance or runs: qemu %q, cpu %q, source %q, %d runs", f.QEMU, f.Machine.CPU, f.Sim.Source, len(f.Runs))
	}
}
