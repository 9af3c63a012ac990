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
	if err := send(&buf, 7, n, &tx); err != nil {
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

func TestThreePeersOverLoopback(t *testing.T) { threePeers(t, false) }

// TestAbandonedDialIsNotAStream: a connection closed before its first byte
// (a dialler whose dial timed out after the SYN got through, on a loaded
// host, and which dials again) is not counted as a failed stream.
func TestAbandonedDialIsNotAStream(t *testing.T) { threePeers(t, true) }

func threePeers(t *testing.T, abandoned bool) {
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
			fails[i] = run(lns[i], i, addrs, 1<<20, outs[i], time.Hour)
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
