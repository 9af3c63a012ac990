package core

import "fmt"

// Action is what a switch does with a frame at the receiving side.
type Action uint8

// The actions of the colour rule.
const (
	// Deliver the frame to the receiving VM.
	Deliver Action = iota
	// Drop the frame: delivering it would create an orphan.
	Drop
	// Hold the frame at the switch until the receiver reaches the frame's
	// epoch, then deliver it (VNsnapLog).
	Hold
	// DeliverLog delivers the frame and records it as channel state for
	// replay at restore (VNsnapLog, a pre-snapshot frame reaching a
	// post-snapshot VM).
	DeliverLog
	// DropFull drops a frame the rule would hold because the port's hold
	// queue is full. Only Port.Admit returns it; Rule never does.
	DropFull
)

// String returns the action's name.
func (a Action) String() string {
	switch a {
	case Deliver:
		return "deliver"
	case Drop:
		return "drop"
	case Hold:
		return "hold"
	case DeliverLog:
		return "deliver-log"
	case DropFull:
		return "drop-full"
	default:
		return fmt.Sprintf("Action(%d)", uint8(a))
	}
}

// Rule is the colour rule applied by the switch next to the receiver. frame is
// the epoch the sender was in when it sent the frame (its tag); dst is the
// receiver's current epoch.
//
// A frame from a later epoch than its receiver ("red to white") would be an
// orphan if delivered: VNsnap and the other consistent algorithms drop it (TCP
// retransmits it once the receiver has passed its snapshot point); VNsnapLog
// holds it; Uncoordinated delivers it. A frame from an earlier epoch ("white
// to red") is in transit across the cut: it is delivered, and VNsnapLog also
// records it.
func Rule(a Algorithm, frame, dst Epoch) Action {
	switch {
	case frame > dst:
		switch a {
		case Uncoordinated:
			return Deliver
		case VNsnapLog:
			return Hold
		default:
			return Drop
		}
	case frame < dst && a == VNsnapLog:
		return DeliverLog
	default:
		return Deliver
	}
}

// Port is the receiving-side state of one VM's switch port: the VM's epoch
// and the frames held for it. F is the switch's frame type. The zero Port is
// ready to use with epoch 0 and no bound on held frames.
type Port[F any] struct {
	epoch   Epoch
	held    []heldFrame[F]
	MaxHeld int // maximum frames held; beyond it Hold becomes Drop; 0 means 1024
}

type heldFrame[F any] struct {
	epoch Epoch
	f     F
}

// Epoch returns the port's current epoch.
func (p *Port[F]) Epoch() Epoch { return p.epoch }

// Admit applies Rule to a frame tagged with epoch e arriving for this port.
// For Hold it keeps the frame (returned later by SetEpoch); if the hold queue
// is full it returns DropFull instead.
func (p *Port[F]) Admit(a Algorithm, e Epoch, f F) Action {
	act := Rule(a, e, p.epoch)
	if act != Hold {
		return act
	}
	limit := p.MaxHeld
	if limit == 0 {
		limit = 1024
	}
	if len(p.held) >= limit {
		return DropFull
	}
	p.held = append(p.held, heldFrame[F]{e, f})
	return Hold
}

// Held returns the number of frames held.
func (p *Port[F]) Held() int { return len(p.held) }

// SetEpoch moves the port to epoch e (the VM's snapshot point) and returns the
// held frames that may now be delivered, in arrival order. Epochs never go
// backwards; setting an earlier epoch panics.
func (p *Port[F]) SetEpoch(e Epoch) []F {
	if e < p.epoch {
		panic(fmt.Sprintf("core: port epoch moved backwards from %d to %d", p.epoch, e))
	}
	p.epoch = e
	var out []F
	kept := p.held[:0]
	for _, h := range p.held {
		if h.epoch <= e {
			out = append(out, h.f)
		} else {
			kept = append(kept, h)
		}
	}
	p.held = kept
	return out
}
