package simload

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/vnsnap/vnsnap/core"
	sim "github.com/vnsnap/vnsnap/simbackend"
	bt "github.com/vnsnap/vnsnap/workloads/bittorrent"
)

// BitTorrentWorkload is a swarm of Peers VMs, the first Seeds of which hold
// the whole file at the start, every peer connected to every other (the
// tracker's job is done before the run starts). Pieces are written to the
// receiving VM's memory, dirtying it.
type BitTorrentWorkload struct {
	Peers, Seeds int
	Config       bt.Config
	// Pipeline is the number of requests a peer keeps outstanding per
	// unchoking remote.
	Pipeline int
}

// BitTorrent returns a swarm of peers VMs sharing a file of fileBytes.
func BitTorrent(peers, seeds int, fileBytes int64) (*BitTorrentWorkload, error) {
	if peers < 2 || seeds < 1 || seeds >= peers {
		return nil, fmt.Errorf("bittorrent: %d peers with %d seeds: want at least 2 peers and 1 <= seeds < peers", peers, seeds)
	}
	cfg := bt.DefaultConfig(1, fileBytes)
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &BitTorrentWorkload{Peers: peers, Seeds: seeds, Config: cfg, Pipeline: 4}, nil
}

// Name implements sim.Workload.
func (w *BitTorrentWorkload) Name() string {
	return fmt.Sprintf("bittorrent-%d-%dMiB", w.Peers, w.Config.FileSize>>20)
}

// Configure gives each VM room for the file plus the guest OS; downloaded
// pieces are what dirties memory.
func (w *BitTorrentWorkload) Configure(cfg *sim.Config) error {
	cfg.VMs = w.Peers
	mem := w.Config.FileSize + osBytes
	cfg.MemBytes = (mem + core.PageSize - 1) / core.PageSize * core.PageSize
	cfg.HotBytes = max(w.Config.FileSize, core.PageSize)
	cfg.HotFrac = 1
	cfg.DirtyRate = 0
	cfg.DirtySpread = 0
	return nil
}

// Message kinds on the wire, in a Message's Tag (kind<<32 | piece).
const (
	msgBitfield int64 = iota + 1
	msgHave
	msgInterested
	msgChoke
	msgUnchoke
	msgRequest
	msgPiece
)

const wireHeader = 13 // length prefix, id and piece index, as in BitTorrent

// Build implements sim.Workload.
func (w *BitTorrentWorkload) Build(world *sim.World) (sim.Instance, error) {
	inst := &btInstance{w: w, world: world}
	for i := 0; i < w.Peers; i++ {
		pcg := rand.NewPCG(world.Eng.Seed(), uint64(i)+0xb17)
		p, err := bt.NewPeer(w.Config, bt.PeerID(i), i < w.Seeds, rand.New(pcg))
		if err != nil {
			return nil, err
		}
		inst.peers = append(inst.peers, &btPeer{inst: inst, id: i, vm: world.VMs[i], pcg: pcg,
			st: btState{Peer: p, Sent: map[int]uint64{}, Got: map[int]uint64{}}, out: map[int]*sim.Messenger{}, in: map[int]*sim.Messenger{}})
	}
	for a := 0; a < w.Peers; a++ {
		for b := a + 1; b < w.Peers; b++ {
			ca, cb := world.Connect(core.VMID(a), core.VMID(b))
			pa, pb := inst.peers[a], inst.peers[b]
			ab, ba := sim.NewMessenger(ca, cb), sim.NewMessenger(cb, ca)
			pa.out[b], pb.in[a] = ab, ab
			pb.out[a], pa.in[b] = ba, ba
			from := [2]int{a, b}
			ab.OnMessage = func(m sim.Message) { pb.onMessage(from[0], m) }
			ba.OnMessage = func(m sim.Message) { pa.onMessage(from[1], m) }
		}
	}
	for _, p := range inst.peers {
		for r := 0; r < w.Peers; r++ {
			if r != p.id {
				have := bt.NewBitfield(w.Config.NumPieces())
				if r < w.Seeds {
					have = bt.FullBitfield(w.Config.NumPieces())
				}
				// Peers learn each other's initial bitfields from the
				// tracker handshake before the run.
				if err := p.st.Peer.Connect(bt.PeerID(r), have); err != nil {
					return nil, err
				}
			}
		}
		world.SetApp(core.VMID(p.id), p)
	}
	return inst, nil
}

type btInstance struct {
	w     *BitTorrentWorkload
	world *sim.World
	peers []*btPeer
	// bytes of pieces delivered per second of virtual time, swarm-wide
	perSecond []float64
	bad       error
}

// Finished implements sim.Instance: every leecher holds the whole file.
func (in *btInstance) Finished() (sim.Time, bool) {
	var last sim.Time
	for _, p := range in.peers {
		if !p.st.Peer.Complete() {
			return 0, false
		}
		last = max(last, p.st.DoneAt)
	}
	return last, true
}

// Verify implements sim.Instance: every piece every peer holds passed its
// hash check on arrival (Receive rejects a bad one), every peer is complete,
// and every byte on every connection arrived with the content its sender
// wrote.
func (in *btInstance) Verify() error {
	if in.bad != nil {
		return in.bad
	}
	for _, p := range in.peers {
		if !p.st.Peer.Complete() {
			return fmt.Errorf("peer %d has %d of %d pieces", p.id, p.st.Peer.Bitfield().Count(), in.w.Config.NumPieces())
		}
	}
	return nil
}

// Report implements sim.Instance: per-peer completion times and the
// swarm's throughput per second.
func (in *btInstance) Report(res *sim.Result) {
	for _, p := range in.peers[in.w.Seeds:] {
		d := -1.0
		if p.st.Peer.Complete() {
			d = float64(p.st.DoneAt) / float64(time.Millisecond)
		}
		res.PeerDoneMS = append(res.PeerDoneMS, d)
	}
	for _, b := range in.perSecond {
		res.ThroughputMBps = append(res.ThroughputMBps, b/1e6)
	}
}

// btState is a peer's application state: what its VM's image holds.
type btState struct {
	Peer        *bt.Peer
	PCG         rand.PCG
	Sent, Got   map[int]uint64 // piece bytes sent to and received from each remote since the last rechoke
	Interested  map[int]bool   // we told the remote we are interested
	NextRechoke sim.Time       // due time of the next rechoke, relative to the snapshot point when captured
	DoneAt      sim.Time
	Senders     map[int]sim.SenderState
	Receivers   map[int]sim.ReceiverState
}

type btPeer struct {
	inst *btInstance
	id   int
	vm   *sim.VM
	pcg  *rand.PCG
	st   btState
	out  map[int]*sim.Messenger
	in   map[int]*sim.Messenger
	// restored is the time left to the next rechoke in a restored peer.
	restored sim.Time
	started  bool
}

const evRechoke sim.Kind = 1

// Start implements sim.App.
func (p *btPeer) Start() {
	if p.st.Interested == nil {
		p.st.Interested = map[int]bool{}
	}
	if p.started {
		return
	}
	p.started = true
	due := p.inst.w.Config.RechokeInterval
	if p.restored > 0 {
		due = p.restored
	} else {
		p.rechoke()
		p.updateInterest()
	}
	p.vm.After(due, p, evRechoke, 0)
	if p.st.Peer.Complete() && p.st.DoneAt == 0 {
		p.st.DoneAt = p.inst.world.Now()
	}
}

// Capture implements sim.App.
func (p *btPeer) Capture() any {
	st := p.st
	st.PCG = *p.pcg
	st.Peer = p.st.Peer.Clone(rand.New(&st.PCG))
	st.Sent, st.Got = cloneMap(p.st.Sent), cloneMap(p.st.Got)
	st.Interested = cloneMap(p.st.Interested)
	st.NextRechoke = p.st.NextRechoke - p.inst.world.Now()
	st.Senders, st.Receivers = map[int]sim.SenderState{}, map[int]sim.ReceiverState{}
	for r, m := range p.out {
		st.Senders[r] = m.CaptureSender()
	}
	for r, m := range p.in {
		st.Receivers[r] = m.CaptureReceiver()
	}
	return st
}

// Restore implements sim.App.
func (p *btPeer) Restore(s any) {
	st := s.(btState)
	pcg := st.PCG
	p.pcg = &pcg
	p.st = st
	p.st.Peer = st.Peer.Clone(rand.New(p.pcg))
	p.st.Sent, p.st.Got, p.st.Interested = cloneMap(st.Sent), cloneMap(st.Got), cloneMap(st.Interested)
	for r, ss := range st.Senders {
		p.out[r].RestoreSender(ss)
	}
	for r, rs := range st.Receivers {
		p.in[r].RestoreReceiver(rs)
	}
	p.restored = max(st.NextRechoke, 1)
	p.st.NextRechoke = p.inst.world.Now() + p.restored
	if p.st.Peer.Complete() && st.DoneAt != 0 {
		p.st.DoneAt = p.inst.world.Now()
	}
}

func cloneMap[K comparable, V any](m map[K]V) map[K]V {
	out := make(map[K]V, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// Handle implements sim.Handler: the rechoke timer.
func (p *btPeer) Handle(sim.Kind, int64) {
	p.rechoke()
	p.vm.After(p.inst.w.Config.RechokeInterval, p, evRechoke, 0)
}

func (p *btPeer) send(r int, kind int64, piece int, bytes int64) {
	p.out[r].Send(sim.Message{Tag: kind<<32 | int64(piece), Bytes: uint64(wireHeader + bytes)})
}

// rechoke ranks remotes by what they gave us (a seed: by what it gave
// them) and sends the choke and unchoke changes.
func (p *btPeer) rechoke() {
	now := p.inst.world.Now()
	p.st.NextRechoke = now + p.inst.w.Config.RechokeInterval
	rates := map[bt.PeerID]float64{}
	src := p.st.Got
	if p.st.Peer.Complete() {
		src = p.st.Sent
	}
	for r, b := range src {
		rates[bt.PeerID(r)] = float64(b)
	}
	before := map[int]bool{}
	for r := range p.out {
		before[r] = p.st.Peer.Unchokes(bt.PeerID(r))
	}
	p.st.Peer.Rechoke(now, rates)
	for r := 0; r < len(p.inst.peers); r++ {
		if r == p.id {
			continue
		}
		after := p.st.Peer.Unchokes(bt.PeerID(r))
		switch {
		case after && !before[r]:
			p.send(r, msgUnchoke, 0, 0)
		case !after && before[r]:
			p.send(r, msgChoke, 0, 0)
		}
	}
	clear(p.st.Sent)
	clear(p.st.Got)
}

// updateInterest tells remotes whether we want something they have.
func (p *btPeer) updateInterest() {
	for r := 0; r < len(p.inst.peers); r++ {
		if r == p.id {
			continue
		}
		want := p.st.Peer.InterestedIn(bt.PeerID(r))
		if want != p.st.Interested[r] {
			p.st.Interested[r] = want
			if want {
				p.send(r, msgInterested, 1, 0)
			} else {
				p.send(r, msgInterested, 0, 0)
			}
		}
	}
}

// request keeps Pipeline requests outstanding to remote r.
func (p *btPeer) request(r int) {
	for p.outstanding(r) < p.inst.w.Pipeline {
		piece, ok := p.st.Peer.NextRequest(bt.PeerID(r))
		if !ok {
			return
		}
		p.send(r, msgRequest, piece, 0)
	}
}

func (p *btPeer) unchokedCount() int {
	n := 0
	for r := range p.out {
		if p.st.Peer.Unchokes(bt.PeerID(r)) {
			n++
		}
	}
	return n
}

func (p *btPeer) outstanding(r int) int { return p.st.Peer.PendingFrom(bt.PeerID(r)) }

func (p *btPeer) onMessage(from int, m sim.Message) {
	kind, piece := m.Tag>>32, int(m.Tag&0xffffffff)
	peer := p.st.Peer
	switch kind {
	case msgHave:
		_ = peer.PeerHas(bt.PeerID(from), piece)
		p.updateInterest()
		p.request(from)
	case msgInterested:
		_ = peer.SetInterested(bt.PeerID(from), piece == 1)
		// Like real clients, fill a free upload slot at once rather than
		// at the next periodic rechoke.
		if piece == 1 && p.unchokedCount() <= p.inst.w.Config.RegularSlots {
			p.rechoke()
		}
	case msgChoke:
		_, _ = peer.SetChokedBy(bt.PeerID(from), true)
	case msgUnchoke:
		_, _ = peer.SetChokedBy(bt.PeerID(from), false)
		p.request(from)
	case msgRequest:
		if peer.Unchokes(bt.PeerID(from)) && peer.Has(piece) {
			n := p.inst.w.Config.PieceLen(piece)
			p.st.Sent[from] += uint64(n)
			p.send(from, msgPiece, piece, n)
		}
	case msgPiece:
		n := p.inst.w.Config.PieceLen(piece)
		if err := peer.Receive(bt.PeerID(from), piece, bt.PieceHash(p.inst.w.Config.FileID, piece)); err != nil {
			// A piece that arrives after its request was released by a
			// choke is discarded, as real clients do; a bad hash is a
			// failure of the run.
			if errors.Is(err, bt.ErrBadHash) && p.inst.bad == nil {
				p.inst.bad = fmt.Errorf("peer %d: %w", p.id, err)
			}
			return
		}
		now := p.inst.world.Now()
		p.st.Got[from] += uint64(n)
		p.vm.Mem.Write(now, float64(n)/core.PageSize)
		sec := int(now / time.Second)
		for len(p.inst.perSecond) <= sec {
			p.inst.perSecond = append(p.inst.perSecond, 0)
		}
		p.inst.perSecond[sec] += float64(n)
		for r := 0; r < len(p.inst.peers); r++ {
			if r != p.id {
				p.send(r, msgHave, piece, 0)
			}
		}
		if peer.Complete() && p.st.DoneAt == 0 {
			p.st.DoneAt = now
		}
		p.updateInterest()
		p.request(from)
	}
}
