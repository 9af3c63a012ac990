package bittorrent

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

func newRNG(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 0x5eed)) }

func TestConfig(t *testing.T) {
	tests := []struct {
		size       int64
		wantPieces int
		wantLast   int64
	}{
		{256 << 10, 1, 256 << 10},
		{256<<10 + 1, 2, 1},
		{10 << 20, 40, 256 << 10},
		{1000, 1, 1000},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprint(tc.size), func(t *testing.T) {
			c := DefaultConfig(1, tc.size)
			if got := c.NumPieces(); got != tc.wantPieces {
				t.Errorf("got %d pieces, want %d", got, tc.wantPieces)
			}
			if got := c.PieceLen(c.NumPieces() - 1); got != tc.wantLast {
				t.Errorf("got last piece %d bytes, want %d", got, tc.wantLast)
			}
		})
	}
	if err := DefaultConfig(1, 0).Validate(); !errors.Is(err, ErrConfig) {
		t.Errorf("zero size: got %v, want %v", err, ErrConfig)
	}
}

func TestBitfield(t *testing.T) {
	b := NewBitfield(130)
	for _, i := range []int{0, 63, 64, 129} {
		b.Set(i)
	}
	if got := b.Count(); got != 4 {
		t.Errorf("got count %d, want 4", got)
	}
	if !b.Has(129) || b.Has(128) || b.Has(-1) || b.Has(130) {
		t.Errorf("Has wrong around the edges")
	}
	c := b.Clone()
	c.Set(5)
	if b.Has(5) {
		t.Errorf("Clone shares storage")
	}
	if !FullBitfield(130).Full() || b.Full() {
		t.Errorf("Full wrong")
	}
}

func TestPieceHash(t *testing.T) {
	if PieceHash(1, 2) != PieceHash(1, 2) {
		t.Errorf("hash not deterministic")
	}
	if PieceHash(1, 2) == PieceHash(1, 3) || PieceHash(1, 2) == PieceHash(2, 2) {
		t.Errorf("hash ignores file id or index")
	}
}

// bitfieldOf builds a bitfield of n pieces with the given pieces set.
func bitfieldOf(n int, pieces ...int) Bitfield {
	b := NewBitfield(n)
	for _, i := range pieces {
		b.Set(i)
	}
	return b
}

func TestRarestFirst(t *testing.T) {
	cfg := DefaultConfig(7, 6*DefaultPieceSize)
	// Availability: piece 0: 3, 1: 1, 2: 2, 3: 2, 4: 3, 5: 0. Remote 1 has 0..4.
	p, _ := NewPeer(cfg, 0, false, newRNG(1))
	must(t, p.Connect(1, bitfieldOf(6, 0, 1, 2, 3, 4)))
	must(t, p.Connect(2, bitfieldOf(6, 0, 2, 3, 4)))
	must(t, p.Connect(3, bitfieldOf(6, 0, 4)))
	if _, ok := p.NextRequest(1); ok {
		t.Fatalf("requested from a remote that chokes us")
	}
	if _, err := p.SetChokedBy(1, false); err != nil {
		t.Fatal(err)
	}
	want := []int{1} // rarest
	got, _ := p.NextRequest(1)
	if got != want[0] {
		t.Fatalf("first request: got piece %d, want %d", got, want[0])
	}
	// Next: 2 and 3 tie at availability 2.
	second, _ := p.NextRequest(1)
	third, _ := p.NextRequest(1)
	if pair := []int{second, third}; !slices.Contains(pair, 2) || !slices.Contains(pair, 3) {
		t.Errorf("second and third: got %v, want {2,3}", pair)
	}
	// Released requests become eligible again.
	rel, _ := p.SetChokedBy(1, true)
	if !slices.Equal(rel, []int{1, 2, 3}) {
		t.Errorf("released: got %v, want [1 2 3]", rel)
	}
}

func TestRarestFirstTieBreakIsSeeded(t *testing.T) {
	cfg := DefaultConfig(7, 8*DefaultPieceSize)
	pick := func(seed uint64) int {
		p, _ := NewPeer(cfg, 0, false, newRNG(seed))
		must(t, p.Connect(1, FullBitfield(8)))
		p.SetChokedBy(1, false)
		i, _ := p.NextRequest(1)
		return i
	}
	seen := map[int]bool{}
	for seed := uint64(0); seed < 64; seed++ {
		a, b := pick(seed), pick(seed)
		if a != b {
			t.Fatalf("seed %d: got %d then %d, want equal", seed, a, b)
		}
		seen[a] = true
	}
	if len(seen) < 4 {
		t.Errorf("tie break over 64 seeds hit %d of 8 pieces, want spread", len(seen))
	}
}

func TestReceiveVerifies(t *testing.T) {
	cfg := DefaultConfig(9, 2*DefaultPieceSize)
	p, _ := NewPeer(cfg, 0, false, newRNG(1))
	must(t, p.Connect(1, FullBitfield(2)))
	p.SetChokedBy(1, false)
	if err := p.Receive(1, 0, PieceHash(9, 0)); !errors.Is(err, ErrNotRequested) {
		t.Errorf("unrequested: got %v, want %v", err, ErrNotRequested)
	}
	i, _ := p.NextRequest(1)
	if err := p.Receive(1, i, PieceHash(8, i)); !errors.Is(err, ErrBadHash) {
		t.Errorf("bad hash: got %v, want %v", err, ErrBadHash)
	}
	if p.Has(i) {
		t.Errorf("bad piece %d kept", i)
	}
	j, _ := p.NextRequest(1)
	if j != i {
		t.Errorf("after a bad hash: got request %d, want %d again", j, i)
	}
	if err := p.Receive(1, j, PieceHash(9, j)); err != nil || !p.Has(j) {
		t.Errorf("good piece: got err %v has %v", err, p.Has(j))
	}
}

func TestRechoke(t *testing.T) {
	cfg := DefaultConfig(1, DefaultPieceSize)
	p, _ := NewPeer(cfg, 0, true, newRNG(3))
	rates := map[PeerID]float64{}
	for id := PeerID(1); id <= 10; id++ {
		must(t, p.Connect(id, NewBitfield(1)))
		must(t, p.SetInterested(id, id != 10)) // 10 is not interested
		rates[id] = float64(id)                // 9, 8, 7, 6 are the fastest interested
	}
	rates[10] = 100
	var opts []PeerID
	for now := time.Duration(0); now <= 120*time.Second; now += cfg.RechokeInterval {
		got := p.Rechoke(now, rates)
		if len(got) > cfg.RegularSlots+1 {
			t.Fatalf("t=%v: %d unchoked, want at most %d", now, len(got), cfg.RegularSlots+1)
		}
		for _, id := range []PeerID{6, 7, 8, 9} {
			if !slices.Contains(got, id) {
				t.Errorf("t=%v: got %v, want regular %d unchoked", now, got, id)
			}
		}
		if slices.Contains(got, 10) {
			t.Errorf("t=%v: uninterested peer 10 unchoked", now)
		}
		opt, ok := p.Optimistic()
		if !ok || opt > 5 || !slices.Contains(got, opt) {
			t.Fatalf("t=%v: optimistic %d (%v), want one of 1..5 in %v", now, opt, ok, got)
		}
		opts = append(opts, opt)
	}
	// The optimistic unchoke holds for 30 s: rechokes 0,10,20 share one.
	for i := range opts {
		if i%3 != 0 && opts[i] != opts[i-1] {
			t.Errorf("optimistic changed between rechoke %d and %d: %v", i-1, i, opts)
		}
	}
	// Fewer candidates than slots: everyone interested is unchoked.
	q, _ := NewPeer(cfg, 0, true, newRNG(3))
	must(t, q.Connect(1, NewBitfield(1)))
	must(t, q.SetInterested(1, true))
	if got := q.Rechoke(0, nil); !slices.Equal(got, []PeerID{1}) {
		t.Errorf("one candidate: got %v, want [1]", got)
	}
}

// runSwarm drives a fully connected swarm of one seed and n leechers with
// 1-second ticks until every peer is complete. Each unchoked connection moves
// at most one piece per tick. It returns the tick at which each peer
// completed and a trace of every transfer.
func runSwarm(t *testing.T, seed uint64, n, pieces int) ([]int, []string) {
	t.Helper()
	cfg := DefaultConfig(42, int64(pieces)*DefaultPieceSize)
	master := newRNG(seed)
	peers := make([]*Peer, n+1)
	for i := range peers {
		p, err := NewPeer(cfg, PeerID(i), i == 0, rand.New(rand.NewPCG(master.Uint64(), master.Uint64())))
		must(t, err)
		peers[i] = p
	}
	for _, a := range peers {
		for _, b := range peers {
			if a != b {
				must(t, a.Connect(b.ID(), b.Bitfield()))
			}
		}
	}
	done := make([]int, len(peers))
	done[0] = 0
	received := make([]map[PeerID]float64, len(peers)) // bytes from each remote this window
	sent := make([]map[PeerID]float64, len(peers))     // bytes to each remote this window
	for i := range peers {
		received[i], sent[i] = map[PeerID]float64{}, map[PeerID]float64{}
	}
	var trace []string
	const maxTicks = 5000
	for tick := 0; ; tick++ {
		if tick > maxTicks {
			t.Fatalf("seed %d: swarm not complete after %d ticks", seed, maxTicks)
		}
		now := time.Duration(tick) * time.Second
		for _, a := range peers {
			for _, b := range peers {
				if a != b {
					must(t, b.SetInterested(a.ID(), a.InterestedIn(b.ID())))
				}
			}
		}
		if now%cfg.RechokeInterval == 0 {
			for i, a := range peers {
				rates := received[i]
				if a.Complete() {
					rates = sent[i]
				}
				un := a.Rechoke(now, rates)
				if len(un) > cfg.RegularSlots+1 {
					t.Fatalf("peer %d unchokes %d, want at most %d", i, len(un), cfg.RegularSlots+1)
				}
				for _, b := range peers {
					if b != a {
						_, err := b.SetChokedBy(a.ID(), !a.Unchokes(b.ID()))
						must(t, err)
					}
				}
				received[i], sent[i] = map[PeerID]float64{}, map[PeerID]float64{}
			}
		}
		for i, a := range peers {
			for j, b := range peers {
				if a == b {
					continue
				}
				piece, ok := a.NextRequest(b.ID())
				if !ok {
					continue
				}
				if !b.Has(piece) {
					t.Fatalf("peer %d requested piece %d that %d lacks", i, piece, j)
				}
				must(t, a.Receive(b.ID(), piece, PieceHash(cfg.FileID, piece)))
				bytes := float64(cfg.PieceLen(piece))
				received[i][b.ID()] += bytes
				sent[j][a.ID()] += bytes
				trace = append(trace, fmt.Sprintf("%d:%d<-%d#%d", tick, i, j, piece))
				for _, c := range peers {
					if c != a {
						must(t, c.PeerHas(a.ID(), piece))
					}
				}
				if a.Complete() {
					done[i] = tick
				}
			}
		}
		all := true
		for _, p := range peers {
			all = all && p.Complete()
		}
		if all {
			break
		}
	}
	for i, p := range peers {
		for k := 0; k < pieces; k++ {
			if !p.Has(k) {
				t.Fatalf("peer %d lacks piece %d", i, k)
			}
		}
		if p.Pending() != 0 {
			t.Errorf("peer %d has %d pending requests after completion", i, p.Pending())
		}
	}
	return done, trace
}

func TestSwarmCompletesDeterministically(t *testing.T) {
	for _, seed := range []uint64{1, 2, 3, 42} {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			d1, tr1 := runSwarm(t, seed, 9, 40)
			d2, tr2 := runSwarm(t, seed, 9, 40)
			if !slices.Equal(d1, d2) || !slices.Equal(tr1, tr2) {
				t.Fatalf("seed %d: two runs differ (rerun: go test ./workloads/bittorrent -run 'TestSwarmCompletesDeterministically/%d')", seed, seed)
			}
			if len(tr1) != 9*40 {
				t.Errorf("got %d transfers, want %d (every leecher gets every piece once)", len(tr1), 9*40)
			}
		})
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
