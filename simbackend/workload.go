package sim

import (
	"fmt"

	"github.com/vnsnap/vnsnap/core"
)

// Workload builds the applications of a simulated VNE. Build is called once
// for the original run and once more for a restored run, on a fresh World
// with the same config, so it must derive everything from the World (its
// config and its random streams) and keep no state of its own.
type Workload interface {
	// Name identifies the workload in results, e.g. "npb-cg-A-16".
	Name() string
	// Configure adjusts the VNE before it is built (memory size, dirty
	// rate); it may reject a config it cannot run on.
	Configure(cfg *Config) error
	// Build creates connections (World.Connect) and one App per VM
	// (World.SetApp) and returns the running instance.
	Build(w *World) (Instance, error)
}

// Instance is a built workload.
type Instance interface {
	// Finished reports whether every application has finished, and when
	// the last one did.
	Finished() (Time, bool)
	// Verify checks the workload's own result (every message arrived, every
	// piece verified).
	Verify() error
	// Report adds workload-specific numbers to a result.
	Report(res *Result)
}

// App is one VM's application. Its state is part of its VM's image: Capture
// is called at the VM's snapshot point, and a restored run builds fresh apps,
// calls Restore with the captured state and then Start.
type App interface {
	Start()
	Capture() any
	Restore(state any)
}

// Connect joins VMs a and b with a TCP connection and returns a's and b's
// endpoints. Connections must be made in the same order in every build.
func (w *World) Connect(a, b core.VMID) (*Conn, *Conn) {
	w.nextFlow += 2
	ca, cb := NewConnPair(w.VMs[a], w.VMs[b], w.nextFlow-1, w.nextFlow)
	w.conns[a] = append(w.conns[a], ca)
	w.conns[b] = append(w.conns[b], cb)
	return ca, cb
}

// SetApp installs the application of a VM.
func (w *World) SetApp(vm core.VMID, a App) {
	if w.apps[vm] != nil {
		panic(fmt.Sprintf("sim: vm %d has two apps", vm))
	}
	w.apps[vm] = a
}

// Now returns the current virtual time.
func (w *World) Now() Time { return w.Eng.Now() }

// Message is one application message on a Messenger.
type Message struct {
	Tag   int64
	Bytes uint64
}

type msgRec struct {
	end uint64 // stream offset just past the message
	msg Message
}

// Messenger frames application messages on one direction of a TCP
// connection. The sending side records each message's end offset in the
// stream; the receiving side learns a message has arrived when its in-order
// bytes pass that offset, as a real receiver parsing a length-prefixed
// stream would. The sender's list is sender state and the receiver's read
// position receiver state, so each is captured with its own VM's image.
type Messenger struct {
	Out    *Conn // sender's endpoint
	In     *Conn // receiver's endpoint
	sent   []msgRec
	next   int    // receiver: index of the next message to hand over
	recvAt uint64 // receiver: stream offset consumed
	// OnMessage is called on the receiving side for each complete message.
	OnMessage func(m Message)
}

// NewMessenger frames messages from out to in (in = out's peer).
func NewMessenger(out, in *Conn) *Messenger {
	m := &Messenger{Out: out, In: in}
	in.OnDeliver = func(uint64) { m.poll() }
	return m
}

// Send writes a message of m.Bytes bytes (at least one).
func (m *Messenger) Send(msg Message) {
	if msg.Bytes == 0 {
		msg.Bytes = 1
	}
	end := m.Out.Written() + msg.Bytes
	m.sent = append(m.sent, msgRec{end: end, msg: msg})
	m.Out.Write(msg.Bytes)
}

func (m *Messenger) poll() {
	got := m.In.Received()
	for m.next < len(m.sent) && m.sent[m.next].end <= got {
		rec := m.sent[m.next]
		m.next++
		m.recvAt = rec.end
		if m.OnMessage != nil {
			m.OnMessage(rec.msg)
		}
	}
}

// Pending returns the number of messages sent and not yet handed over.
func (m *Messenger) Pending() int { return len(m.sent) - m.next }

// SenderState and ReceiverState are the two halves of a Messenger's state.
type (
	SenderState   []msgRec
	ReceiverState struct {
		Next   int
		RecvAt uint64
	}
)

// CaptureSender returns the sender's half (its message boundaries).
func (m *Messenger) CaptureSender() SenderState { return append(SenderState(nil), m.sent...) }

// CaptureReceiver returns the receiver's half (its read position).
func (m *Messenger) CaptureReceiver() ReceiverState {
	return ReceiverState{Next: m.next, RecvAt: m.recvAt}
}

// RestoreSender and RestoreReceiver load the halves into a fresh Messenger.
func (m *Messenger) RestoreSender(s SenderState) { m.sent = append([]msgRec(nil), s...) }

// RestoreReceiver loads the receiver's half.
func (m *Messenger) RestoreReceiver(r ReceiverState) { m.next, m.recvAt = r.Next, r.RecvAt }

// TCPEvent is a TCP sender event, for timelines.
type TCPEvent struct {
	At        Time
	Flow      uint32
	Kind      string // "send", "retx", "timeout", "ack"
	Backoff   int
	CwndBytes float64
}
