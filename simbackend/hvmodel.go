package sim

import (
	"fmt"
	"time"
)

// The hypervisor models of Observed mode (Config.Hypervisor): the pre-copy
// loop a real hypervisor runs on its own, reported to the core pass by pass
// as the real backend reports it (see hvloop.go).
const (
	HypervisorQEMU = "qemu"
	HypervisorXen  = "xen"
)

// QEMUModel tunes the model of QEMU's pre-copy loop (migration/migration.c
// and migration/ram.c). Each pass sends the pages dirty at its start; at its
// end the dirty bitmap is synced (a MIGRATION_PASS event), and QEMU switches
// over once the dirty memory fits DowntimeLimit at the bandwidth measured in
// the pass. With AutoConverge, a sync more than Period after the last period
// boundary compares the bytes dirtied in the period with TriggerThreshold %
// of the bytes sent in it; the second time they exceed it (the count is not
// reset by a period below it) the vCPUs are throttled to ThrottleInitial %,
// then ThrottleIncrement more each time, up to ThrottleMax (QEMU's
// migration_trigger_throttle and mig_throttle_guest_down); and a timer
// forces a sync every SyncTimeslice when no pass ended meanwhile (QEMU
// 9.2's cpu_throttle_dirty_sync_timer), so a long pass still throttles.
type QEMUModel struct {
	DowntimeLimit     Time `json:"downtime_limit"` // downtime-limit: 300 ms
	AutoConverge      bool `json:"auto_converge"`
	ThrottleInitial   int  `json:"cpu_throttle_initial"`       // 20
	ThrottleIncrement int  `json:"cpu_throttle_increment"`     // 10
	ThrottleMax       int  `json:"max_cpu_throttle"`           // 99
	TriggerThreshold  int  `json:"throttle_trigger_threshold"` // 50
	Period            Time `json:"period"`                     // 1 s
	SyncTimeslice     Time `json:"sync_timeslice"`             // 5 s
}

// DefaultQEMUModel returns QEMU's defaults, with auto-converge on: without
// it QEMU never gives up on a VM that dirties faster than its copy, and the
// snapshot runs into its deadline.
func DefaultQEMUModel() QEMUModel {
	return QEMUModel{
		DowntimeLimit: 300 * time.Millisecond, AutoConverge: true,
		ThrottleInitial: 20, ThrottleIncrement: 10, ThrottleMax: 99, TriggerThreshold: 50,
		Period: time.Second, SyncTimeslice: 5 * time.Second,
	}
}

// XenModel tunes the model of libxc's save loop (tools/libs/guest/
// xg_sr_save.c, send_memory_live with simple_precopy_policy): the first pass
// sends every page, each later one the pages dirtied during the previous;
// after MaxIterations live passes, or once a pass found fewer than
// TargetDirty dirty pages (that pass is still sent live), the domain is
// suspended and the rest sent.
type XenModel struct {
	MaxIterations int   `json:"max_iterations"` // SPP_MAX_ITERATIONS: 5
	TargetDirty   int64 `json:"target_dirty"`   // SPP_TARGET_DIRTY_COUNT: 50
}

// DefaultXenModel returns libxc's defaults.
func DefaultXenModel() XenModel { return XenModel{MaxIterations: 5, TargetDirty: 50} }

// ModelForPolicy returns the hypervisor model and QEMU auto-converge setting
// that run, in Observed mode, what a Driven-mode stop policy name means:
// "xen" is libxc's loop, "qemu" QEMU's without auto-converge and
// "qemu-autoconverge" QEMU's with it.
func ModelForPolicy(policy string) (model string, autoConverge bool, err error) {
	switch policy {
	case "xen":
		return HypervisorXen, false, nil
	case "qemu":
		return HypervisorQEMU, false, nil
	case "qemu-autoconverge":
		return HypervisorQEMU, true, nil
	}
	return "", false, fmt.Errorf("unknown stop policy %q (want xen, qemu or qemu-autoconverge)", policy)
}

// validate reports the first field out of range.
func (q *QEMUModel) validate() error {
	pcts := []struct {
		name   string
		v      int
		lo, hi int
	}{
		{"cpu-throttle-initial", q.ThrottleInitial, 1, 99}, {"cpu-throttle-increment", q.ThrottleIncrement, 1, 99},
		{"max-cpu-throttle", q.ThrottleMax, 1, 99}, {"throttle-trigger-threshold", q.TriggerThreshold, 1, 100},
	}
	for _, p := range pcts {
		if p.v < p.lo || p.v > p.hi {
			return fmt.Errorf("%s: %d, want %d..%d", p.name, p.v, p.lo, p.hi)
		}
	}
	if err := checkDuration("downtime-limit", q.DowntimeLimit); err != nil {
		return err
	}
	for _, d := range []struct {
		name string
		v    Time
	}{{"throttle-period", q.Period}, {"sync-timeslice", q.SyncTimeslice}} {
		if d.v <= 0 {
			return fmt.Errorf("%s: %v, want a positive duration", d.name, d.v)
		}
		if err := checkDuration(d.name, d.v); err != nil {
			return err
		}
	}
	return nil
}

func (x *XenModel) validate() error {
	if x.MaxIterations < 1 || x.MaxIterations > 1<<20 {
		return fmt.Errorf("xen-max-iterations: %d, want 1..%d", x.MaxIterations, 1<<20)
	}
	if x.TargetDirty < 0 {
		return fmt.Errorf("xen-target-dirty: %d pages is negative", x.TargetDirty)
	}
	return nil
}
