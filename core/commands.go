package core

import (
	"fmt"
	"time"
)

// Command is something the core asks a backend to do. A backend executes the
// commands of one Step in order and stops at the first that fails, reporting
// it with Failed or SnapshotFailed (the failure contract in the package doc).
// The set is closed: only this package's types implement it.
type Command interface {
	isCommand()
	fmt.Stringer
}

// CopyRound (Driven mode) asks the backend to copy pages of a running VM into
// sink: every page if All, else the pages dirtied since the previous round.
// Answered by RoundCopied.
type CopyRound struct {
	VM    VMID
	Round int
	All   bool
	Sink  Sink
}

// StartLiveCopy (Observed mode) asks the hypervisor to start its own
// pre-copy loop into sink and to stop at the final pause (QEMU's
// pause-before-switchover) so the core sees VMPaused before the final round.
type StartLiveCopy struct {
	VM   VMID
	Sink Sink
}

// PauseVM asks the backend to pause a VM. Answered by VMPaused.
type PauseVM struct{ VM VMID }

// SetColour moves a VM's switch port to Epoch: the VM's snapshot point. It is
// issued while the VM is paused, before it runs again.
type SetColour struct {
	VM    VMID
	Epoch Epoch
}

// FreezeDisk takes a copy-on-write snapshot of a paused VM's disk at its
// snapshot point (a qcow2 overlay on a real backend).
type FreezeDisk struct{ VM VMID }

// CopyFinal asks the backend to copy, while the VM is paused, what remains:
// the last dirty pages and device state (pre-copy; Observed mode: let the
// hypervisor finish), or everything (stop-and-copy). Answered by FinalCopied.
type CopyFinal struct {
	VM   VMID
	All  bool
	Sink Sink
}

// ProtectMemory starts a copy-on-write copy of a paused VM: memory is
// write-protected now (the snapshot point) and copied in the background
// after resume. Answered by FinalCopied when the copy is complete.
type ProtectMemory struct {
	VM   VMID
	Sink Sink
}

// ResumeVM asks the backend to let a paused VM run. Answered by VMResumed.
type ResumeVM struct{ VM VMID }

// ThrottleVM sets a VM's CPU throttle (QEMU's auto-converge) to Percent of
// its CPU time taken away; 0 removes it.
type ThrottleVM struct {
	VM      VMID
	Percent int
}

// FlushImage asks the memory sink to write a VM's image to disk. Answered by
// ImageFlushed.
type FlushImage struct{ VM VMID }

// CancelCopy stops any copy in progress for a VM (abort).
type CancelCopy struct{ VM VMID }

// SetTimer asks for TimerFired{ID} at time At.
type SetTimer struct {
	ID TimerID
	At time.Duration
}

// CancelTimer cancels a timer; a TimerFired already queued is ignored, and
// cancelling a timer that is not set is a no-op.
type CancelTimer struct{ ID TimerID }

// Commit asks the backend to record the snapshot: every image is complete;
// write the manifest last. Answered by Committed.
type Commit struct{ Epoch Epoch }

// Abort tells the backend the snapshot is abandoned: discard every image of
// Epoch; record nothing. Every VM has been (or is being) resumed.
type Abort struct {
	Epoch  Epoch
	Reason string
}

// VMCommand is a command that concerns one VM. Backends use Target to route
// it and to name the VM in a Failed event when it fails.
type VMCommand interface {
	Command
	Target() VMID
}

// Target returns the VM the command concerns.
func (c CopyRound) Target() VMID     { return c.VM }
func (c StartLiveCopy) Target() VMID { return c.VM }
func (c PauseVM) Target() VMID       { return c.VM }
func (c SetColour) Target() VMID     { return c.VM }
func (c FreezeDisk) Target() VMID    { return c.VM }
func (c CopyFinal) Target() VMID     { return c.VM }
func (c ProtectMemory) Target() VMID { return c.VM }
func (c ResumeVM) Target() VMID      { return c.VM }
func (c ThrottleVM) Target() VMID    { return c.VM }
func (c FlushImage) Target() VMID    { return c.VM }
func (c CancelCopy) Target() VMID    { return c.VM }

func (CopyRound) isCommand()     {}
func (StartLiveCopy) isCommand() {}
func (PauseVM) isCommand()       {}
func (SetColour) isCommand()     {}
func (FreezeDisk) isCommand()    {}
func (CopyFinal) isCommand()     {}
func (ProtectMemory) isCommand() {}
func (ResumeVM) isCommand()      {}
func (ThrottleVM) isCommand()    {}
func (FlushImage) isCommand()    {}
func (CancelCopy) isCommand()    {}
func (SetTimer) isCommand()      {}
func (CancelTimer) isCommand()   {}
func (Commit) isCommand()        {}
func (Abort) isCommand()         {}

func (c CopyRound) String() string {
	return fmt.Sprintf("CopyRound vm=%d round=%d all=%t sink=%s", c.VM, c.Round, c.All, c.Sink)
}
func (c StartLiveCopy) String() string {
	return fmt.Sprintf("StartLiveCopy vm=%d sink=%s", c.VM, c.Sink)
}
func (c PauseVM) String() string    { return fmt.Sprintf("PauseVM vm=%d", c.VM) }
func (c SetColour) String() string  { return fmt.Sprintf("SetColour vm=%d epoch=%d", c.VM, c.Epoch) }
func (c FreezeDisk) String() string { return fmt.Sprintf("FreezeDisk vm=%d", c.VM) }
func (c CopyFinal) String() string {
	return fmt.Sprintf("CopyFinal vm=%d all=%t sink=%s", c.VM, c.All, c.Sink)
}
func (c ProtectMemory) String() string {
	return fmt.Sprintf("ProtectMemory vm=%d sink=%s", c.VM, c.Sink)
}
func (c ResumeVM) String() string { return fmt.Sprintf("ResumeVM vm=%d", c.VM) }
func (c ThrottleVM) String() string {
	return fmt.Sprintf("ThrottleVM vm=%d percent=%d", c.VM, c.Percent)
}
func (c FlushImage) String() string  { return fmt.Sprintf("FlushImage vm=%d", c.VM) }
func (c CancelCopy) String() string  { return fmt.Sprintf("CancelCopy vm=%d", c.VM) }
func (c SetTimer) String() string    { return fmt.Sprintf("SetTimer id=%d at=%v", c.ID, c.At) }
func (c CancelTimer) String() string { return fmt.Sprintf("CancelTimer id=%d", c.ID) }
func (c Commit) String() string      { return fmt.Sprintf("Commit epoch=%d", c.Epoch) }
func (c Abort) String() string       { return fmt.Sprintf("Abort epoch=%d reason=%q", c.Epoch, c.Reason) }
