package cut

import (
	"fmt"

	"github.com/vnsnap/vnsnap/core"
)

// Kind is the kind of a trace record.
type Kind uint8

// The record kinds.
const (
	// Send: VM sent frame Frame (Proto, Flow, Seq, Len, Ack describe it).
	Send Kind = iota + 1
	// Receive: frame Frame was delivered to VM.
	Receive
	// Drop: frame Frame, bound for VM, was dropped (by the colour rule, a full
	// queue or link loss). Reason says which.
	Drop
	// Log: the switch recorded frame Frame, bound for VM, as channel state.
	Log
	// Cut: VM passed its snapshot point, entering Epoch.
	Cut
)

// String returns the kind's name.
func (k Kind) String() string {
	switch k {
	case Send:
		return "send"
	case Receive:
		return "recv"
	case Drop:
		return "drop"
	case Log:
		return "log"
	case Cut:
		return "cut"
	default:
		return fmt.Sprintf("Kind(%d)", uint8(k))
	}
}

// Proto is a frame's transport protocol.
type Proto uint8

// The protocols.
const (
	Other Proto = iota
	TCP
	UDP
)

// DropReason says why a frame was dropped.
type DropReason uint8

// The drop reasons.
const (
	DropColour DropReason = iota + 1 // the colour rule (post-snapshot frame for a pre-snapshot VM)
	DropQueue                        // a full queue (link, hold queue, paused VM's ring)
	DropLoss                         // random link loss
)

// Record is one entry of a snapshot trace. Fields not used by a kind are zero.
type Record struct {
	Kind  Kind
	VM    core.VMID // sender (Send), receiver (Receive, Drop, Log) or the VM (Cut)
	Frame uint64    // frame id, unique in a trace
	Epoch core.Epoch
	// For Send: the transport details the checker needs to judge recovery.
	Proto Proto
	Flow  uint32 // a TCP connection direction or UDP flow, unique in a trace
	Seq   uint64 // first data byte's sequence number
	Len   uint32 // data bytes (0 for a pure ACK)
	Ack   uint64 // cumulative ACK carried (TCP), for the reverse direction
	// RevFlow is the flow whose data Ack acknowledges (TCP).
	RevFlow uint32
	Reason  DropReason
}

// String formats a record compactly for test output and logs.
func (r Record) String() string {
	switch r.Kind {
	case Send:
		return fmt.Sprintf("send f%d vm%d e%d proto=%d flow=%d seq=%d len=%d ack=%d", r.Frame, r.VM, r.Epoch, r.Proto, r.Flow, r.Seq, r.Len, r.Ack)
	case Cut:
		return fmt.Sprintf("cut vm%d e%d", r.VM, r.Epoch)
	case Drop:
		return fmt.Sprintf("drop f%d vm%d reason=%d", r.Frame, r.VM, r.Reason)
	default:
		return fmt.Sprintf("%s f%d vm%d", r.Kind, r.Frame, r.VM)
	}
}
