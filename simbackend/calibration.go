package sim

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"time"

	"github.com/vnsnap/vnsnap/core"
)

// Calibration holds what the model of a VM's copy takes from measurements
// of the real backend: the fixed costs of each step around the pause and
// the size of the state copied while the VM is paused. The copy bandwidths
// are the hosts' (HostConfig.DiskBandwidth, MemoryBandwidth).
//
// The pause of a pre-copy VM costs, in order: Stop (the hypervisor stops
// the vCPUs), ColourFlip (SetColour on the VM's switch), DiskFreeze
// (FreezeDisk), QMPRoundTrip (the command that lets the final copy run:
// QEMU's migrate-continue), the last dirty pages plus DeviceState and
// VCPUState at the sink's bandwidth, the switchover of the sink
// (SwitchoverMemory, SwitchoverDisk: what the hypervisor and the sink take,
// after the last byte, to complete the save: QEMU's end of stream, its
// multifd channels' sync, the store's flush), then Cont (ResumeVM). A
// stop-and-copy's one pass ends with the same switchover. Copy-on-write
// stalls the writing VM, at each first write to a protected page, for that
// page's copy at the sink's bandwidth plus COWFault. Arming copy-on-write
// costs a monitor round trip, COWArm and the device state; the background
// copy runs at COWBandwidth if set (QEMU's background snapshot writes from
// one thread, page by page, slower than a stop-and-copy), else at the
// sink's bandwidth. A pre-copy's live passes (every pass but the last, the
// VM running: under TCG its vCPUs compete with the migration thread) run at
// LiveBandwidth if set and slower than the sink, else at the sink's
// bandwidth; the final pass, with the VM paused, at the sink's.
//
// DefaultCalibration's numbers are placeholders of the right order for
// QEMU with KVM on a workstation, to be replaced by a file that `vnsnap
// calibrate` measures on the real backend; Source says which one a run used.
type Calibration struct {
	// Source says where the numbers come from (a machine and hypervisor
	// version for a measured file).
	Source       string   `json:"source"`
	Stop         Duration `json:"stop"`           // pause: the decision to the vCPUs stopped
	Cont         Duration `json:"cont"`           // resume: ResumeVM to the vCPUs running
	QMPRoundTrip Duration `json:"qmp_round_trip"` // one monitor command and its answer
	ColourFlip   Duration `json:"colour_flip"`    // the switch's colour change of one port
	DiskFreeze   Duration `json:"disk_freeze"`    // a disk snapshot (QEMU: blockdev-snapshot-sync)
	COWFault     Duration `json:"cow_fault"`      // a write fault on a protected page, besides its copy
	COWArm       Duration `json:"cow_arm"`        // arming copy-on-write, besides the device state
	COWBandwidth float64  `json:"cow_bps"`        // the background copy's bandwidth; 0: the sink's
	// LiveBandwidth caps a pre-copy's live passes, bytes per second; 0
	// (a file from before it was measured): the sink's bandwidth.
	LiveBandwidth float64 `json:"live_bps"`
	// SwitchoverMemory and SwitchoverDisk are the switchover per sink.
	SwitchoverMemory Duration `json:"switchover_memory"`
	SwitchoverDisk   Duration `json:"switchover_disk"`
	DeviceState      int64    `json:"device_state_bytes"`
	VCPUState        int64    `json:"vcpu_state_bytes"`
}

// DefaultCalibration returns placeholder numbers (see Calibration).
func DefaultCalibration() Calibration {
	return Calibration{
		Source:       "placeholder defaults (not measured; replace with `vnsnap calibrate`)",
		Stop:         Duration(time.Millisecond),
		Cont:         Duration(time.Millisecond),
		QMPRoundTrip: Duration(500 * time.Microsecond),
		ColourFlip:   Duration(50 * time.Microsecond),
		DiskFreeze:   Duration(2 * time.Millisecond),
		COWFault:     Duration(2 * time.Microsecond),
		DeviceState:  256 << 10,
		VCPUState:    16 << 10,
	}
}

// switchover is the sink's switchover (see Calibration).
func (c *Calibration) switchover(s core.Sink) Duration {
	if s == core.MemorySink {
		return c.SwitchoverMemory
	}
	return c.SwitchoverDisk
}

// pausedState is the bytes copied while a VM is paused besides its pages.
func (c *Calibration) pausedState() int64 { return c.DeviceState + c.VCPUState }

// Validate reports the first field out of range, named as in the JSON file.
func (c *Calibration) Validate() error {
	for _, d := range []struct {
		name string
		v    Duration
	}{
		{"stop", c.Stop}, {"cont", c.Cont}, {"qmp_round_trip", c.QMPRoundTrip},
		{"colour_flip", c.ColourFlip}, {"disk_freeze", c.DiskFreeze}, {"cow_fault", c.COWFault},
		{"switchover_memory", c.SwitchoverMemory}, {"switchover_disk", c.SwitchoverDisk}, {"cow_arm", c.COWArm},
	} {
		if err := checkDuration(d.name, Time(d.v)); err != nil {
			return err
		}
	}
	if !(c.COWBandwidth >= 0) || c.COWBandwidth > 1e12 {
		return fmt.Errorf("cow_bps: %v, want 0..1e12 bytes/s", c.COWBandwidth)
	}
	if !(c.LiveBandwidth >= 0) || c.LiveBandwidth > 1e12 {
		return fmt.Errorf("live_bps: %v, want 0..1e12 bytes/s", c.LiveBandwidth)
	}
	if err := checkBytes("device_state_bytes", c.DeviceState); err != nil {
		return err
	}
	return checkBytes("vcpu_state_bytes", c.VCPUState)
}

// maxCalibrationFile bounds what LoadCalibration reads: a calibration is a
// few hundred bytes.
const maxCalibrationFile = 1 << 20

// LoadCalibration reads a calibration from a JSON file. Fields the file
// leaves out keep DefaultCalibration's values; unknown fields, trailing
// data and values out of range are errors naming the file and the field.
func LoadCalibration(path string) (Calibration, error) {
	f, err := os.Open(path)
	if err != nil {
		return Calibration{}, fmt.Errorf("calibration: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxCalibrationFile+1))
	if err != nil {
		return Calibration{}, fmt.Errorf("calibration %s: %w", path, err)
	}
	if len(data) > maxCalibrationFile {
		return Calibration{}, fmt.Errorf("calibration %s: larger than %d bytes", path, maxCalibrationFile)
	}
	c, err := ParseCalibration(data)
	if err != nil {
		return Calibration{}, fmt.Errorf("calibration %s: %w", path, err)
	}
	return c, nil
}

// ParseCalibration decodes a calibration from one JSON object (see
// LoadCalibration); an error names the field.
func ParseCalibration(data []byte) (Calibration, error) {
	c := DefaultCalibration()
	var raw map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&raw); err != nil {
		return Calibration{}, fmt.Errorf("want one JSON object: %w", err)
	}
	if dec.More() {
		return Calibration{}, errors.New("trailing data after the calibration object")
	}
	fields := map[string]any{
		"source": &c.Source, "stop": &c.Stop, "cont": &c.Cont, "qmp_round_trip": &c.QMPRoundTrip,
		"colour_flip": &c.ColourFlip, "disk_freeze": &c.DiskFreeze, "cow_fault": &c.COWFault,
		"device_state_bytes": &c.DeviceState, "vcpu_state_bytes": &c.VCPUState,
		"switchover_memory": &c.SwitchoverMemory, "switchover_disk": &c.SwitchoverDisk,
		"cow_arm": &c.COWArm, "cow_bps": &c.COWBandwidth,
		"live_bps": &c.LiveBandwidth,
	}
	keys := make([]string, 0, len(raw))
	for k := range raw {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		dst, ok := fields[k]
		if !ok {
			return Calibration{}, fmt.Errorf("unknown field %q", k)
		}
		if err := json.Unmarshal(raw[k], dst); err != nil {
			return Calibration{}, fmt.Errorf("%s: %w", k, err)
		}
	}
	if err := c.Validate(); err != nil {
		return Calibration{}, err
	}
	return c, nil
}

// Duration is a time.Duration written in JSON as a Go duration string
// ("1.5ms"); a bare number is nanoseconds.
type Duration time.Duration

// MarshalJSON implements json.Marshaler.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON implements json.Unmarshaler.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		var n int64
		if err2 := json.Unmarshal(b, &n); err2 != nil {
			return fmt.Errorf("duration %s: want a string such as \"1.5ms\" or integer nanoseconds", b)
		}
		*d = Duration(n)
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}
