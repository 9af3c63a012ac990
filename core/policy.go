package core

import (
	"fmt"
	"time"
)

// RoundStats describes a VM's live copy after a round, for a StopPolicy.
// Before the first round Round is 0, Dirty equals MemPages and Sent is 0.
type RoundStats struct {
	Round     int
	Sent      int64 // pages sent in the round just finished
	Dirty     int64 // pages dirty now: what the next (or final) round sends
	Elapsed   time.Duration
	TotalSent int64 // pages sent in all rounds so far
	MemPages  int64
}

// Decision is a StopPolicy's verdict after a round.
type Decision struct {
	// Stop pauses the VM for the final round.
	Stop bool
	// Throttle, if non-negative, sets the VM's CPU throttle percentage.
	Throttle int
}

// StopPolicy decides when a pre-copy live copy stops iterating. A policy
// value may keep state across the rounds of one VM: the coordinator makes a
// fresh one per VM with a PolicyFactory.
type StopPolicy interface {
	Decide(s RoundStats) Decision
	String() string
}

// PolicyFactory makes a fresh StopPolicy for one VM's live copy.
type PolicyFactory func() StopPolicy

// XenPolicy is Xen's pre-copy stop condition (libxc's save loop): stop when
// fewer than MinDirty pages are dirty, after MaxRounds rounds, or once
// MaxFactor times the VM's memory has been sent.
type XenPolicy struct {
	MinDirty  int64 // 50 in Xen
	MaxRounds int   // 29 in old Xen, 5 in current libxc
	MaxFactor int64 // 3 in Xen
}

// DefaultXen returns the current libxc defaults.
func DefaultXen() *XenPolicy { return &XenPolicy{MinDirty: 50, MaxRounds: 5, MaxFactor: 3} }

// Decide implements StopPolicy.
func (p *XenPolicy) Decide(s RoundStats) Decision {
	stop := s.Round > 0 && (s.Dirty < p.MinDirty || s.Round >= p.MaxRounds || s.TotalSent >= p.MaxFactor*s.MemPages)
	return Decision{Stop: stop, Throttle: -1}
}

func (p *XenPolicy) String() string {
	return fmt.Sprintf("xen(min-dirty=%d,max-rounds=%d,max-factor=%d)", p.MinDirty, p.MaxRounds, p.MaxFactor)
}

// QEMUPolicy is QEMU's pre-copy stop condition: stop when the dirty pages fit
// in DowntimeLimit at the bandwidth measured in the last round. With
// AutoConverge, when the pages dirtied in a round exceed ThresholdPct of the
// pages sent in it for the second time (as QEMU's dirty_rate_high_cnt, a round
// below the threshold does not reset the count), the guest's CPU is throttled,
// starting at InitialPct and rising by IncrementPct up to MaxPct (QEMU's
// cpu-throttle-initial/-increment, max-cpu-throttle and
// throttle-trigger-threshold). QEMU itself never gives up; MaxRounds, if
// non-zero, forces the final pause after that many rounds.
type QEMUPolicy struct {
	DowntimeLimit time.Duration // QEMU's downtime-limit, 300 ms by default
	AutoConverge  bool
	InitialPct    int
	IncrementPct  int
	MaxPct        int
	ThresholdPct  int
	MaxRounds     int

	high     int
	throttle int
}

// DefaultQEMU returns QEMU's defaults, with auto-converge as given.
func DefaultQEMU(autoConverge bool) *QEMUPolicy {
	return &QEMUPolicy{
		DowntimeLimit: 300 * time.Millisecond, AutoConverge: autoConverge,
		InitialPct: 20, IncrementPct: 10, MaxPct: 99, ThresholdPct: 50,
	}
}

// Decide implements StopPolicy.
func (p *QEMUPolicy) Decide(s RoundStats) Decision {
	d := Decision{Throttle: -1}
	if s.Round == 0 {
		return d
	}
	if p.MaxRounds > 0 && s.Round >= p.MaxRounds {
		d.Stop = true
		return d
	}
	if s.Elapsed > 0 && s.Sent > 0 {
		bw := float64(s.Sent) / s.Elapsed.Seconds() // pages per second
		if float64(s.Dirty)/bw <= p.DowntimeLimit.Seconds() {
			d.Stop = true
			return d
		}
	} else if s.Dirty == 0 {
		d.Stop = true
		return d
	}
	if p.AutoConverge && s.Round > 1 {
		if s.Dirty*100 > s.Sent*int64(p.ThresholdPct) {
			p.high++
		}
		if p.high >= 2 {
			p.high = 0
			next := p.InitialPct
			if p.throttle > 0 {
				next = p.throttle + p.IncrementPct
			}
			if next > p.MaxPct {
				next = p.MaxPct
			}
			if next != p.throttle {
				p.throttle = next
				d.Throttle = next
			}
		}
	}
	return d
}

func (p *QEMUPolicy) String() string {
	return fmt.Sprintf("qemu(downtime-limit=%v,auto-converge=%t)", p.DowntimeLimit, p.AutoConverge)
}

// StopAndCopyPolicy stops before the first round: the VM is paused and
// copied in one pass.
type StopAndCopyPolicy struct{}

// Decide implements StopPolicy: always stop.
func (StopAndCopyPolicy) Decide(RoundStats) Decision { return Decision{Stop: true, Throttle: -1} }
func (StopAndCopyPolicy) String() string             { return "stop-and-copy" }

// ParsePolicy returns a factory for a named policy: "xen", "qemu" or
// "qemu-autoconverge".
func ParsePolicy(name string) (PolicyFactory, error) {
	switch name {
	case "xen":
		return func() StopPolicy { return DefaultXen() }, nil
	case "qemu":
		return func() StopPolicy { return DefaultQEMU(false) }, nil
	case "qemu-autoconverge":
		return func() StopPolicy { return DefaultQEMU(true) }, nil
	}
	return nil, fmt.Errorf("unknown stop policy %q (want xen, qemu or qemu-autoconverge)", name)
}
