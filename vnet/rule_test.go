package vnet

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/vnsnap/vnsnap/core"
	"github.com/vnsnap/vnsnap/core/cut"
)

// TestRule checks the colour rule at a receiver's port, for a sender on the
// same switch and across a tunnel.
func TestRule(t *testing.T) {
	for _, alg := range []core.Algorithm{core.VNsnap, core.VNsnapLog, core.Uncoordinated} {
		for _, remote := range []bool{false, true} {
			t.Run(fmt.Sprintf("%v/remote=%v", alg, remote), func(t *testing.T) {
				testRule(t, alg, remote)
			})
		}
	}
}

func testRule(t *testing.T, alg core.Algorithm, remote bool) {
	b := newBed(t, 2, alg, false)
	rsw := 0
	if remote {
		rsw = 1
	}
	s, r := b.vm(0, 0), b.vm(rsw, 1)
	s.sendTo(broadcast, "learn-s")
	r.expect("learn-s")
	r.sendTo(s.mac, "learn-r")
	s.expect("learn-r")

	// Snapshot 1, red to white: the sender passes its snapshot point first.
	b.setEpoch(0, 1)
	s.sendTo(r.mac, "red")
	switch alg {
	case core.VNsnap:
		mustWait(t, b.on[1], 1, func(p PortCounters) bool { return p.DroppedRule == 1 })
		r.expectNone()
		b.setEpoch(1, 1)
		r.expectNone()
	case core.VNsnapLog:
		mustWait(t, b.on[1], 1, func(p PortCounters) bool { return p.HeldNow == 1 })
		r.expectNone()
		b.setEpoch(1, 1) // releases it
		r.expect("red")
		if p := b.counters(1); p.Released != 1 || p.HeldNow != 0 {
			t.Errorf("released %d held %d, want 1 0", p.Released, p.HeldNow)
		}
	case core.Uncoordinated:
		r.expect("red") // an orphan in the making
		b.setEpoch(1, 1)
	}

	// Snapshot 2, white to red: the receiver passes first; the frame is in
	// transit across the cut, delivered by every algorithm.
	b.setEpoch(1, 2)
	s.sendTo(r.mac, "white")
	r.expect("white")
	logged := b.on[1].InTransit(2)
	if alg != core.VNsnapLog {
		if len(logged) != 0 {
			t.Fatalf("in-transit log has %d frames under %v, want 0", len(logged), alg)
		}
		return
	}
	if len(logged) != 1 || !bytes.HasSuffix(logged[0].Data, []byte("white")) || logged[0].FrameEpoch != 1 {
		t.Fatalf("in-transit log = %+v, want the white frame", logged)
	}

	// Export, read back, and replay into a restored receiver ahead of new
	// traffic.
	var buf bytes.Buffer
	if n, err := b.on[1].WriteInTransit(&buf, 2); err != nil || n != 1 {
		t.Fatalf("WriteInTransit = %d, %v", n, err)
	}
	back, err := ReadInTransit(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(logged, back); d != "" {
		t.Fatalf("in-transit log round trip (-want +got):\n%s", d)
	}
	r.close()
	mustWait(t, b.on[1], 1, func(p PortCounters) bool { return !p.Connected })
	if n, err := b.on[1].Replay(back); err != nil || n != 1 {
		t.Fatalf("Replay = %d, %v", n, err)
	}
	r2 := dialVM(t, b.on[1], 1, b.path[1])
	r2.expect("white")
	if err := b.on[1].WaitReplayed(t.Context(), 1); err != nil {
		t.Fatal(err)
	}
	b.on[1].ForgetInTransit(2)
	if c := b.on[1].Counters(); c.InTransitBytes != 0 {
		t.Errorf("in-transit bytes after forget = %d, want 0", c.InTransitBytes)
	}
}

// TestFrameLogChecker runs a two-switch snapshot designed to make an orphan
// when frames are not coloured, converts the switches' frame logs to
// checker records and asks the checker for its verdict.
func TestFrameLogChecker(t *testing.T) {
	type want struct {
		orphans, dropped, replayed int
	}
	for _, tc := range []struct {
		alg  core.Algorithm
		want want
	}{
		{core.VNsnap, want{orphans: 0, dropped: 1}},
		{core.VNsnapLog, want{orphans: 0, replayed: 1}},
		{core.Uncoordinated, want{orphans: 1}},
	} {
		t.Run(tc.alg.String(), func(t *testing.T) {
			b := newBed(t, 2, tc.alg, true)
			s, r, w := b.vm(0, 0), b.vm(1, 1), b.vm(0, 2)
			for _, v := range []*fakeVM{s, r, w} { // learning, all white
				v.send(udpFrame(broadcast, v.mac, "hello"))
			}
			for _, v := range []*fakeVM{s, r, w} {
				v.expect("hello")
				v.expect("hello")
			}

			b.setEpoch(0, 1)
			s.send(udpFrame(r.mac, s.mac, "red")) // red to white
			mustWait(t, b.on[1], 1, func(p PortCounters) bool {
				return p.DroppedRule+p.Held+p.TxFrames > 2
			})
			b.setEpoch(1, 1)
			if tc.alg != core.VNsnap { // delivered (uncoordinated) or released (vnsnap-log)
				r.expect("red")
			}
			w.send(tcpFrame(r.mac, w.mac, 1000, 0, "white")) // white to red
			r.expect("white")
			b.setEpoch(2, 1)
			r.send(udpFrame(s.mac, r.mac, "both red"))
			s.expect("both red")
			b.closeAll()

			recs, err := ReadLogs(bytes.NewReader(b.logs[0].Bytes()), bytes.NewReader(b.logs[1].Bytes()))
			if err != nil {
				t.Fatal(err)
			}
			ch := cut.NewChecker(1, 3)
			for _, rec := range recs {
				if err := ch.Observe(rec); err != nil {
					t.Fatalf("checker rejects %v: %v\nrecords:\n%v", rec, err, recs)
				}
			}
			res := ch.Result()
			t.Logf("%d records, result %+v", len(recs), res)
			got := want{res.Orphans, res.DroppedColour, res.Replayed}
			if got != tc.want || len(res.MissingCuts) != 0 {
				t.Errorf("result %+v, want %+v and no missing cuts", res, tc.want)
			}
			if res.Consistent() != tc.alg.Consistent() {
				t.Errorf("consistent = %v, want %v", res.Consistent(), tc.alg.Consistent())
			}
			// 3 broadcasts to 2 VMs each, red, white, both red.
			if res.Sent != 9 {
				t.Errorf("sent = %d, want 9", res.Sent)
			}
		})
	}
}

func TestHoldOverflow(t *testing.T) {
	bd := &bed{t: t, dir: shortDir(t), path: map[core.VMID]string{}, on: map[core.VMID]*Switch{}}
	s, err := New(Config{ID: 1, Algorithm: core.VNsnapLog, MaxHeld: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	bd.sw = []*Switch{s}
	v0, v1 := bd.vm(0, 0), bd.vm(0, 1)
	bd.setEpoch(0, 1)
	v0.sendTo(v1.mac, "held")
	v0.sendTo(v1.mac, "over")
	mustWait(t, s, 1, func(p PortCounters) bool { return p.HeldNow == 1 && p.DroppedQueue == 1 })
	v1.expectNone()
	bd.setEpoch(1, 1)
	v1.expect("held")
}
