package core

import (
	"fmt"
	"time"
)

// Event is something that happened, fed to Coordinator.Step. The set of
// events is closed: only this package's types implement it.
type Event interface {
	isEvent()
	fmt.Stringer
}

// Started asks the coordinator to begin the snapshot.
type Started struct{}

// RoundCopied reports a finished pre-copy round (Driven mode: the answer to
// CopyRound; Observed mode: a pass the hypervisor reports). Dirty is the
// number of pages dirtied meanwhile, to be sent next; Elapsed is the round's
// duration.
type RoundCopied struct {
	VM      VMID
	Round   int
	Sent    int64 // pages sent in this round
	Dirty   int64 // pages dirty now
	Elapsed time.Duration
}

// VMPaused reports that a VM is paused (the answer to PauseVM, or in
// Observed pre-copy the hypervisor's final pause).
type VMPaused struct{ VM VMID }

// FinalCopied reports that a VM's image is complete in its sink: the final
// round of pre-copy, the single pass of stop-and-copy, or the end of a
// copy-on-write background copy. Sent is the pages copied by that step.
type FinalCopied struct {
	VM   VMID
	Sent int64
}

// VMResumed reports that a VM runs again.
type VMResumed struct{ VM VMID }

// ImageFlushed reports that a memory-sink image has been written to disk.
type ImageFlushed struct{ VM VMID }

// TimerFired reports that a timer set with SetTimer expired.
type TimerFired struct{ ID TimerID }

// Failed reports that a command for VM failed; the snapshot is aborted.
// A backend stops a batch at its first failed command (see the failure
// contract in the package doc).
type Failed struct {
	VM  VMID
	Err error
}

// SnapshotFailed reports a failure that belongs to no VM: the backend's
// context was cancelled, the commit could not be recorded, or a command
// that concerns the whole VNE (Commit, SetTimer) failed. The snapshot is
// aborted.
type SnapshotFailed struct{ Err error }

// Committed reports that the snapshot's manifest is durably written.
type Committed struct{}

func (Started) isEvent()        {}
func (RoundCopied) isEvent()    {}
func (VMPaused) isEvent()       {}
func (FinalCopied) isEvent()    {}
func (VMResumed) isEvent()      {}
func (ImageFlushed) isEvent()   {}
func (TimerFired) isEvent()     {}
func (Failed) isEvent()         {}
func (SnapshotFailed) isEvent() {}
func (Committed) isEvent()      {}

func (Started) String() string { return "Started" }
func (e RoundCopied) String() string {
	return fmt.Sprintf("RoundCopied vm=%d round=%d sent=%d dirty=%d elapsed=%v", e.VM, e.Round, e.Sent, e.Dirty, e.Elapsed)
}
func (e VMPaused) String() string       { return fmt.Sprintf("VMPaused vm=%d", e.VM) }
func (e FinalCopied) String() string    { return fmt.Sprintf("FinalCopied vm=%d sent=%d", e.VM, e.Sent) }
func (e VMResumed) String() string      { return fmt.Sprintf("VMResumed vm=%d", e.VM) }
func (e ImageFlushed) String() string   { return fmt.Sprintf("ImageFlushed vm=%d", e.VM) }
func (e TimerFired) String() string     { return fmt.Sprintf("TimerFired id=%d", e.ID) }
func (e Failed) String() string         { return fmt.Sprintf("Failed vm=%d err=%v", e.VM, e.Err) }
func (e SnapshotFailed) String() string { return fmt.Sprintf("SnapshotFailed err=%v", e.Err) }
func (Committed) String() string        { return "Committed" }
