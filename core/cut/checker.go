package cut

import (
	"fmt"
	"sort"

	"github.com/vnsnap/vnsnap/core"
)

// Result is the checker's verdict on one snapshot (one epoch).
type Result struct {
	Epoch core.Epoch
	// Sent counts every frame sent in the trace.
	Sent int
	// Orphans counts frames received in the receiver's image but not sent in
	// the sender's image. Zero for a consistent snapshot.
	Orphans int
	// InTransit counts frames sent in the sender's image and not received in
	// the receiver's image; InTransit = Replayed + RecoveredByTCP + Lost.
	InTransit      int
	Replayed       int
	RecoveredByTCP int
	Lost           int
	// NetDropped counts the in-transit frames that the network dropped
	// (a full queue or link loss) without logging them: no switch saw them
	// arrive, so no algorithm could have recorded them. They are also
	// counted as recovered or lost.
	NetDropped int
	// Drops by reason, over the whole trace.
	DroppedColour, DroppedQueue, DroppedLoss int
	// MissingCuts lists VMs with no Cut record for Epoch: the snapshot is
	// incomplete and the other numbers are not a verdict.
	MissingCuts []core.VMID
	// OrphanFrames holds the ids of the first few orphans, for debugging.
	OrphanFrames []uint64
}

// Consistent reports whether every VM has a cut and there are no orphans.
func (r Result) Consistent() bool { return len(r.MissingCuts) == 0 && r.Orphans == 0 }

type sendInfo struct {
	sender  core.VMID
	inImage bool
	proto   Proto
	flow    uint32
	end     uint64 // Seq+Len
	dataLen uint32
	ack     uint64 // cumulative ACK carried (TCP)
	revFlow uint32 // the flow Ack acknowledges
}

type transit struct {
	dropped bool
	frame   uint64
	proto   Proto
	flow    uint32
	end     uint64
	len     uint32
}

const maxOrphanSamples = 8

// Checker classifies the frames of a trace against the cut of one epoch. Feed
// it every record in order with Observe, then call Result.
type Checker struct {
	epoch   core.Epoch
	cut     []bool
	sends   map[uint64]sendInfo
	logged  map[uint64]bool
	ackIn   map[uint32]uint64 // per data flow: highest ACK its sender received within its image
	transit []transit
	res     Result
	joined  bool
}

// NewJoinedChecker returns a checker that joins a trace already under way,
// before any VM has cut for epoch e: a receipt or drop of a frame it never
// saw sent is taken as a frame sent before it joined, so in its sender's
// image. Its data range is unknown, so a TCP frame of that kind found in
// transit counts as recovered by TCP (an ACK for it received before the
// sender's cut would make it lost, and the checker cannot see that); the
// Receive or Drop record's Proto says whether it is TCP.
func NewJoinedChecker(e core.Epoch, n int) *Checker {
	c := NewChecker(e, n)
	c.joined = true
	return c
}

// NewChecker returns a checker for snapshot epoch e of a VNE with n VMs.
func NewChecker(e core.Epoch, n int) *Checker {
	return &Checker{
		epoch:  e,
		cut:    make([]bool, n),
		sends:  make(map[uint64]sendInfo),
		logged: make(map[uint64]bool),
		ackIn:  make(map[uint32]uint64),
		res:    Result{Epoch: e},
	}
}

// Observe feeds the next record. It returns an error for a malformed trace: an
// unknown VM, a frame sent again before it was delivered or dropped, a receipt
// or drop of a frame not in flight (never sent, or already resolved), or a
// second cut of a VM for the checker's epoch. A resolved frame is forgotten
// (memory stays bounded), so an id reused after its frame was resolved is not
// detected.
func (c *Checker) Observe(r Record) error {
	if int(r.VM) < 0 || int(r.VM) >= len(c.cut) {
		return fmt.Errorf("cut: record %v: vm %d out of range [0,%d)", r, r.VM, len(c.cut))
	}
	switch r.Kind {
	case Cut:
		if r.Epoch != c.epoch {
			return nil
		}
		if c.cut[r.VM] {
			return fmt.Errorf("cut: vm %d cut twice for epoch %d", r.VM, r.Epoch)
		}
		c.cut[r.VM] = true
	case Send:
		if _, dup := c.sends[r.Frame]; dup {
			return fmt.Errorf("cut: frame %d sent twice", r.Frame)
		}
		c.res.Sent++
		c.sends[r.Frame] = sendInfo{
			sender: r.VM, inImage: !c.cut[r.VM], proto: r.Proto,
			flow: r.Flow, end: r.Seq + uint64(r.Len), dataLen: r.Len,
			ack: r.Ack, revFlow: r.RevFlow,
		}
	case Receive:
		s, ok := c.sends[r.Frame]
		if !ok && c.joined {
			s, ok = sendInfo{inImage: true, proto: r.Proto}, true
		}
		if !ok {
			return fmt.Errorf("cut: frame %d delivered to vm %d but never sent", r.Frame, r.VM)
		}
		delete(c.sends, r.Frame)
		recvIn := !c.cut[r.VM]
		switch {
		case recvIn && !s.inImage:
			c.res.Orphans++
			if len(c.res.OrphanFrames) < maxOrphanSamples {
				c.res.OrphanFrames = append(c.res.OrphanFrames, r.Frame)
			}
		case !recvIn && s.inImage:
			c.addTransit(r.Frame, s)
		}
		// The transport details are on the Send record (see Record), not on
		// the Receive.
		if recvIn && s.proto == TCP && s.ack > c.ackIn[s.revFlow] {
			c.ackIn[s.revFlow] = s.ack
		}
	case Drop:
		s, ok := c.sends[r.Frame]
		if !ok && c.joined {
			s, ok = sendInfo{inImage: true, proto: r.Proto}, true
		}
		if !ok {
			return fmt.Errorf("cut: frame %d dropped for vm %d but never sent (or already resolved)", r.Frame, r.VM)
		}
		delete(c.sends, r.Frame)
		switch r.Reason {
		case DropColour:
			c.res.DroppedColour++
		case DropQueue:
			c.res.DroppedQueue++
		default:
			c.res.DroppedLoss++
		}
		// A frame lost before its receiver's cut was lost by the network in
		// the original run too; only one lost after the cut was in the
		// channel at the cut.
		if s.inImage && c.cut[r.VM] {
			c.addTransit(r.Frame, s)
			c.transit[len(c.transit)-1].dropped = r.Reason != DropColour
		}
	case Log:
		c.logged[r.Frame] = true
	default:
		return fmt.Errorf("cut: unknown record kind %d", r.Kind)
	}
	return nil
}

func (c *Checker) addTransit(frame uint64, s sendInfo) {
	c.transit = append(c.transit, transit{frame: frame, proto: s.proto, flow: s.flow, end: s.end, len: s.dataLen})
}

// Result classifies the in-transit frames and returns the verdict. Frames
// sent in an image and never resolved by the end of the trace count as in
// transit. Result may be called more than once; it does not change the
// checker.
func (c *Checker) Result() Result {
	res := c.res
	res.OrphanFrames = append([]uint64(nil), c.res.OrphanFrames...)
	for vm, done := range c.cut {
		if !done {
			res.MissingCuts = append(res.MissingCuts, core.VMID(vm))
		}
	}
	all := append([]transit(nil), c.transit...)
	pending := make([]uint64, 0)
	for f, s := range c.sends {
		if s.inImage {
			pending = append(pending, f)
		}
	}
	sort.Slice(pending, func(i, j int) bool { return pending[i] < pending[j] })
	for _, f := range pending {
		s := c.sends[f]
		all = append(all, transit{frame: f, proto: s.proto, flow: s.flow, end: s.end, len: s.dataLen})
	}
	for _, t := range all {
		res.InTransit++
		if t.dropped && !c.logged[t.frame] {
			res.NetDropped++
		}
		switch {
		case c.logged[t.frame]:
			res.Replayed++
		case t.proto == TCP && (t.len == 0 || c.ackIn[t.flow] < t.end):
			res.RecoveredByTCP++
		default:
			res.Lost++
		}
	}
	return res
}
