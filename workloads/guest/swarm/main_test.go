package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vnsnap/vnsnap/workloads/bittorrent"
)

func TestSwarmCompletes(t *testing.T) {
	const n = 5
	cfg := bittorrent.DefaultConfig(1, 3<<20+12345)
	cfg.PieceSize, cfg.RechokeInterval = 64<<10, 50*time.Millisecond
	var peers []string
	var lns []net.Listener
	for i := range n {
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.%d:0", 2+i))
		if err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("loopback 127.0.0.%d: %v (CI must run this test)", 2+i, err)
			}
			t.Skipf("loopback 127.0.0.%d (Linux routes all of 127/8 to lo): %v", 2+i, err)
		}
		lns = append(lns, ln)
		t.Cleanup(func() { ln.Close() })
		peers = append(peers, ln.Addr().String())
	}
	var mu sync.Mutex
	var lines []string
	printf := func(f string, a ...any) {
		mu.Lock()
		defer mu.Unlock()
		lines = append(lines, fmt.Sprintf(f, a...))
	}
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			defer lns[i].Close()
			conns, err := dialAll(lns[i], i, peers)
			if err != nil {
				errs[i] = err
				return
			}
			errs[i] = run(cfg, i, i == 0, conns, cfg.RechokeInterval, time.Hour, printf)
		})
	}
	wg.Wait()
	complete, done := 0, 0
	for _, l := range lines {
		if strings.HasPrefix(l, "SWARM COMPLETE") {
			complete++
		}
		if strings.HasPrefix(l, "SWARM DONE") {
			done++
		}
		if strings.Contains(l, "FAIL") {
			t.Errorf("%s", l)
		}
	}
	for i, err := range errs {
		if err != nil {
			t.Errorf("peer %d: %v", i, err)
		}
	}
	if complete != n-1 || done != n {
		t.Errorf("%d peers completed the download (want %d), %d done (want %d)", complete, n-1, done, n)
	}
}

// TestDamagedPieceRefused: a piece whose bytes are not the file's is
// refused, reported, and fails the peer.
func TestDamagedPieceRefused(t *testing.T) {
	cfg := bittorrent.DefaultConfig(1, 1<<20)
	var out []string
	s, err := newSwarm(cfg, 1, false, func(f string, a ...any) { out = append(out, fmt.Sprintf(f, a...)) })
	if err != nil {
		t.Fatal(err)
	}
	s.conns[0] = &conn{wake: make(chan struct{}, 1)} // its queue is read here, not written
	if err := s.handle(message{from: 0, typ: msgBitfield, index: cfg.NumPieces(), data: fullBits(cfg.NumPieces())}); err != nil {
		t.Fatal(err)
	}
	if err := s.handle(message{from: 0, typ: msgUnchoke}); err != nil {
		t.Fatal(err)
	}
	req := s.conns[0].queue
	var asked = -1
	for _, m := range req {
		if m.typ == msgRequest {
			asked = m.index
			break
		}
	}
	if asked < 0 {
		t.Fatalf("no request after an unchoke: %+v", req)
	}
	data := make([]byte, cfg.PieceLen(asked))
	content(data, cfg.FileID, asked)
	data[100] ^= 1
	err = s.handle(message{from: 0, typ: msgPiece, index: asked, data: data})
	if !errors.Is(err, bittorrent.ErrBadHash) || len(out) == 0 || !strings.Contains(out[0], "content differs") {
		t.Fatalf("damaged piece: %v, output %q; want ErrBadHash and a FAIL line", err, out)
	}
}

func fullBits(n int) []byte {
	b := make([]byte, (n+7)/8)
	for i := range n {
		b[i/8] |= 1 << (i % 8)
	}
	return b
}

// TestPieceAfterChokeDropped: a piece the remote sent before our choke
// reached it, whose request the choke released, is dropped, not fatal.
func TestPieceAfterChokeDropped(t *testing.T) {
	cfg := bittorrent.DefaultConfig(1, 1<<20)
	s, err := newSwarm(cfg, 1, false, func(string, ...any) {})
	if err != nil {
		t.Fatal(err)
	}
	s.conns[0] = &conn{wake: make(chan struct{}, 1)}
	for _, m := range []message{
		{from: 0, typ: msgBitfield, index: cfg.NumPieces(), data: fullBits(cfg.NumPieces())},
		{from: 0, typ: msgUnchoke},
	} {
		if err := s.handle(m); err != nil {
			t.Fatal(err)
		}
	}
	asked := -1
	for _, m := range s.conns[0].queue {
		if m.typ == msgRequest {
			asked = m.index
			break
		}
	}
	if err := s.handle(message{from: 0, typ: msgChoke}); err != nil {
		t.Fatal(err)
	}
	data := make([]byte, cfg.PieceLen(asked))
	content(data, cfg.FileID, asked)
	if err := s.handle(message{from: 0, typ: msgPiece, index: asked, data: data}); err != nil {
		t.Fatalf("piece after choke: %v", err)
	}
	if s.dropped != 1 || s.peer.Has(asked) {
		t.Fatalf("dropped %d, have piece %t; want the piece dropped", s.dropped, s.peer.Has(asked))
	}
}
