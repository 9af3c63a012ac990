package cut_test

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/vnsnap/vnsnap/core"
	"github.com/vnsnap/vnsnap/core/cut"
)

// Trace builders. Transport details go on the Send record only, as Record
// documents.

func udp(f uint64, from core.VMID) cut.Record {
	return cut.Record{Kind: cut.Send, VM: from, Frame: f, Proto: cut.UDP, Flow: 99, Len: 100}
}

// tcp is a segment of flow carrying data [seq, seq+n) and a cumulative ack
// for flow rev.
func tcp(f uint64, from core.VMID, flow uint32, seq uint64, n uint32, ack uint64, rev uint32) cut.Record {
	return cut.Record{Kind: cut.Send, VM: from, Frame: f, Proto: cut.TCP, Flow: flow, Seq: seq, Len: n, Ack: ack, RevFlow: rev}
}

func recv(f uint64, to core.VMID) cut.Record {
	return cut.Record{Kind: cut.Receive, VM: to, Frame: f}
}

func drop(f uint64, to core.VMID, why cut.DropReason) cut.Record {
	return cut.Record{Kind: cut.Drop, VM: to, Frame: f, Reason: why}
}

func logged(f uint64, to core.VMID) cut.Record {
	return cut.Record{Kind: cut.Log, VM: to, Frame: f}
}

func cutAt(vm core.VMID, e core.Epoch) cut.Record {
	return cut.Record{Kind: cut.Cut, VM: vm, Epoch: e}
}

func check(t *testing.T, e core.Epoch, n int, trace []cut.Record) cut.Result {
	t.Helper()
	c := cut.NewChecker(e, n)
	for i, r := range trace {
		if err := c.Observe(r); err != nil {
			t.Fatalf("record %d (%v): %v", i, r, err)
		}
	}
	return c.Result()
}

var equateEmpty = cmpopts.EquateEmpty()

func TestCheckerTraces(t *testing.T) {
	const e = 1
	tests := []struct {
		name  string
		trace []cut.Record
		want  cut.Result
	}{
		{
			name: "before both cuts",
			trace: []cut.Record{
				udp(1, 0), recv(1, 1), cutAt(0, e), cutAt(1, e),
			},
			want: cut.Result{Sent: 1},
		},
		{
			name: "after both cuts",
			trace: []cut.Record{
				cutAt(0, e), cutAt(1, e), udp(1, 0), recv(1, 1), udp(2, 1),
			},
			want: cut.Result{Sent: 2},
		},
		{
			name: "orphan",
			trace: []cut.Record{
				cutAt(0, e), udp(1, 0), recv(1, 1), cutAt(1, e),
			},
			want: cut.Result{Sent: 1, Orphans: 1, OrphanFrames: []uint64{1}},
		},
		{
			name: "post-snapshot frame dropped for a pre-snapshot VM",
			trace: []cut.Record{
				cutAt(0, e), udp(1, 0), drop(1, 1, cut.DropColour), cutAt(1, e),
			},
			want: cut.Result{Sent: 1, DroppedColour: 1},
		},
		{
			name: "in transit, delivered after the receiver's cut",
			trace: []cut.Record{
				udp(1, 0), cutAt(0, e), cutAt(1, e), recv(1, 1),
			},
			want: cut.Result{Sent: 1, InTransit: 1, Lost: 1},
		},
		{
			name: "dropped after the receiver's cut is in transit",
			trace: []cut.Record{
				udp(1, 0), cutAt(1, e), drop(1, 1, cut.DropQueue), cutAt(0, e),
			},
			want: cut.Result{Sent: 1, InTransit: 1, Lost: 1, NetDropped: 1, DroppedQueue: 1},
		},
		{
			name: "logged, then dropped after the receiver's cut, is replayed",
			trace: []cut.Record{
				udp(1, 0), cutAt(1, e), logged(1, 1), drop(1, 1, cut.DropQueue), cutAt(0, e),
			},
			want: cut.Result{Sent: 1, InTransit: 1, Replayed: 1, DroppedQueue: 1},
		},
		{
			name: "dropped by the colour rule after the receiver's cut is not a network drop",
			trace: []cut.Record{
				udp(1, 0), cutAt(1, e), drop(1, 1, cut.DropColour), cutAt(0, e),
			},
			want: cut.Result{Sent: 1, InTransit: 1, Lost: 1, DroppedColour: 1},
		},
		{
			name: "dropped before the receiver's cut was lost in the run itself",
			trace: []cut.Record{
				udp(1, 0), drop(1, 1, cut.DropLoss), cutAt(1, e), cutAt(0, e),
			},
			want: cut.Result{Sent: 1, DroppedLoss: 1},
		},
		{
			name: "logged and replayed",
			trace: []cut.Record{
				udp(1, 0), cutAt(0, e), cutAt(1, e), logged(1, 1), recv(1, 1),
			},
			want: cut.Result{Sent: 1, InTransit: 1, Replayed: 1},
		},
		{
			name: "TCP data unacked in the sender's image is retransmitted",
			trace: []cut.Record{
				tcp(1, 0, 1, 1000, 100, 0, 2), cutAt(0, e), cutAt(1, e), recv(1, 1),
				// The ACK is sent and received after both cuts.
				tcp(2, 1, 2, 500, 0, 1100, 1), recv(2, 0),
			},
			want: cut.Result{Sent: 2, InTransit: 1, RecoveredByTCP: 1},
		},
		{
			name: "TCP data partly acked in the sender's image is retransmitted",
			trace: []cut.Record{
				tcp(1, 0, 1, 1000, 100, 0, 2), cutAt(1, e), recv(1, 1),
				tcp(2, 1, 2, 500, 0, 1050, 1), recv(2, 0), cutAt(0, e),
			},
			want: cut.Result{Sent: 2, Orphans: 1, OrphanFrames: []uint64{2}, InTransit: 1, RecoveredByTCP: 1},
		},
		{
			name: "TCP data acked in the sender's image is lost",
			trace: []cut.Record{
				tcp(1, 0, 1, 1000, 100, 0, 2), cutAt(1, e), recv(1, 1),
				// vm1's ACK, sent after its cut, reaches vm0 before vm0's
				// cut: an orphan, and vm0's image believes 1000..1100 arrived.
				tcp(2, 1, 2, 500, 0, 1100, 1), recv(2, 0), cutAt(0, e),
			},
			want: cut.Result{Sent: 2, Orphans: 1, OrphanFrames: []uint64{2}, InTransit: 1, Lost: 1},
		},
		{
			name: "an ACK received after the data sender's cut does not count",
			trace: []cut.Record{
				tcp(1, 0, 1, 1000, 100, 0, 2), cutAt(1, e), recv(1, 1),
				tcp(2, 1, 2, 500, 0, 1100, 1), cutAt(0, e), recv(2, 0),
			},
			want: cut.Result{Sent: 2, InTransit: 1, RecoveredByTCP: 1},
		},
		{
			name: "an ACK for another flow does not count",
			trace: []cut.Record{
				tcp(1, 0, 1, 1000, 100, 0, 2), cutAt(1, e), recv(1, 1),
				tcp(2, 1, 4, 500, 0, 1100, 3), recv(2, 0), cutAt(0, e),
			},
			want: cut.Result{Sent: 2, Orphans: 1, OrphanFrames: []uint64{2}, InTransit: 1, RecoveredByTCP: 1},
		},
		{
			name: "a pure ACK in transit is regenerated",
			trace: []cut.Record{
				tcp(1, 1, 2, 500, 0, 1100, 1), cutAt(1, e), cutAt(0, e), recv(1, 0),
			},
			want: cut.Result{Sent: 1, InTransit: 1, RecoveredByTCP: 1},
		},
		{
			name: "UDP in transit is lost",
			trace: []cut.Record{
				udp(1, 0), udp(2, 1), cutAt(0, e), cutAt(1, e), recv(2, 0), drop(1, 1, cut.DropLoss),
			},
			want: cut.Result{Sent: 2, InTransit: 2, Lost: 2, NetDropped: 1, DroppedLoss: 1},
		},
		{
			name: "other protocols in transit are lost",
			trace: []cut.Record{
				{Kind: cut.Send, VM: 0, Frame: 1, Proto: cut.Other}, cutAt(0, e), cutAt(1, e), recv(1, 1),
			},
			want: cut.Result{Sent: 1, InTransit: 1, Lost: 1},
		},
		{
			name: "never resolved",
			trace: []cut.Record{
				// 1 and 2 sent in the image, never delivered: in transit.
				// 3 sent after the cut: not in any image.
				udp(1, 0), tcp(2, 0, 1, 0, 100, 0, 2), cutAt(0, e), udp(3, 0), cutAt(1, e),
			},
			want: cut.Result{Sent: 3, InTransit: 2, Lost: 1, RecoveredByTCP: 1},
		},
		{
			name: "missing cut",
			trace: []cut.Record{
				udp(1, 0), cutAt(0, e), cutAt(1, e+1), cutAt(1, e-1), recv(1, 1),
			},
			want: cut.Result{Sent: 1, MissingCuts: []core.VMID{1}},
		},
		{
			name:  "no cuts at all",
			trace: []cut.Record{udp(1, 0), recv(1, 1)},
			want:  cut.Result{Sent: 1, MissingCuts: []core.VMID{0, 1}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.want.Epoch = e
			got := check(t, e, 2, tt.trace)
			if diff := cmp.Diff(tt.want, got, equateEmpty); diff != "" {
				t.Errorf("Result (-want +got):\n%s", diff)
			}
			if got.InTransit != got.Replayed+got.RecoveredByTCP+got.Lost {
				t.Errorf("got InTransit %d, want Replayed+RecoveredByTCP+Lost = %d",
					got.InTransit, got.Replayed+got.RecoveredByTCP+got.Lost)
			}
			wantOK := tt.want.Orphans == 0 && len(tt.want.MissingCuts) == 0
			if got.Consistent() != wantOK {
				t.Errorf("Consistent() = %t, want %t", got.Consistent(), wantOK)
			}
		})
	}
}

func TestCheckerOrphanSamples(t *testing.T) {
	trace := []cut.Record{cutAt(0, 3)}
	for f := uint64(1); f <= 10; f++ {
		trace = append(trace, udp(f, 0), recv(f, 1))
	}
	trace = append(trace, cutAt(1, 3))
	got := check(t, 3, 2, trace)
	if got.Orphans != 10 {
		t.Errorf("got %d orphans, want 10", got.Orphans)
	}
	if diff := cmp.Diff([]uint64{1, 2, 3, 4, 5, 6, 7, 8}, got.OrphanFrames); diff != "" {
		t.Errorf("OrphanFrames (-want +got):\n%s", diff)
	}
}

func TestCheckerResultIsRepeatable(t *testing.T) {
	c := cut.NewChecker(1, 2)
	for _, r := range []cut.Record{cutAt(0, 1), udp(1, 0), recv(1, 1), udp(2, 1)} {
		if err := c.Observe(r); err != nil {
			t.Fatal(err)
		}
	}
	r1 := c.Result()
	r1.OrphanFrames[0] = 42 // must not reach the checker
	r2 := c.Result()
	want := cut.Result{Epoch: 1, Sent: 2, Orphans: 1, InTransit: 1, Lost: 1,
		MissingCuts: []core.VMID{1}, OrphanFrames: []uint64{1}}
	if diff := cmp.Diff(want, r2, equateEmpty); diff != "" {
		t.Errorf("second Result (-want +got):\n%s", diff)
	}
	// The checker goes on after Result.
	for _, r := range []cut.Record{cutAt(1, 1), recv(2, 0)} {
		if err := c.Observe(r); err != nil {
			t.Fatal(err)
		}
	}
	// Frame 2 left vm1's image and reached vm0 after its cut: still in transit.
	want.MissingCuts = nil
	if diff := cmp.Diff(want, c.Result(), equateEmpty); diff != "" {
		t.Errorf("final Result (-want +got):\n%s", diff)
	}
}

func TestCheckerMalformed(t *testing.T) {
	tests := []struct {
		name  string
		trace []cut.Record // the last record is malformed
		want  string
	}{
		{"unknown vm", []cut.Record{udp(1, 2)}, "vm 2 out of range"},
		{"negative vm", []cut.Record{recv(1, -1)}, "vm -1 out of range"},
		{"cut of unknown vm", []cut.Record{cutAt(5, 1)}, "vm 5 out of range"},
		{"sent twice", []cut.Record{udp(1, 0), udp(1, 1)}, "frame 1 sent twice"},
		{"received, never sent", []cut.Record{udp(1, 0), recv(2, 1)}, "frame 2 delivered to vm 1 but never sent"},
		{"received twice", []cut.Record{udp(1, 0), recv(1, 1), recv(1, 1)}, "frame 1 delivered to vm 1 but never sent"},
		{"dropped, never sent", []cut.Record{drop(7, 0, cut.DropLoss)}, "frame 7 dropped for vm 0 but never sent"},
		{"dropped after delivery", []cut.Record{udp(1, 0), recv(1, 1), drop(1, 1, cut.DropQueue)}, "frame 1 dropped for vm 1"},
		{"cut twice", []cut.Record{cutAt(1, 1), cutAt(0, 1), cutAt(1, 1)}, "vm 1 cut twice for epoch 1"},
		{"unknown kind", []cut.Record{{Kind: 0, VM: 0}}, "unknown record kind 0"},
		{"unknown kind 9", []cut.Record{{Kind: 9, VM: 1}}, "unknown record kind 9"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := cut.NewChecker(1, 2)
			last := len(tt.trace) - 1
			for i, r := range tt.trace[:last] {
				if err := c.Observe(r); err != nil {
					t.Fatalf("record %d (%v): %v", i, r, err)
				}
			}
			err := c.Observe(tt.trace[last])
			if err == nil {
				t.Fatalf("got nil error for %v, want %q", tt.trace[last], tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %q, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestRecordString(t *testing.T) {
	tests := []struct {
		r    cut.Record
		want string
	}{
		{tcp(3, 1, 2, 10, 5, 7, 1), "send f3 vm1 e0 proto=1 flow=2 seq=10 len=5 ack=7"},
		{recv(3, 0), "recv f3 vm0"},
		{drop(3, 0, cut.DropColour), "drop f3 vm0 reason=1"},
		{logged(3, 0), "log f3 vm0"},
		{cutAt(1, 4), "cut vm1 e4"},
		{cut.Record{Kind: 9, Frame: 1}, "Kind(9) f1 vm0"},
	}
	for _, tt := range tests {
		if got := tt.r.String(); got != tt.want {
			t.Errorf("got %q, want %q", got, tt.want)
		}
	}
}
