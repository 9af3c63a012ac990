package core

import (
	"fmt"
	"sort"
	"strings"
)

// Algorithm is a distributed snapshot algorithm, selectable by name.
type Algorithm uint8

// The algorithms. The zero value is VNsnap.
const (
	// VNsnap: live pre-copy per VM; the switch tags frames with the sender's
	// epoch and drops a post-snapshot frame bound for a pre-snapshot VM.
	VNsnap Algorithm = iota
	// VNsnapLog: as VNsnap, but nothing is dropped: a post-snapshot frame for a
	// pre-snapshot VM is held at the switch until the receiver passes its
	// snapshot point, and pre-snapshot frames reaching post-snapshot VMs (the
	// channel state) are recorded for replay at restore.
	VNsnapLog
	// SyncFreeze: pause every VM, copy each one whole, resume all together
	// (Emulab's transparent checkpoints).
	SyncFreeze
	// StopCopy: each VM is paused for a whole one-pass copy, with colouring.
	StopCopy
	// COW: copy-on-write; the snapshot point is at the start (a pause of a few
	// milliseconds), pages are copied before their first write and the rest in
	// the background, with colouring.
	COW
	// Uncoordinated: live pre-copy per VM with no colouring. Expected to
	// produce orphans; it exists to show that the checker finds them.
	Uncoordinated
	numAlgorithms
)

var algorithmNames = [...]string{
	VNsnap:        "vnsnap",
	VNsnapLog:     "vnsnap-log",
	SyncFreeze:    "sync-freeze",
	StopCopy:      "stop-copy",
	COW:           "cow",
	Uncoordinated: "uncoordinated",
}

// Algorithms returns every algorithm, in a fixed order.
func Algorithms() []Algorithm {
	out := make([]Algorithm, numAlgorithms)
	for i := range out {
		out[i] = Algorithm(i)
	}
	return out
}

// String returns the algorithm's name as accepted by ParseAlgorithm.
func (a Algorithm) String() string {
	if a < numAlgorithms {
		return algorithmNames[a]
	}
	return fmt.Sprintf("Algorithm(%d)", uint8(a))
}

// ParseAlgorithm returns the algorithm with the given name, or an error that
// lists the valid names.
func ParseAlgorithm(s string) (Algorithm, error) {
	for i, n := range algorithmNames {
		if n == s {
			return Algorithm(i), nil
		}
	}
	names := append([]string(nil), algorithmNames[:]...)
	sort.Strings(names)
	return 0, fmt.Errorf("unknown algorithm %q (want one of %s)", s, strings.Join(names, ", "))
}

// Method returns how each VM's memory is copied under the algorithm.
func (a Algorithm) Method() Method {
	switch a {
	case VNsnap, VNsnapLog, Uncoordinated:
		return PreCopy
	case SyncFreeze, StopCopy:
		return StopAndCopy
	case COW:
		return CopyOnWrite
	default:
		panic(fmt.Sprintf("core: unknown algorithm %d", a))
	}
}

// Consistent reports whether the algorithm promises a consistent cut.
func (a Algorithm) Consistent() bool { return a != Uncoordinated }

// Method is how one VM's memory is copied.
type Method uint8

// The copy methods.
const (
	// PreCopy copies all pages while the VM runs, then the pages dirtied
	// meanwhile, round after round, until a stop policy says to pause for the
	// final round. The snapshot point is the final pause.
	PreCopy Method = iota
	// StopAndCopy pauses the VM first and copies everything in one pass.
	StopAndCopy
	// CopyOnWrite takes the snapshot point at the start, write-protects
	// memory, resumes the VM at once, and copies pages in the background
	// (a page about to be written is copied first).
	CopyOnWrite
)

// String returns the method's name.
func (m Method) String() string {
	switch m {
	case PreCopy:
		return "pre-copy"
	case StopAndCopy:
		return "stop-copy"
	case CopyOnWrite:
		return "cow"
	default:
		return fmt.Sprintf("Method(%d)", uint8(m))
	}
}

// Sink is where a VM's image goes while it is copied.
type Sink uint8

// The sinks.
const (
	// DiskSink writes the image through to disk as it arrives: copy rounds
	// are paced by disk bandwidth (VNsnap-disk).
	DiskSink Sink = iota
	// MemorySink holds the image in the host's RAM and writes it to disk
	// after the VM has resumed (VNsnap-memory): copy rounds run at memory
	// speed. It needs a RAM reservation the size of the VM (budget.go).
	MemorySink
)

// String returns "disk" or "memory".
func (s Sink) String() string {
	switch s {
	case DiskSink:
		return "disk"
	case MemorySink:
		return "memory"
	default:
		return fmt.Sprintf("Sink(%d)", uint8(s))
	}
}

// ParseSink parses "disk" or "memory".
func ParseSink(s string) (Sink, error) {
	switch s {
	case "disk":
		return DiskSink, nil
	case "memory":
		return MemorySink, nil
	}
	return 0, fmt.Errorf("unknown sink %q (want disk or memory)", s)
}
