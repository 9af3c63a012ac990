package main

import (
	"bytes"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestRoundTripAndCorruption(t *testing.T) {
	var buf bytes.Buffer
	var tx, rx atomic.Uint64
	const n = 100_003 // not a multiple of the block or word size
	if err := send(&buf, 7, n, &tx, realPacer(0, 0, nil)); err != nil {
		t.Fatal(err)
	}
	raw := buf.Bytes()
	s, m, err := receive(bytes.NewReader(raw), &rx)
	if err != nil || s != 7 || m != n {
		t.Fatalf("got (%d, %d, %v), want (7, %d, nil)", s, m, err, n)
	}
	bad := bytes.Clone(raw)
	bad[hdrLen+50_000] ^= 0x10
	if _, _, err := receive(bytes.NewReader(bad), &rx); err == nil || !strings.Contains(err.Error(), "offset 50000") {
		t.Fatalf("got %v, want a mismatch at offset 50000", err)
	}
	if _, _, err := receive(bytes.NewReader(raw[:len(raw)-3]), &rx); err == nil {
		t.Fatal("truncated stream accepted")
	}
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// TestRatePaces: with -rate, each block of a stream waits until its offset
// is due at the rate, on a fake clock; unpaced, nothing waits; the bytes
// sent are the same either way.
func TestRatePaces(t *testing.T) {
	const n, rate = 100_003, 10_000
	var now time.Time
	var sleeps int
	p := &pacer{rate: rate, now: func() time.Time { return now }, sleep: func(d time.Duration) { sleeps++; now = now.Add(d) }}
	now = time.Unix(1000, 0)
	start := now
	var paced, unpaced bytes.Buffer
	var tx atomic.Uint64
	if err := send(&paced, 1, n, &tx, p); err != nil {
		t.Fatal(err)
	}
	// The last block starts at offset 3*blockLen: it is sent 9.8304 s in.
	if got, want := now.Sub(start), time.Duration(3*blockLen)*time.Second/rate; got != want {
		t.Errorf("paced stream of %d bytes at %d B/s: took %v on the fake clock, want %v", n, rate, got, want)
	}
	if sleeps != 3 {
		t.Errorf("paced stream: %d waits, want 3 (one before each block but the first)", sleeps)
	}
	if got, want := tx.Load(), uint64(n); got != want {
		t.Errorf("paced stream: counted %d bytes, want %d", got, want)
	}
	// A stop of 100 s (a paused VM whose clock ran on) is caught up only
	// by paceSlack: the next blocks wait as if the stream had lagged 1 s.
	p = &pacer{rate: rate, now: p.now, sleep: p.sleep}
	start = now
	p.wait(0)
	now = now.Add(100 * time.Second)
	p.wait(blockLen)          // 3.2768 s due, 100 s gone: no wait
	p.wait(blockLen + 2*rate) // 2 s more due, 1 s of slack: waits 1 s
	if got, want := now.Sub(start), 101*time.Second; got != want {
		t.Errorf("after a 100 s stop: at %v, want %v (catching up at most %v)", got, want, paceSlack)
	}
	q := &pacer{rate: 0, now: func() time.Time { t.Fatal("unpaced stream read the clock"); return now }, sleep: func(time.Duration) { t.Fatal("unpaced stream slept") }}
	if err := send(&unpaced, 1, n, &tx, q); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(paced.Bytes(), unpaced.Bytes()) {
		t.Error("paced and unpaced streams differ")
	}
}

// TestUnpaceAfterSleep: with after set, a paced stream paces while the wall
// clock keeps to the monotonic one, and once it has run ahead by more than
// after (the guest slept: restored from a snapshot) it sends the rest
// without a wait, saying so once.
func TestUnpaceAfterSleep(t *testing.T) {
	const rate = 10_000
	now := time.Unix(1000, 0)
	var slept time.Duration
	var sleeps int
	var told []time.Duration
	p := &pacer{rate: rate, now: func() time.Time { return now }, sleep: func(d time.Duration) { sleeps++; now = now.Add(d) },
		after: 30 * time.Second, slept: func() time.Duration { return slept }, onUnpace: func(d time.Duration) { told = append(told, d) }}
	p.wait(0)
	p.wait(blockLen)
	slept = 30 * time.Second // a stop-and-copy's pause: not more than after
	p.wait(2 * blockLen)
	if sleeps != 2 || len(told) != 0 {
		t.Fatalf("before a sleep over %v: %d waits, unpaced %v; want 2 waits, paced", p.after, sleeps, told)
	}
	slept = 95 * time.Second
	at := now
	for off := uint64(3 * blockLen); off < 40*blockLen; off += blockLen {
		p.wait(off)
	}
	if sleeps != 2 || now != at {
		t.Errorf("after a sleep of %v: %d more waits, %v more time; want none", slept, sleeps-2, now.Sub(at))
	}
	if len(told) != 1 || told[0] != slept {
		t.Errorf("unpace told %v, want once, %v", told, slept)
	}
	// Without after, the same sleep changes nothing.
	q := &pacer{rate: rate, now: p.now, sleep: p.sleep, slept: func() time.Duration { return time.Hour }}
	q.wait(0)
	q.wait(blockLen)
	if sleeps != 3 {
		t.Errorf("no -unpace-after: %d waits after the sleep, want 1", sleeps-2)
	}
}

func TestThreePeersOverLoopback(t *testing.T) { threePeers(t, false, 0) }

// TestThreePeersPaced: -rate's real clock path carries whole, verified
// streams (2 MiB/s: 1 MiB streams take about half a second).
func TestThreePeersPaced(t *testing.T) { threePeers(t, false, 2<<20) }

// TestAbandonedDialIsNotAStream: a connection closed before its first byte
// (a dialler whose dial timed out after the SYN got through, on a loaded
// host, and which dials again) is not counted as a failed stream.
func TestAbandonedDialIsNotAStream(t *testing.T) { threePeers(t, true, 0) }

func threePeers(t *testing.T, abandoned bool, rate uint64) {
	var lns []net.Listener
	var addrs []string
	for i := 0; i < 3; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		lns = append(lns, ln)
		addrs = append(addrs, ln.Addr().String())
	}
	if abandoned {
		for _, a := range addrs {
			c, err := net.Dial("tcp", a)
			if err != nil {
				t.Fatal(err)
			}
			c.Close()
		}
	}
	var wg sync.WaitGroup
	outs := make([]*syncBuf, 3)
	fails := make([]int, 3)
	for i := range lns {
		outs[i] = &syncBuf{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			fails[i] = run(lns[i], i, addrs, 1<<20, pace{rate: rate}, outs[i], time.Hour)
		}()
	}
	wg.Wait()
	for i, o := range outs {
		got := o.b.String()
		if fails[i] != 0 || strings.Count(got, "TCPSTREAM OK") != 2 || !strings.Contains(got, "TCPSTREAM DONE ok=4 fail=0") {
			t.Errorf("vm %d: fails=%d output:\n%s", i, fails[i], got)
		}
	}
}
