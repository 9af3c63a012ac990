// Package calib is the file format of a calibration measured by `vnsnap
// calibrate` on the real backend (QEMU): what the simulator's model of a
// snapshot needs, with the machine, hypervisor and vnsnap version it was
// measured on.
//
// The file is one JSON object. Its "sim" member is, field for field, the
// simulator's calibration (simbackend's Calibration and its JSON names:
// stop, cont, qmp_round_trip, colour_flip, disk_freeze, cow_fault,
// device_state_bytes, vcpu_state_bytes, cow_bps, live_bps, source), so that it can be handed
// to `vnsnap sim --calibration` as it is (File.SimJSON); "bandwidth" holds
// the copy bandwidth per sink (the simulator's HostConfig.MemoryBandwidth
// and DiskBandwidth); the rest records how the numbers were measured.
package calib

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"time"

	"github.com/vnsnap/vnsnap/results"
	sim "github.com/vnsnap/vnsnap/simbackend"
)

// Schema is the version of the file format.
const Schema = 1

// File is one calibration.
type File struct {
	Schema int    `json:"schema"`
	Date   string `json:"date"` // RFC 3339, UTC
	// Vnsnap is the version of vnsnap that measured it (results.Version).
	Vnsnap  string  `json:"vnsnap"`
	Machine Machine `json:"machine"`
	QEMU    string  `json:"qemu"`        // QEMU's version
	Accel   string  `json:"accel"`       // "tcg" or "kvm"
	Full    bool    `json:"full"`        // the long run (calibrate --full)
	Sim     Costs   `json:"sim"`         // the simulator's calibration
	BW      BW      `json:"bandwidth"`   // copy bandwidth per sink
	Guest   Guest   `json:"guest"`       // the built-in guests' memory
	Dirty   []Dirty `json:"dirty_rates"` // the dirtier's rates as QEMU measured them
	Runs    []Run   `json:"runs"`        // the snapshots the numbers come from
	Notes   string  `json:"notes,omitempty"`
}

// Machine is the host the calibration was measured on.
type Machine struct {
	CPU   string `json:"cpu"`
	Cores int    `json:"cores"`
}

// Costs is the simulator's calibration (simbackend.Calibration): the file
// carries it as the simulator reads it.
type Costs = sim.Calibration

// BW is the copy bandwidth per sink, bytes per second: the simulator's
// HostConfig.MemoryBandwidth and DiskBandwidth.
type BW struct {
	Memory float64 `json:"memory_bps"`
	Disk   float64 `json:"disk_bps"`
}

// Dirty is one dirtier setting and the rate QEMU's calc-dirty-rate measured.
type Dirty struct {
	SetMiBps      float64 `json:"set_mibps"`      // the guest program's -rate
	MeasuredMiBps float64 `json:"measured_mibps"` // calc-dirty-rate (page-sampling)
	GuestMiBps    float64 `json:"guest_mibps"`    // the dirtier's own rate (its sweeps)
}

// Guest describes the built-in guests' memory as the copies found it.
type Guest struct {
	// PopulatedBytes is the idle guest's non-zero memory: the RAM its
	// stop-and-copy snapshots sent (QEMU sends a flag for a zero page).
	// The simulator's Config.PopulatedBytes; 0: not measured.
	PopulatedBytes int64 `json:"populated_bytes"`
}

// Run summarises one measured snapshot of one VM.
type Run struct {
	Guest        string  `json:"guest"` // "idle" or "dirtier-<rate>"
	Algorithm    string  `json:"algorithm"`
	Sink         string  `json:"sink"`
	PauseMs      float64 `json:"pause_ms"`      // the core's downtime
	OutsideMs    float64 `json:"outside_ms"`    // the heartbeat gap
	QEMUPauseMs  float64 `json:"qemu_pause_ms"` // QEMU's downtime
	DurationMs   float64 `json:"duration_ms"`   // the core's copy duration
	StreamBytes  int64   `json:"stream_bytes"`  // the image stream
	MemoryCopied int64   `json:"memory_copied"` // RAM sent, as QEMU counts it
	Passes       int     `json:"passes"`
	// LiveBytes and LiveMs: a pre-copy's live passes, QEMU's RAM sent and
	// time before the pause (absent: not a pre-copy, or not recorded).
	LiveBytes int64   `json:"live_bytes,omitempty"`
	LiveMs    float64 `json:"live_ms,omitempty"`
}

// Duration is the simulator's JSON duration (a Go duration string such as
// "1.5ms"; a bare number is nanoseconds).
type Duration = sim.Duration

// maxFile bounds what Load reads.
const maxFile = 4 << 20

// Load reads and validates a calibration file; errors name the file and the
// field.
func Load(path string) (*File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("calibration: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxFile+1))
	if err != nil {
		return nil, fmt.Errorf("calibration %s: %w", path, err)
	}
	if len(data) > maxFile {
		return nil, fmt.Errorf("calibration %s: larger than %d bytes", path, maxFile)
	}
	c, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("calibration %s: %w", path, err)
	}
	return c, nil
}

// Parse decodes one calibration object; unknown fields and trailing data are
// errors.
func Parse(data []byte) (*File, error) {
	var c File
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("want one calibration object: %w", err)
	}
	if dec.More() {
		return nil, errors.New("trailing data after the calibration object")
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// Validate reports the first field out of range, named as in the file.
func (c *File) Validate() error {
	if c.Schema != Schema {
		return fmt.Errorf("schema: %d, want %d", c.Schema, Schema)
	}
	if _, err := time.Parse(time.RFC3339, c.Date); err != nil {
		return fmt.Errorf("date: %w", err)
	}
	const maxCost = Duration(time.Hour)
	for _, d := range []struct {
		name string
		v    Duration
	}{
		{"sim.stop", c.Sim.Stop}, {"sim.cont", c.Sim.Cont}, {"sim.qmp_round_trip", c.Sim.QMPRoundTrip},
		{"sim.colour_flip", c.Sim.ColourFlip}, {"sim.disk_freeze", c.Sim.DiskFreeze}, {"sim.cow_fault", c.Sim.COWFault},
		{"sim.switchover_memory", c.Sim.SwitchoverMemory}, {"sim.switchover_disk", c.Sim.SwitchoverDisk}, {"sim.cow_arm", c.Sim.COWArm},
	} {
		if d.v < 0 || d.v > maxCost {
			return fmt.Errorf("%s: %v, want 0..1h", d.name, time.Duration(d.v))
		}
	}
	for _, b := range []struct {
		name string
		v    int64
	}{{"sim.device_state_bytes", c.Sim.DeviceState}, {"sim.vcpu_state_bytes", c.Sim.VCPUState}, {"guest.populated_bytes", c.Guest.PopulatedBytes}} {
		if b.v < 0 || b.v > 1<<40 {
			return fmt.Errorf("%s: %d, want 0..1TiB", b.name, b.v)
		}
	}
	for _, b := range []struct {
		name string
		v    float64
	}{{"sim.cow_bps", c.Sim.COWBandwidth}, {"sim.live_bps", c.Sim.LiveBandwidth}} {
		if !(b.v >= 0) || b.v > 1e12 {
			return fmt.Errorf("%s: %v, want 0..1e12 bytes/s (0: the sink's bandwidth)", b.name, b.v)
		}
	}
	for _, b := range []struct {
		name string
		v    float64
	}{{"bandwidth.memory_bps", c.BW.Memory}, {"bandwidth.disk_bps", c.BW.Disk}} {
		if !(b.v > 0) || math.IsInf(b.v, 0) || b.v > 1e12 {
			return fmt.Errorf("%s: %v, want a positive rate up to 1e12", b.name, b.v)
		}
	}
	if c.Machine.Cores < 1 {
		return fmt.Errorf("machine.cores: %d, want >= 1", c.Machine.Cores)
	}
	for i, d := range c.Dirty {
		if d.SetMiBps < 0 || d.MeasuredMiBps < 0 || math.IsNaN(d.MeasuredMiBps) || d.GuestMiBps < 0 || math.IsNaN(d.GuestMiBps) {
			return fmt.Errorf("dirty_rates[%d]: negative or NaN rate", i)
		}
	}
	return nil
}

// SimJSON returns the "sim" member alone: a file that simbackend's
// LoadCalibration (vnsnap sim --calibration) reads.
func (c *File) SimJSON() ([]byte, error) {
	b, err := json.MarshalIndent(c.Sim, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// Write validates c and writes it to path atomically (a temporary file in
// the same directory, renamed): nothing half-written is left on error.
func (c *File) Write(path string) error {
	if err := c.Validate(); err != nil {
		return fmt.Errorf("calibration: %w", err)
	}
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	return results.WriteFileAtomic(path, append(b, '\n'))
}
