package bittorrent

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"time"
)

// PeerID names a peer in the swarm.
type PeerID int

// remote is what a peer knows about one connected remote.
type remote struct {
	have       Bitfield
	chokesUs   bool // the remote chokes us (we may not request from it)
	interested bool // the remote wants something we have
}

// Peer is one swarm member's state machine. Not safe for concurrent use.
type Peer struct {
	cfg     Config
	id      PeerID
	rng     *rand.Rand
	have    Bitfield
	avail   []int          // connected remotes holding each piece
	pending map[int]PeerID // piece -> remote it is requested from
	remotes map[PeerID]*remote

	unchoked      map[PeerID]bool
	optimistic    PeerID
	hasOptimistic bool
	lastRotation  time.Duration
	rotated       bool // lastRotation is valid
}

// NewPeer returns peer id holding every piece if seed is true, none
// otherwise. rng breaks ties in piece selection and picks optimistic
// unchokes; give each peer its own, derived from the run's master seed.
func NewPeer(cfg Config, id PeerID, seed bool, rng *rand.Rand) (*Peer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if rng == nil {
		return nil, fmt.Errorf("%w: nil rng", ErrConfig)
	}
	n := cfg.NumPieces()
	have := NewBitfield(n)
	if seed {
		have = FullBitfield(n)
	}
	return &Peer{
		cfg: cfg, id: id, rng: rng, have: have,
		avail:    make([]int, n),
		pending:  map[int]PeerID{},
		remotes:  map[PeerID]*remote{},
		unchoked: map[PeerID]bool{},
	}, nil
}

// ID is the peer's id.
func (p *Peer) ID() PeerID { return p.id }

// Bitfield returns a copy of the pieces this peer holds (verified).
func (p *Peer) Bitfield() Bitfield { return p.have.Clone() }

// Has reports whether this peer holds verified piece i.
func (p *Peer) Has(i int) bool { return p.have.Has(i) }

// Complete reports whether this peer holds every piece.
func (p *Peer) Complete() bool { return p.have.Full() }

// Connect records a new connection and the remote's bitfield. A new remote
// chokes us and is not interested until told otherwise.
func (p *Peer) Connect(id PeerID, have Bitfield) error {
	if have.Len() != p.have.Len() {
		return fmt.Errorf("%w: bitfield of %d pieces, want %d", ErrPieceRange, have.Len(), p.have.Len())
	}
	if _, ok := p.remotes[id]; ok || id == p.id {
		return fmt.Errorf("%w: %d already connected or self", ErrUnknownPeer, id)
	}
	p.remotes[id] = &remote{have: have.Clone(), chokesUs: true}
	for i := range p.avail {
		if have.Has(i) {
			p.avail[i]++
		}
	}
	return nil
}

// Disconnect forgets a remote and releases the pieces requested from it.
func (p *Peer) Disconnect(id PeerID) error {
	r, ok := p.remotes[id]
	if !ok {
		return fmt.Errorf("%w: %d", ErrUnknownPeer, id)
	}
	for i := range p.avail {
		if r.have.Has(i) {
			p.avail[i]--
		}
	}
	p.release(id)
	delete(p.remotes, id)
	delete(p.unchoked, id)
	if p.hasOptimistic && p.optimistic == id {
		p.hasOptimistic = false
	}
	return nil
}

// PeerHas records a Have message: remote id now holds piece i.
func (p *Peer) PeerHas(id PeerID, i int) error {
	r, ok := p.remotes[id]
	if !ok {
		return fmt.Errorf("%w: %d", ErrUnknownPeer, id)
	}
	if i < 0 || i >= p.have.Len() {
		return fmt.Errorf("%w: %d", ErrPieceRange, i)
	}
	if !r.have.Has(i) {
		r.have.Set(i)
		p.avail[i]++
	}
	return nil
}

// SetChokedBy records a choke or unchoke from remote id. On a choke the
// pieces requested from it are released and returned in increasing order.
func (p *Peer) SetChokedBy(id PeerID, choked bool) ([]int, error) {
	r, ok := p.remotes[id]
	if !ok {
		return nil, fmt.Errorf("%w: %d", ErrUnknownPeer, id)
	}
	r.chokesUs = choked
	if !choked {
		return nil, nil
	}
	return p.release(id), nil
}

// release drops the pending requests to id and returns them sorted.
func (p *Peer) release(id PeerID) []int {
	var out []int
	for i, from := range p.pending {
		if from == id {
			out = append(out, i)
		}
	}
	slices.Sort(out)
	for _, i := range out {
		delete(p.pending, i)
	}
	return out
}

// SetInterested records whether remote id wants a piece we hold.
func (p *Peer) SetInterested(id PeerID, interested bool) error {
	r, ok := p.remotes[id]
	if !ok {
		return fmt.Errorf("%w: %d", ErrUnknownPeer, id)
	}
	r.interested = interested
	return nil
}

// InterestedIn reports whether remote id holds a piece we lack.
func (p *Peer) InterestedIn(id PeerID) bool {
	r, ok := p.remotes[id]
	if !ok {
		return false
	}
	for i := 0; i < p.have.Len(); i++ {
		if r.have.Has(i) && !p.have.Has(i) {
			return true
		}
	}
	return false
}

// NextRequest picks the piece to request from remote id: among the pieces
// it holds that we neither hold nor have requested, one held by the fewest
// connected remotes, ties broken uniformly by the peer's rng. It records
// the request and returns ok=false if nothing qualifies or id chokes us.
func (p *Peer) NextRequest(id PeerID) (piece int, ok bool) {
	r, found := p.remotes[id]
	if !found || r.chokesUs {
		return 0, false
	}
	best, ties := -1, 0
	for i := 0; i < p.have.Len(); i++ {
		if !r.have.Has(i) || p.have.Has(i) {
			continue
		}
		if _, busy := p.pending[i]; busy {
			continue
		}
		switch {
		case best < 0 || p.avail[i] < p.avail[best]:
			best, ties = i, 1
		case p.avail[i] == p.avail[best]:
			// Reservoir sampling: each tied piece wins with probability 1/ties.
			ties++
			if p.rng.IntN(ties) == 0 {
				best = i
			}
		}
	}
	if best < 0 {
		return 0, false
	}
	p.pending[best] = id
	return best, true
}

// Receive delivers piece i from remote id with digest h. The piece must
// have been requested from id. A digest that does not match
// PieceHash(file, i) is rejected with ErrBadHash and the request released;
// a matching one makes the piece ours.
func (p *Peer) Receive(id PeerID, i int, h Hash) error {
	if from, ok := p.pending[i]; !ok || from != id {
		return fmt.Errorf("%w: piece %d from %d", ErrNotRequested, i, id)
	}
	delete(p.pending, i)
	if h != PieceHash(p.cfg.FileID, i) {
		return fmt.Errorf("%w: piece %d from %d", ErrBadHash, i, id)
	}
	p.have.Set(i)
	return nil
}

// Pending returns the number of outstanding requests.
func (p *Peer) Pending() int { return len(p.pending) }

// Unchokes reports whether this peer currently unchokes remote id.
func (p *Peer) Unchokes(id PeerID) bool { return p.unchoked[id] }

// Rechoke recomputes the unchoked set at time now (call it every
// RechokeInterval). The RegularSlots interested remotes with the highest
// rates[id] (bytes/s; missing means 0; ties by lower id) are unchoked, plus
// one optimistic unchoke: an interested remote outside the regular set,
// picked by the peer's rng, kept for OptimisticInterval unless it leaves
// the candidates or earns a regular slot. It returns the unchoked remotes
// in increasing id order.
func (p *Peer) Rechoke(now time.Duration, rates map[PeerID]float64) []PeerID {
	var cands []PeerID
	for id, r := range p.remotes {
		if r.interested {
			cands = append(cands, id)
		}
	}
	slices.Sort(cands)
	byRate := slices.Clone(cands)
	slices.SortStableFunc(byRate, func(a, b PeerID) int {
		ra, rb := rates[a], rates[b]
		switch {
		case ra > rb:
			return -1
		case ra < rb:
			return 1
		}
		return 0
	})
	regular := byRate[:min(len(byRate), p.cfg.RegularSlots)]
	isRegular := map[PeerID]bool{}
	for _, id := range regular {
		isRegular[id] = true
	}
	keep := p.hasOptimistic && p.rotated && now-p.lastRotation < p.cfg.OptimisticInterval &&
		slices.Contains(cands, p.optimistic) && !isRegular[p.optimistic]
	if !keep {
		var others []PeerID
		for _, id := range cands {
			if !isRegular[id] {
				others = append(others, id)
			}
		}
		p.hasOptimistic = len(others) > 0
		if p.hasOptimistic {
			p.optimistic = others[p.rng.IntN(len(others))]
		}
		p.lastRotation, p.rotated = now, true
	}
	clear(p.unchoked)
	out := slices.Clone(regular)
	if p.hasOptimistic {
		out = append(out, p.optimistic)
	}
	slices.Sort(out)
	for _, id := range out {
		p.unchoked[id] = true
	}
	return out
}

// Optimistic returns the current optimistic unchoke, if any.
func (p *Peer) Optimistic() (PeerID, bool) { return p.optimistic, p.hasOptimistic }

// Clone returns an independent copy of the peer that draws from rng: a
// snapshot of the peer's state (the caller gives it a random source in the
// same state as the peer's, e.g. a copied *rand.PCG).
func (p *Peer) Clone(rng *rand.Rand) *Peer {
	c := *p
	c.rng = rng
	c.have = p.have.Clone()
	c.avail = slices.Clone(p.avail)
	c.pending = maps.Clone(p.pending)
	c.unchoked = maps.Clone(p.unchoked)
	c.remotes = make(map[PeerID]*remote, len(p.remotes))
	for id, r := range p.remotes {
		rc := *r
		rc.have = r.have.Clone()
		c.remotes[id] = &rc
	}
	return &c
}

// PendingPiece returns the remote piece i is requested from, if any.
func (p *Peer) PendingPiece(i int) (PeerID, bool) {
	id, ok := p.pending[i]
	return id, ok
}

// PendingFrom returns the number of outstanding requests to remote id.
func (p *Peer) PendingFrom(id PeerID) int {
	n := 0
	for _, from := range p.pending {
		if from == id {
			n++
		}
	}
	return n
}
