package sim

import (
	"fmt"

	"github.com/vnsnap/vnsnap/core"
	"github.com/vnsnap/vnsnap/core/cut"
)

// Patterns of the simple traffic generator.
var Patterns = []string{"all-to-all", "ring", "pairs", "none"}

// flowCount returns the number of TCP flows of a traffic pattern among n VMs
// without building them (n*(n-1) for all-to-all fits an int64 for any n up
// to MaxVMs), or an error for an unknown pattern.
func flowCount(pattern string, n int) (int64, error) {
	m := int64(n)
	switch pattern {
	case "all-to-all":
		return m * (m - 1), nil
	case "ring":
		if n < 2 {
			return 0, nil
		}
		return m, nil
	case "pairs":
		return m / 2 * 2, nil
	case "none":
		return 0, nil
	}
	return 0, fmt.Errorf("unknown traffic pattern %q (want one of all-to-all, ring, pairs, none)", pattern)
}

// pairsFor returns the (src, dst) VM pairs of a traffic pattern.
func pairsFor(pattern string, n int) ([][2]int, error) {
	var out [][2]int
	switch pattern {
	case "all-to-all":
		for i := 0; i < n; i++ {
			for j := 0; j < n; j++ {
				if i != j {
					out = append(out, [2]int{i, j})
				}
			}
		}
	case "ring":
		if n < 2 {
			return nil, nil
		}
		for i := 0; i < n; i++ {
			out = append(out, [2]int{i, (i + 1) % n})
		}
	case "pairs":
		for i := 0; i+1 < n; i += 2 {
			out = append(out, [2]int{i, i + 1}, [2]int{i + 1, i})
		}
	case "none":
	default:
		return nil, fmt.Errorf("unknown traffic pattern %q (want one of all-to-all, ring, pairs, none)", pattern)
	}
	return out, nil
}

// Stream is the traffic generator's application on one TCP connection: the
// sender writes Rate bytes per second in ticks, bounded by a send buffer,
// until it is told to stop; the receiver reads everything at once. It
// measures the longest stall in in-order delivery.
type Stream struct {
	Src, Dst   core.VMID
	Out, In    *Conn // the sender's and the receiver's endpoints
	Rate       float64
	Tick       Time
	SendBuffer uint64
	phase      Time // delay of the first write
	stopAt     Time
	measure    Time // stalls count from here on
	last       Time // last in-order progress
	MaxStall   Time
	// FirstAfter is the first in-order progress at or after ResumeMark.
	ResumeMark Time
	FirstAfter Time
	progressed bool
}

const streamEvTick Kind = 1

func (s *Stream) start() {
	// Write at least a few segments per tick: thousands of slow flows
	// should not flood the event queue with tiny writes.
	if s.Rate > 0 {
		s.Tick = max(s.Tick, nanos(4*MSS/s.Rate*1e9))
	}
	s.In.OnDeliver = s.onDeliver
	s.Out.vm.After(s.phase, s, streamEvTick, 0)
}

// Handle runs a write tick.
func (s *Stream) Handle(Kind, int64) {
	now := s.Out.vm.eng.Now()
	if now >= s.stopAt {
		return
	}
	want := uint64(s.Rate * s.Tick.Seconds())
	if space := s.SendBuffer - min(s.SendBuffer, s.Out.Unacked()); want > space {
		want = space
	}
	s.Out.Write(want)
	s.Out.vm.After(s.Tick, s, streamEvTick, 0)
}

func (s *Stream) onDeliver(n uint64) {
	now := s.In.vm.eng.Now()
	if s.last >= s.measure && now-s.last > s.MaxStall {
		s.MaxStall = now - s.last
	}
	if s.ResumeMark > 0 && now >= s.ResumeMark && !s.progressed {
		s.FirstAfter, s.progressed = now, true
	}
	s.last = now
}

// Done reports whether the sender has stopped and every byte is delivered.
func (s *Stream) Done(now Time) bool {
	return now >= s.stopAt && s.In.Received() == s.Out.Written()
}

// stallAt returns the longest stall including the one still open at now.
func (s *Stream) stallAt(now Time) Time {
	m := s.MaxStall
	if !s.Done(now) && s.last >= s.measure && now-s.last > m {
		m = now - s.last
	}
	return m
}

// Datagrams sends a UDP datagram of Size bytes every Interval from Src to
// Dst; the receiving side counts them. UDP users accept loss.
type Datagrams struct {
	Src, Dst core.VMID
	Flow     uint32
	Size     int
	Interval Time
	vm       *VM
	stopAt   Time
	Sent     uint64
	Received uint64
}

// Handle sends a datagram.
func (d *Datagrams) Handle(Kind, int64) {
	if d.vm.eng.Now() >= d.stopAt {
		return
	}
	d.Sent++
	d.vm.Send(&Frame{Dst: d.Dst, Size: d.Size + udpHeader, Proto: cut.UDP, Flow: d.Flow, Len: uint32(d.Size), To: d})
	d.vm.After(d.Interval, d, 0, 0)
}

// Input counts a datagram delivered.
func (d *Datagrams) Input(*Frame) { d.Received++ }
