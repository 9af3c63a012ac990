package core

import (
	"fmt"
	"time"
)

// VMID identifies a VM of a VNE: its index in Config.VMs.
type VMID int32

// HostID identifies a physical host: its index in Config.Hosts.
type HostID int32

// Epoch numbers snapshots. A VM is in epoch e-1 ("white", pre-snapshot) until
// its snapshot point for snapshot e and in epoch e ("red", post-snapshot)
// after it. Epochs let snapshots repeat without resetting colours.
type Epoch uint32

// TimerID names a timer the core asked for with SetTimer.
type TimerID uint32

// PageSize is the size of a guest memory page in bytes.
const PageSize = 4096

// Clock is the read-only time source of the core: the simulator's virtual
// time or a real backend's monotonic clock, as a duration since an origin
// chosen by the driver. Now must never go backwards.
type Clock interface {
	Now() time.Duration
}

// ManualClock is a Clock a driver sets explicitly (the simulator, tests).
type ManualClock struct{ T time.Duration }

// Now returns the time last set.
func (c *ManualClock) Now() time.Duration { return c.T }

// Set moves the clock to t. It panics if t is before the current time: a
// clock that runs backwards is a broken invariant of the driver.
func (c *ManualClock) Set(t time.Duration) {
	if t < c.T {
		panic(fmt.Sprintf("core: ManualClock set backwards from %v to %v", c.T, t))
	}
	c.T = t
}
