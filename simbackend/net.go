package sim

import (
	"math/rand/v2"
	"time"

	"github.com/vnsnap/vnsnap/core"
	"github.com/vnsnap/vnsnap/core/cut"
)

// Wire sizes.
const (
	MSS        = 1448 // TCP payload per segment
	tcpHeader  = 66   // Ethernet + IP + TCP with timestamps
	udpHeader  = 42
	tunnelOver = 36 // outer IP/UDP and the tunnel header carrying epoch and frame id
)

// Frame is one Ethernet frame on the virtual network. The sender's switch
// tags it with the sender's epoch.
type Frame struct {
	ID       uint64
	Src, Dst core.VMID
	Epoch    core.Epoch
	Size     int
	Proto    cut.Proto
	Flow     uint32 // data flow of this direction
	RevFlow  uint32 // flow whose data Ack acknowledges
	Seq      uint64
	Len      uint32
	Ack      uint64
	Gen      uint32 // content generation of the payload (restore verification)
	// Sack holds the SACK blocks of the segment's TCP options (RFC 2018),
	// the first NSack of them, most recent first.
	Sack  [maxSackBlocks]seqRange
	NSack uint8
	// TSVal is when the segment was sent, TSEcr the TSVal of the last
	// data segment its sender received (the timestamps option, RFC 7323).
	TSVal, TSEcr Time
	Retx         bool // a retransmission
	Replayed     bool // delivered from the in-transit log at restore
	To           Receiver
}

// loggedFrame is a frame recorded as channel state of the snapshot whose
// epoch its receiver had reached.
type loggedFrame struct {
	f     *Frame
	epoch core.Epoch
}

// Receiver takes frames delivered to a VM (a TCP or UDP endpoint).
type Receiver interface {
	Input(f *Frame)
}

// Link is one direction of a host's attachment to the underlay: the uplink
// (frames to other hosts queue here, leave at the link's bandwidth and
// arrive after its latency) or the downlink (the switch port toward the
// host: frames from every other host queue here, so several senders into
// one host share its bandwidth). The queue is drop-tail in bytes.
type Link struct {
	Bandwidth float64 // bytes per second
	Latency   Time
	Queue     int     // bytes
	Loss      float64 // probability of losing a frame
	busyUntil Time
}

// NetConfig configures the network.
type NetConfig struct {
	Algorithm     core.Algorithm
	Link          Link // every host's uplink
	Downlink      Link // every host's downlink (HostConfig.downlink resolved)
	Local         Link // every host's software bridge between its own VMs
	TCP           TCPConfig
	SwitchLatency Time // a frame's time through a switch to a local VM
	MaxHeld       int  // vnsnap-log hold queue per port
	// admit is Config.admit.
	admit func(f *Frame, dst core.Epoch, act core.Action) core.Action
}

// Network is the VNE's virtual network: one switch per host applying the
// core's colour rule at the receiving side, tunnels over the hosts' links.
type Network struct {
	eng      *Engine
	cfg      NetConfig
	rng      *rand.Rand
	hostOf   []int
	links    []Link
	down     []Link
	local    []Link
	ports    []core.Port[*Frame]
	vms      []*VM
	frames   slots[*Frame]
	nextID   uint64
	observer func(cut.Record)
	// Log holds the frames recorded as channel state (vnsnap-log), per
	// destination VM, in arrival order, for replay at restore.
	Log     [][]loggedFrame
	Counter NetCounters
	onTCP   func(TCPEvent)
	// goodput counts the TCP payload bytes delivered in order to
	// applications, per GoodputBin of virtual time.
	goodput []float64
}

// NetCounters counts what the network did.
type NetCounters struct {
	Sent, Delivered, DroppedColour, DroppedQueue, DroppedLoss, Held, Logged uint64
	// DroppedDownlink counts the frames of DroppedQueue that a full
	// downlink queue dropped (incast), not the sender's uplink.
	DroppedDownlink uint64
}

const (
	evArrive   Kind = iota + 1 // a frame reaches its destination's switch
	evDownlink                 // a frame from another host reaches the destination host's downlink
)

// NewNetwork returns a network for VMs placed on hosts (hostOf[vm]).
func NewNetwork(eng *Engine, cfg NetConfig, hostOf []int, nHosts int) *Network {
	n := &Network{
		eng: eng, cfg: cfg, rng: eng.Rand(), hostOf: hostOf,
		links: make([]Link, nHosts), down: make([]Link, nHosts), local: make([]Link, nHosts),
		ports: make([]core.Port[*Frame], len(hostOf)), vms: make([]*VM, len(hostOf)), Log: make([][]loggedFrame, len(hostOf)),
	}
	for i := range n.links {
		n.links[i] = cfg.Link
		n.down[i] = cfg.Downlink
		n.local[i] = cfg.Local
	}
	for i := range n.ports {
		n.ports[i].MaxHeld = cfg.MaxHeld
	}
	return n
}

// Observe sets the function that receives every trace record.
func (n *Network) Observe(f func(cut.Record)) { n.observer = f }

func (n *Network) record(r cut.Record) {
	n.eng.Mix(uint64(r.Kind)<<56 ^ r.Frame<<8 ^ uint64(r.VM))
	if n.observer != nil {
		n.observer(r)
	}
}

// Epoch returns a VM's port epoch.
func (n *Network) Epoch(vm core.VMID) core.Epoch { return n.ports[vm].Epoch() }

// Send takes a frame from a VM's NIC: the local switch tags it with the
// sender's epoch, then forwards it to the destination's switch: over the
// host's bridge to a VM on the same host, else over the sender's uplink
// and the receiver's downlink.
func (n *Network) Send(f *Frame) {
	n.nextID++
	f.ID = n.nextID
	f.Epoch = n.ports[f.Src].Epoch()
	n.Counter.Sent++
	n.record(cut.Record{Kind: cut.Send, VM: f.Src, Frame: f.ID, Epoch: f.Epoch, Proto: f.Proto,
		Flow: f.Flow, Seq: f.Seq, Len: f.Len, Ack: f.Ack, RevFlow: f.RevFlow})
	src, dst := n.hostOf[f.Src], n.hostOf[f.Dst]
	if src == dst {
		if at, ok := n.enqueue(&n.local[src], f, 0); ok {
			n.eng.At(at+n.cfg.SwitchLatency, n, evArrive, n.frames.put(f))
		}
		return
	}
	if at, ok := n.enqueue(&n.links[src], f, tunnelOver); ok {
		n.eng.At(at, n, evDownlink, n.frames.put(f))
	}
}

// enqueue puts a frame of f.Size+overhead bytes on link l: dropped if the
// queue's backlog would exceed its capacity or by the link's random loss,
// else it leaves after the backlog and its own serialisation and arrives at
// the returned time, one latency later.
func (n *Network) enqueue(l *Link, f *Frame, overhead int) (Time, bool) {
	now := n.eng.Now()
	if l.busyUntil < now {
		l.busyUntil = now
	}
	if backlog := (l.busyUntil - now).Seconds() * l.Bandwidth; backlog+float64(f.Size) > float64(l.Queue) {
		n.drop(f, cut.DropQueue)
		return 0, false
	}
	if l.Loss > 0 && n.rng.Float64() < l.Loss {
		n.drop(f, cut.DropLoss)
		return 0, false
	}
	l.busyUntil = addSat(l.busyUntil, nanos(float64(f.Size+overhead)/l.Bandwidth*1e9))
	return l.busyUntil + l.Latency, true
}

func (n *Network) drop(f *Frame, why cut.DropReason) {
	switch why {
	case cut.DropColour:
		n.Counter.DroppedColour++
	case cut.DropQueue:
		n.Counter.DroppedQueue++
	default:
		n.Counter.DroppedLoss++
	}
	n.record(cut.Record{Kind: cut.Drop, VM: f.Dst, Frame: f.ID, Reason: why, Proto: f.Proto})
}

// Handle queues a frame arriving at its destination host's downlink, or
// delivers one arriving at its destination's switch.
func (n *Network) Handle(kind Kind, slot int64) {
	f := n.frames.take(slot)
	if kind == evDownlink {
		dq := n.Counter.DroppedQueue
		if at, ok := n.enqueue(&n.down[n.hostOf[f.Dst]], f, tunnelOver); ok {
			n.eng.At(at+n.cfg.SwitchLatency, n, evArrive, n.frames.put(f))
		} else if n.Counter.DroppedQueue > dq {
			n.Counter.DroppedDownlink++
		}
		return
	}
	act := n.ports[f.Dst].Admit(n.cfg.Algorithm, f.Epoch, f)
	if n.cfg.admit != nil {
		act = n.cfg.admit(f, n.ports[f.Dst].Epoch(), act)
	}
	switch act {
	case core.Deliver:
		n.toVM(f)
	case core.Drop:
		n.drop(f, cut.DropColour)
	case core.DropFull:
		n.drop(f, cut.DropQueue)
	case core.Hold:
		n.Counter.Held++
	case core.DeliverLog:
		n.Counter.Logged++
		n.record(cut.Record{Kind: cut.Log, VM: f.Dst, Frame: f.ID})
		n.Log[f.Dst] = append(n.Log[f.Dst], loggedFrame{f: f, epoch: n.ports[f.Dst].Epoch()})
		n.toVM(f)
	}
}

func (n *Network) toVM(f *Frame) {
	vm := n.vms[f.Dst]
	if !vm.accept(f) {
		n.drop(f, cut.DropQueue)
	}
}

// delivered records a frame's receipt by its VM.
func (n *Network) delivered(f *Frame) {
	n.Counter.Delivered++
	if f.Replayed {
		return
	}
	n.record(cut.Record{Kind: cut.Receive, VM: f.Dst, Frame: f.ID, Proto: f.Proto, Ack: f.Ack, RevFlow: f.RevFlow})
}

// SetEpoch moves a VM's port to epoch e (its snapshot point) and records the
// cut; frames held for it are handed to the VM (which is paused, so they are
// received after its snapshot point).
func (n *Network) SetEpoch(vm core.VMID, e core.Epoch) {
	n.record(cut.Record{Kind: cut.Cut, VM: vm, Epoch: e})
	for _, f := range n.ports[vm].SetEpoch(e) {
		n.toVM(f)
	}
}

// GoodputBin is the width of the bins of Result.GoodputMBps.
const GoodputBin = 100 * time.Millisecond

// addGoodput counts n bytes delivered in order now.
func (n *Network) addGoodput(bytes uint64) {
	b := int(n.eng.Now() / GoodputBin)
	for len(n.goodput) <= b {
		n.goodput = append(n.goodput, 0)
	}
	n.goodput[b] += float64(bytes)
}

// goodputMBps returns the goodput trace in MB/s per bin, from bin first on.
func (n *Network) goodputMBps(first int) []float64 {
	var out []float64
	for i := first; i < len(n.goodput); i++ {
		out = append(out, n.goodput[i]/GoodputBin.Seconds()/1e6)
	}
	return out
}

// slots is a table of values addressed by an int64 slot, with a free list,
// so that events can carry a value without allocating.
type slots[T any] struct {
	vals []T
	free []int64
}

func (s *slots[T]) put(v T) int64 {
	if k := len(s.free); k > 0 {
		i := s.free[k-1]
		s.free = s.free[:k-1]
		s.vals[i] = v
		return i
	}
	s.vals = append(s.vals, v)
	return int64(len(s.vals) - 1)
}

func (s *slots[T]) take(i int64) T {
	v := s.vals[i]
	var zero T
	s.vals[i] = zero
	s.free = append(s.free, i)
	return v
}
