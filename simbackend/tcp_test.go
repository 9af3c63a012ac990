package sim

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/vnsnap/vnsnap/core"
)

// lab is a hand-built network for unit tests of the network and TCP: VMs
// placed on hosts as given, the default links, and TCP options as given.
type lab struct {
	eng *Engine
	net *Network
	vms []*VM
	n   uint32 // flows used
}

func newLab(hostOf []int, tcp TCPConfig, edit func(*NetConfig)) *lab {
	eng := NewEngine(1)
	d := DefaultConfig()
	nc := NetConfig{
		Algorithm: core.VNsnap, Link: d.Host.Link, Downlink: d.Host.downlink(), Local: d.Host.Local,
		SwitchLatency: 10 * time.Microsecond, MaxHeld: 4096, TCP: tcp,
	}
	if edit != nil {
		edit(&nc)
	}
	hosts := 0
	for _, h := range hostOf {
		hosts = max(hosts, h+1)
	}
	l := &lab{eng: eng, net: NewNetwork(eng, nc, hostOf, hosts)}
	for i, h := range hostOf {
		l.vms = append(l.vms, newVM(eng, l.net, core.VMID(i), h, NewMemory(16, 2, 0.9)))
	}
	return l
}

// conn connects VM a to VM b and returns the sender's and receiver's ends.
func (l *lab) conn(a, b int) (*Conn, *Conn) {
	l.n += 2
	return NewConnPair(l.vms[a], l.vms[b], l.n-1, l.n)
}

// run runs the lab until every pair has delivered everything written, or
// limit; it fails the test if the streams are incomplete.
func (l *lab) run(t *testing.T, limit Time, pairs ...[2]*Conn) {
	t.Helper()
	done := func() bool {
		for _, p := range pairs {
			if p[1].Received() < p[0].Written() {
				return false
			}
		}
		return true
	}
	if !l.eng.RunUntil(limit, done) {
		t.Fatalf("streams incomplete at %v", l.eng.Now())
	}
	for _, p := range pairs {
		if problem := VerifyStream(p[0], p[1]); problem != "" {
			t.Fatalf("stream: %s", problem)
		}
	}
}

// bigQueues makes the links' queues larger than any transfer of a test,
// so that nothing is lost.
func bigQueues(nc *NetConfig) { nc.Link.Queue, nc.Downlink.Queue = 64<<20, 64<<20 }

var (
	tcpPlain = TCPConfig{}
	tcpLinux = TCPConfig{SACK: true, DelayedACK: 40 * time.Millisecond}
)

// TestIncastSharesTheDownlink sends N bulk streams from N hosts into VMs on
// one host: together they get at most the receiving host's downlink rate,
// and the drops are at its downlink queue. The same senders into N
// different hosts get about N times as much, with no downlink drops.
func TestIncastSharesTheDownlink(t *testing.T) {
	const senders = 4
	const size = 8 << 20
	bw := DefaultConfig().Host.Link.Bandwidth
	for _, incast := range []bool{true, false} {
		t.Run(fmt.Sprintf("incast=%v", incast), func(t *testing.T) {
			// VMs 0..N-1 send, on hosts 1..N; receivers are VMs N..2N-1,
			// all on host 0 (incast) or on hosts N+1..2N.
			var hostOf []int
			for i := 0; i < senders; i++ {
				hostOf = append(hostOf, 1+i)
			}
			for i := 0; i < senders; i++ {
				if incast {
					hostOf = append(hostOf, 0)
				} else {
					hostOf = append(hostOf, senders+1+i)
				}
			}
			// Uplinks never drop: only the downlink is shared.
			l := newLab(hostOf, tcpLinux, func(nc *NetConfig) { nc.Link.Queue = 64 << 20 })
			var pairs [][2]*Conn
			for i := 0; i < senders; i++ {
				a, b := l.conn(i, senders+i)
				a.Write(size)
				pairs = append(pairs, [2]*Conn{a, b})
			}
			l.run(t, time.Minute, pairs...)
			elapsed := l.eng.Now().Seconds()
			goodput := float64(senders*size) / elapsed
			c := l.net.Counter
			if incast {
				// Every byte crossed the one downlink, headers and all.
				if goodput > bw {
					t.Errorf("goodput %.1f MB/s into one host, want at most its downlink's %.1f MB/s", goodput/1e6, bw/1e6)
				}
				if goodput < bw/2 {
					t.Errorf("goodput %.1f MB/s into one host, want most of its downlink's %.1f MB/s", goodput/1e6, bw/1e6)
				}
				if c.DroppedDownlink == 0 || c.DroppedDownlink != c.DroppedQueue {
					t.Errorf("%d frames dropped at the downlink of %d at queues, want some, all at the downlink", c.DroppedDownlink, c.DroppedQueue)
				}
				return
			}
			if goodput < 2*bw {
				t.Errorf("goodput %.1f MB/s into %d hosts, want well above one link's %.1f MB/s", goodput/1e6, senders, bw/1e6)
			}
			if c.DroppedDownlink != 0 {
				t.Errorf("%d frames dropped at downlinks without incast, want 0", c.DroppedDownlink)
			}
		})
	}
}

// TestDownlinkSerialises sends two frames from two hosts at once into a
// third: the second leaves the downlink one serialisation time after the
// first.
func TestDownlinkSerialises(t *testing.T) {
	l := newLab([]int{1, 2, 0}, tcpPlain, nil)
	var at []Time
	rec := recvFunc(func(*Frame) { at = append(at, l.eng.Now()) })
	const size = 1000
	for _, src := range []core.VMID{0, 1} {
		l.vms[src].Send(&Frame{Dst: 2, Size: size, To: rec})
	}
	l.eng.RunUntil(time.Second, nil)
	if len(at) != 2 {
		t.Fatalf("%d frames delivered, want 2", len(at))
	}
	want := nanos(float64(size+tunnelOver) / DefaultConfig().Host.Link.Bandwidth * 1e9)
	if got := at[1] - at[0]; got != want {
		t.Errorf("second frame %v after the first, want one downlink serialisation, %v", got, want)
	}
}

type recvFunc func(*Frame)

func (r recvFunc) Input(f *Frame) { r(f) }

// TestDelayedACKHalvesAcks runs one bulk transfer with and without delayed
// ACKs: without, one ACK per segment; with, one per two full segments
// after the 16 quick ACKs, plus at most one for a last odd segment.
func TestDelayedACKHalvesAcks(t *testing.T) {
	const size = 4 << 20 // a multiple of no MSS: the last segment is short
	segs := uint64((size + MSS - 1) / MSS)
	for _, tcp := range []TCPConfig{tcpPlain, {DelayedACK: 40 * time.Millisecond}} {
		t.Run(fmt.Sprintf("delack=%v", tcp.DelayedACK), func(t *testing.T) {
			l := newLab([]int{0, 1}, tcp, bigQueues)
			a, b := l.conn(0, 1)
			a.Write(size)
			l.run(t, time.Minute, [2]*Conn{a, b})
			l.eng.RunUntil(l.eng.Now()+time.Second, nil) // let a last delayed ACK go
			if a.Stats.Retransmits != 0 {
				t.Fatalf("%d retransmissions, want a lossless transfer", a.Stats.Retransmits)
			}
			got := b.Stats.Acks
			if tcp.DelayedACK == 0 {
				if got != segs {
					t.Errorf("%d ACKs for %d segments, want one each", got, segs)
				}
				return
			}
			lo := quickAcks + (segs-quickAcks)/2
			if got < lo || got > lo+1 {
				t.Errorf("%d ACKs for %d segments, want %d..%d (16 quick, then one per two)", got, segs, lo, lo+1)
			}
			if a.Unacked() != 0 {
				t.Errorf("%d bytes unacknowledged at the end, want 0", a.Unacked())
			}
		})
	}
}

// TestDelayedACKTimer checks when a lone segment is acknowledged: after the
// delayed-ACK timeout once the connection is past its quick ACKs; at once
// after a gap longer than the receiver's RTO (quick-ACK mode again).
func TestDelayedACKTimer(t *testing.T) {
	l := newLab([]int{0, 1}, tcpLinux, bigQueues)
	a, b := l.conn(0, 1)
	a.Write(1 << 20)
	l.run(t, time.Minute, [2]*Conn{a, b})
	rtt := a.st.SRTT
	var ackedAt Time
	a.OnAcked = func() { ackedAt = l.eng.Now() }
	lone := func(gap Time) Time {
		t.Helper()
		l.eng.RunUntil(l.eng.Now()+gap, nil)
		sent := l.eng.Now()
		a.Write(100)
		l.eng.RunUntil(sent+time.Second, func() bool { return a.Unacked() == 0 })
		if a.Unacked() != 0 {
			t.Fatalf("a lone segment unacknowledged after a second")
		}
		return ackedAt - sent
	}
	// 50 ms after the last data: below the receiver's RTO (at least 200 ms).
	if d := lone(50 * time.Millisecond); d < 40*time.Millisecond || d > 40*time.Millisecond+2*rtt {
		t.Errorf("lone segment after 50 ms acknowledged after %v, want the 40 ms timeout plus one RTT (%v)", d, rtt)
	}
	if d := lone(10 * time.Millisecond); d < 40*time.Millisecond || d > 40*time.Millisecond+2*rtt {
		t.Errorf("lone segment after 10 ms acknowledged after %v, want the 40 ms timeout plus one RTT (%v)", d, rtt)
	}
	if d := lone(time.Second); d > 2*rtt {
		t.Errorf("lone segment after a 1 s gap acknowledged after %v, want at once (quick-ACK mode), one RTT (%v)", d, rtt)
	}
}

// dropFirst returns an admit hook that drops the first transmission of the
// data segments starting at the given multiples of MSS on a flow.
func dropFirst(flow uint32, segs ...uint64) func(*Frame, core.Epoch, core.Action) core.Action {
	drop := map[uint64]bool{}
	for _, s := range segs {
		drop[s*MSS] = true
	}
	return func(f *Frame, _ core.Epoch, act core.Action) core.Action {
		if f.Flow == flow && f.Len > 0 && !f.Retx && drop[f.Seq] {
			return core.Drop
		}
		return act
	}
}

// recovery runs a bulk transfer that loses the given segments once and
// returns the sender, the time from the start of loss recovery to its end,
// and the propagation round trip.
func recovery(t *testing.T, tcp TCPConfig, lost ...uint64) (*Conn, Time) {
	t.Helper()
	l := newLab([]int{0, 1}, tcp, func(nc *NetConfig) { bigQueues(nc); nc.admit = dropFirst(1, lost...) })
	a, b := l.conn(0, 1)
	a.Write(2 << 20)
	var start, end Time
	watch := func() bool {
		switch {
		case a.st.InRecovery && start == 0:
			start = l.eng.Now()
		case !a.st.InRecovery && start != 0 && end == 0:
			end = l.eng.Now()
		}
		return b.Received() == a.Written()
	}
	if !l.eng.RunUntil(time.Minute, watch) {
		t.Fatalf("transfer incomplete at %v", l.eng.Now())
	}
	if problem := VerifyStream(a, b); problem != "" {
		t.Fatal(problem)
	}
	if start == 0 || end == 0 {
		t.Fatalf("loss recovery from %v to %v, want one that starts and ends", start, end)
	}
	return a, end - start
}

// TestSACKRecoversInOneRTT loses four segments of one window: with SACK the
// sender retransmits all four in the first round trip of recovery; NewReno
// learns of one hole per partial ACK and needs a round trip each. Neither
// times out, and SACK retransmits exactly what was lost.
func TestSACKRecoversInOneRTT(t *testing.T) {
	lost := []uint64{40, 43, 46, 49} // in the fourth flight of slow start
	// A round trip is at least the propagation both ways.
	d := DefaultConfig().Host.Link.Latency + 10*time.Microsecond
	minRTT := 2 * d
	for _, delack := range []Time{0, 40 * time.Millisecond} {
		t.Run(fmt.Sprintf("delack=%v", delack), func(t *testing.T) {
			sk, sackTime := recovery(t, TCPConfig{SACK: true, DelayedACK: delack}, lost...)
			nr, renoTime := recovery(t, TCPConfig{DelayedACK: delack}, lost...)
			for name, c := range map[string]*Conn{"sack": sk, "newreno": nr} {
				if c.Stats.Timeouts != 0 {
					t.Errorf("%s: %d timeouts, want none", name, c.Stats.Timeouts)
				}
				if c.Stats.FastRetransmits != 1 {
					t.Errorf("%s: %d recoveries, want 1", name, c.Stats.FastRetransmits)
				}
			}
			if sk.Stats.Retransmits != uint64(len(lost)) {
				t.Errorf("sack: %d retransmissions, want exactly the %d lost", sk.Stats.Retransmits, len(lost))
			}
			if renoTime < Time(len(lost)-1)*minRTT {
				t.Errorf("newreno recovered in %v, want at least %d round trips of %v", renoTime, len(lost)-1, minRTT)
			}
			if sackTime*2 > renoTime {
				t.Errorf("sack recovered in %v, newreno in %v; want sack in under half the time", sackTime, renoTime)
			}
			t.Logf("recovery: sack %v, newreno %v (round trip at least %v)", sackTime, renoTime, minRTT)
		})
	}
}

// TestSACKChangesNothingWithoutLoss runs the same lossless transfer with
// and without SACK: the traces must be identical (no SACK block is ever
// sent, so no byte or event differs).
func TestSACKChangesNothingWithoutLoss(t *testing.T) {
	hash := func(tcp TCPConfig) (uint64, TCPStats) {
		l := newLab([]int{0, 1, 1}, tcp, bigQueues)
		a, b := l.conn(0, 1)
		c, d := l.conn(2, 0)
		a.Write(3 << 20)
		c.Write(1 << 20)
		l.run(t, time.Minute, [2]*Conn{a, b}, [2]*Conn{c, d})
		if a.Stats.Retransmits+c.Stats.Retransmits != 0 {
			t.Fatalf("%d retransmissions, want a lossless transfer", a.Stats.Retransmits+c.Stats.Retransmits)
		}
		return l.eng.Hash(), a.Stats
	}
	for _, delack := range []Time{0, 40 * time.Millisecond} {
		h1, s1 := hash(TCPConfig{SACK: true, DelayedACK: delack})
		h2, s2 := hash(TCPConfig{DelayedACK: delack})
		if h1 != h2 {
			t.Errorf("delack %v: trace hash %x with SACK, %x without; want equal", delack, h1, h2)
		}
		if d := cmp.Diff(s2, s1); d != "" {
			t.Errorf("delack %v: sender stats differ (-newreno +sack):\n%s", delack, d)
		}
	}
}

// TestSACKResendsALostRetransmission loses one segment and its first
// retransmission: with SACK the sender sees segments sent after the
// retransmission arrive (their timestamps echoed) and sends it again
// without a timeout; NewReno has nothing to go on but its RTO.
func TestSACKResendsALostRetransmission(t *testing.T) {
	const lost = 40 * MSS
	run := func(tcp TCPConfig) *Conn {
		seen := 0
		drop := func(f *Frame, _ core.Epoch, act core.Action) core.Action {
			if f.Flow == 1 && f.Len > 0 && f.Seq == lost && seen < 2 {
				seen++
				return core.Drop
			}
			return act
		}
		l := newLab([]int{0, 1}, tcp, func(nc *NetConfig) { bigQueues(nc); nc.admit = drop })
		a, b := l.conn(0, 1)
		a.Write(2 << 20)
		l.run(t, time.Minute, [2]*Conn{a, b})
		return a
	}
	sk, nr := run(tcpLinux), run(TCPConfig{DelayedACK: 40 * time.Millisecond})
	if sk.Stats.Timeouts != 0 || sk.Stats.Retransmits != 2 {
		t.Errorf("sack: %d timeouts and %d retransmissions, want 0 and 2 (the segment twice)", sk.Stats.Timeouts, sk.Stats.Retransmits)
	}
	if nr.Stats.Timeouts == 0 {
		t.Errorf("newreno: no timeout, want one to recover a lost retransmission")
	}
}

// TestSACKUnderCongestion overflows a drop-tail queue with slow start (two
// bulk transfers crossing, data and ACKs sharing the uplinks): SACK recovery
// with PRR and lost-retransmission detection gets through without a
// timeout and retransmits less than NewReno.
func TestSACKUnderCongestion(t *testing.T) {
	run := func(tcp TCPConfig) *Conn {
		l := newLab([]int{0, 1, 1}, tcp, nil)
		a, b := l.conn(0, 1)
		c, d := l.conn(2, 0)
		a.Write(30 << 20)
		c.Write(10 << 20)
		l.run(t, time.Minute, [2]*Conn{a, b}, [2]*Conn{c, d})
		return a
	}
	sk, nr := run(tcpLinux), run(TCPConfig{DelayedACK: 40 * time.Millisecond})
	if sk.Stats.FastRetransmits == 0 {
		t.Fatalf("sack: no loss recovery, want the queue to overflow")
	}
	if sk.Stats.Timeouts != 0 {
		t.Errorf("sack: %d timeouts, want 0", sk.Stats.Timeouts)
	}
	if sk.Stats.Retransmits >= nr.Stats.Retransmits {
		t.Errorf("retransmissions: sack %d, newreno %d; want fewer with sack", sk.Stats.Retransmits, nr.Stats.Retransmits)
	}
}
