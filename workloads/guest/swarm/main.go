// Command swarm runs one peer of a BitTorrent swarm inside a VM: the
// project's own peer (workloads/bittorrent: rarest-first piece selection,
// tit-for-tat choking with an optimistic unchoke, the same state machine the
// simulator runs) speaking a small BitTorrent-like wire protocol over TCP to
// every other VM of the swarm.
//
// The first -seeders peers start with the whole file; the others download it.
// Piece i's content is fixed by (file, i), so every piece received is checked
// byte for byte before the peer takes it, and when the download is complete
// every piece held in memory is checked again (a snapshot or restore that
// lost a page of the file shows up there). A peer keeps serving until every
// peer it knows of holds the whole file.
//
// Output lines on stdout (the serial console):
//
//	SWARM START peer=<i> peers=<n> seed=<bool> pieces=<n> bytes=<n>
//	SWARM PROGRESS have=<pieces> rx=<bytes> tx=<bytes>
//	SWARM COMPLETE pieces=<n> bytes=<n> verified
//	SWARM FAIL <reason>
//	SWARM DONE peers=<n>
//
// Dialling retries until the peer listens and TCP keep-alive is off, so a
// pause of any length only delays the swarm.
package main

import (
	"bufio"
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"runtime/debug"
	"sync"
	"time"

	"github.com/vnsnap/vnsnap/workloads/bittorrent"
	"github.com/vnsnap/vnsnap/workloads/guest/internal/mesh"
)

// Wire messages: a type byte, a 4-byte big-endian piece index (unused by
// some types), and for msgPiece a 4-byte length and the bytes.
const (
	msgBitfield byte = iota + 1 // index: number of pieces; then the bitfield's bytes
	msgHave
	msgChoke
	msgUnchoke
	msgInterested
	msgNotInterested
	msgRequest
	msgPiece
	msgComplete // the sender holds the whole file
)

// maxPiece bounds a piece's length as read from the network.
const maxPiece = 16 << 20

// content fills b with piece i of file f.
func content(b []byte, f uint64, i int) {
	z := f*0x9E3779B97F4A7C15 ^ uint64(i)<<20
	var t [8]byte
	for o := 0; o < len(b); o += 8 {
		z += 0x9E3779B97F4A7C15
		x := (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
		x = (x ^ (x >> 27)) * 0x94D049BB133111EB
		binary.LittleEndian.PutUint64(t[:], x^(x>>31))
		copy(b[o:], t[:])
	}
}

// message is one wire message, as read or to be written.
type message struct {
	from  bittorrent.PeerID
	typ   byte
	index int
	data  []byte
	err   error // the connection failed
}

// conn is one remote peer's connection: a reader goroutine posting into the
// loop and a writer goroutine draining an unbounded queue, so the loop never
// blocks on a slow remote (two loops blocked on each other's full queues
// would deadlock the swarm).
type conn struct {
	c      net.Conn
	mu     sync.Mutex
	queue  []message
	closed bool
	wake   chan struct{} // capacity 1
	done   chan struct{} // closed when the writer has flushed and quit
}

func (c *conn) push(m message) {
	c.mu.Lock()
	c.queue = append(c.queue, m)
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

func (c *conn) close() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// write sends queued messages until close, then flushes.
func (c *conn) write() {
	defer close(c.done)
	w := bufio.NewWriterSize(c.c, 64<<10)
	for {
		c.mu.Lock()
		q, closed := c.queue, c.closed
		c.queue = nil
		c.mu.Unlock()
		for _, m := range q {
			if writeMsg(w, m) != nil {
				return
			}
		}
		if w.Flush() != nil || (closed && len(q) == 0) {
			return
		}
		if len(q) == 0 {
			<-c.wake
		}
	}
}

func writeMsg(w *bufio.Writer, m message) error {
	var h [9]byte
	h[0] = m.typ
	binary.BigEndian.PutUint32(h[1:], uint32(m.index))
	n := 5
	if m.typ == msgPiece || m.typ == msgBitfield {
		binary.BigEndian.PutUint32(h[5:], uint32(len(m.data)))
		n = 9
	}
	if _, err := w.Write(h[:n]); err != nil {
		return err
	}
	if _, err := w.Write(m.data); err != nil {
		return err
	}
	return nil
}

func readMsg(r *bufio.Reader, from bittorrent.PeerID) message {
	var h [9]byte
	if _, err := io.ReadFull(r, h[:5]); err != nil {
		return message{from: from, err: err}
	}
	m := message{from: from, typ: h[0], index: int(binary.BigEndian.Uint32(h[1:]))}
	if m.typ < msgBitfield || m.typ > msgComplete {
		return message{from: from, err: fmt.Errorf("message type %d unknown", m.typ)}
	}
	if m.typ == msgPiece || m.typ == msgBitfield {
		if _, err := io.ReadFull(r, h[5:9]); err != nil {
			return message{from: from, err: err}
		}
		n := binary.BigEndian.Uint32(h[5:])
		if n > maxPiece {
			return message{from: from, err: fmt.Errorf("message of %d bytes", n)}
		}
		m.data = make([]byte, n)
		if _, err := io.ReadFull(r, m.data); err != nil {
			return message{from: from, err: err}
		}
	}
	return m
}

// swarm is the peer and what it knows of the others. Only the loop touches it.
type swarm struct {
	cfg      bittorrent.Config
	peer     *bittorrent.Peer
	self     bittorrent.PeerID
	conns    map[bittorrent.PeerID]*conn
	pieces   [][]byte // held pieces' bytes
	complete map[bittorrent.PeerID]bool
	want     map[bittorrent.PeerID]bool // we told the remote we are interested
	rxFrom   map[bittorrent.PeerID]float64
	rx, tx   int64
	printf   func(string, ...any)
	depth    int    // requests in flight per remote
	dropped  int    // pieces received that were no longer requested
	scratch  []byte // one piece, to check content against
}

// pendingFrom reports whether piece i is requested from remote id.
func (s *swarm) pendingFrom(id bittorrent.PeerID, i int) bool {
	from, ok := s.peer.PendingPiece(i)
	return ok && from == id
}

func (s *swarm) send(id bittorrent.PeerID, m message) {
	if m.typ == msgPiece {
		s.tx += int64(len(m.data))
	}
	s.conns[id].push(m)
}

// refresh sends interest changes and requests to id, as far as the peer
// allows.
func (s *swarm) refresh(id bittorrent.PeerID) {
	if w := s.peer.InterestedIn(id); w != s.want[id] {
		s.want[id] = w
		t := msgNotInterested
		if w {
			t = msgInterested
		}
		s.send(id, message{typ: t})
	}
	for s.peer.PendingFrom(id) < s.depth {
		i, ok := s.peer.NextRequest(id)
		if !ok {
			break
		}
		s.send(id, message{typ: msgRequest, index: i})
	}
}

func (s *swarm) handle(m message) error {
	id := m.from
	if m.typ != msgBitfield && m.index >= s.cfg.NumPieces() {
		return fmt.Errorf("peer %d: piece %d out of range", id, m.index)
	}
	switch m.typ {
	case msgBitfield:
		if m.index != s.cfg.NumPieces() || len(m.data) != (m.index+7)/8 {
			return fmt.Errorf("peer %d: bitfield of %d pieces (%d bytes), want %d", id, m.index, len(m.data), s.cfg.NumPieces())
		}
		have := bittorrent.NewBitfield(m.index)
		for i := range m.index {
			if m.data[i/8]&(1<<(i%8)) != 0 {
				have.Set(i)
			}
		}
		if err := s.peer.Connect(id, have); err != nil {
			return err
		}
	case msgHave:
		if err := s.peer.PeerHas(id, m.index); err != nil {
			return err
		}
	case msgChoke, msgUnchoke:
		if _, err := s.peer.SetChokedBy(id, m.typ == msgChoke); err != nil {
			return err
		}
	case msgInterested, msgNotInterested:
		if err := s.peer.SetInterested(id, m.typ == msgInterested); err != nil {
			return err
		}
	case msgRequest:
		// A request from a remote we choke (it raced a choke) is dropped:
		// the remote releases it when the choke arrives.
		if s.peer.Unchokes(id) && s.peer.Has(m.index) {
			s.send(id, message{typ: msgPiece, index: m.index, data: s.pieces[m.index]})
		}
	case msgPiece:
		if s.peer.Has(m.index) || !s.pendingFrom(id, m.index) {
			// Sent before the remote saw our choke release the request,
			// or a duplicate: BitTorrent peers drop such pieces.
			s.dropped++
			break
		}
		want := s.scratch[:s.cfg.PieceLen(m.index)]
		content(want, s.cfg.FileID, m.index)
		h := bittorrent.PieceHash(s.cfg.FileID, m.index)
		if string(want) != string(m.data) {
			s.printf("SWARM FAIL piece %d from peer %d: content differs\n", m.index, id)
			h = bittorrent.Hash{}
		}
		if err := s.peer.Receive(id, m.index, h); err != nil {
			return err
		}
		s.rx += int64(len(m.data))
		s.rxFrom[id] += float64(len(m.data))
		s.pieces[m.index] = m.data
		for other := range s.conns {
			s.send(other, message{typ: msgHave, index: m.index})
		}
		if s.peer.Complete() {
			if err := s.verifyAll(); err != nil {
				return err
			}
			s.printf("SWARM COMPLETE pieces=%d bytes=%d verified\n", s.cfg.NumPieces(), s.cfg.FileSize)
			for other := range s.conns {
				s.send(other, message{typ: msgComplete})
			}
		}
	case msgComplete:
		s.complete[id] = true
	}
	for other := range s.conns {
		s.refresh(other)
	}
	return nil
}

// verifyAll checks every held piece against its content.
func (s *swarm) verifyAll() error {
	for i, b := range s.pieces {
		want := s.scratch[:s.cfg.PieceLen(i)]
		content(want, s.cfg.FileID, i)
		if string(b) != string(want) {
			return fmt.Errorf("piece %d held in memory differs from the file", i)
		}
	}
	return nil
}

// rechoke applies the peer's choking decision.
func (s *swarm) rechoke(now time.Duration) {
	before := map[bittorrent.PeerID]bool{}
	for id := range s.conns {
		before[id] = s.peer.Unchokes(id)
	}
	s.peer.Rechoke(now, s.rxFrom)
	for id := range s.conns {
		if u := s.peer.Unchokes(id); u != before[id] {
			t := msgChoke
			if u {
				t = msgUnchoke
			}
			s.send(id, message{typ: t})
		}
	}
	clear(s.rxFrom)
}

func (s *swarm) done() bool {
	if !s.peer.Complete() {
		return false
	}
	for id := range s.conns {
		if !s.complete[id] {
			return false
		}
	}
	return true
}

// dialAll connects to every other peer: peer i dials every j > i and
// accepts every j < i; a connection starts with the dialler's index.
func dialAll(ln net.Listener, self int, peers []string) (map[bittorrent.PeerID]net.Conn, error) {
	out := map[bittorrent.PeerID]net.Conn{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for j := self + 1; j < len(peers); j++ {
		wg.Go(func() {
			c := mesh.DialHello(peers[j], self, 200*time.Millisecond)
			mu.Lock()
			out[bittorrent.PeerID(j)] = c
			mu.Unlock()
		})
	}
	for range self {
		c, j, err := mesh.AcceptHello(ln)
		if err != nil {
			return nil, err
		}
		mu.Lock()
		_, dup := out[bittorrent.PeerID(j)]
		if j >= self || dup {
			mu.Unlock()
			return nil, fmt.Errorf("hello from %s: peer %d unexpected", c.RemoteAddr(), j)
		}
		out[bittorrent.PeerID(j)] = c
		mu.Unlock()
	}
	wg.Wait()
	return out, nil
}

// newSwarm returns peer self of a swarm, holding the whole file if seed,
// without connections.
func newSwarm(cfg bittorrent.Config, self int, seed bool, printf func(string, ...any)) (*swarm, error) {
	peer, err := bittorrent.NewPeer(cfg, bittorrent.PeerID(self), seed, rand.New(rand.NewPCG(cfg.FileID, uint64(self))))
	if err != nil {
		return nil, err
	}
	s := &swarm{cfg: cfg, peer: peer, self: bittorrent.PeerID(self), conns: map[bittorrent.PeerID]*conn{},
		pieces: make([][]byte, cfg.NumPieces()), complete: map[bittorrent.PeerID]bool{},
		want: map[bittorrent.PeerID]bool{}, rxFrom: map[bittorrent.PeerID]float64{}, printf: printf, depth: 8,
		scratch: make([]byte, cfg.PieceSize)}
	if seed {
		for i := range s.pieces {
			s.pieces[i] = make([]byte, cfg.PieceLen(i))
			content(s.pieces[i], cfg.FileID, i)
		}
	}
	return s, nil
}

// run runs the swarm over the connections until every peer holds the file.
func run(cfg bittorrent.Config, self int, seed bool, conns map[bittorrent.PeerID]net.Conn, rechoke, progress time.Duration, printf func(string, ...any)) error {
	s, err := newSwarm(cfg, self, seed, printf)
	if err != nil {
		return err
	}
	peer := s.peer
	in := make(chan message, 64)
	for id, c := range conns {
		cn := &conn{c: c, wake: make(chan struct{}, 1), done: make(chan struct{})}
		s.conns[id] = cn
		go func() {
			r := bufio.NewReaderSize(c, 64<<10)
			for {
				m := readMsg(r, id)
				in <- m
				if m.err != nil {
					return
				}
			}
		}()
		go cn.write()
	}
	// At the end, every queued message is flushed before the process
	// exits, so that a peer still running gets them all.
	all := make([]*conn, 0, len(s.conns))
	for _, c := range s.conns {
		all = append(all, c)
	}
	defer func() {
		for _, c := range all {
			c.close()
		}
		for _, c := range all {
			<-c.done
		}
	}()
	bf := make([]byte, (cfg.NumPieces()+7)/8)
	for i := range cfg.NumPieces() {
		if peer.Has(i) {
			bf[i/8] |= 1 << (i % 8)
		}
	}
	for id := range s.conns {
		s.send(id, message{typ: msgBitfield, index: cfg.NumPieces(), data: bf})
		if seed {
			s.send(id, message{typ: msgComplete})
		}
	}
	start := time.Now()
	rt, pt := time.NewTicker(rechoke), time.NewTicker(progress)
	defer rt.Stop()
	defer pt.Stop()
	s.rechoke(0)
	for !s.done() {
		select {
		case m := <-in:
			if m.err != nil {
				if s.complete[m.from] && s.peer.Complete() {
					// A peer that is done and has nothing left for us
					// may leave before we are done with the others.
					continue
				}
				return fmt.Errorf("peer %d: %w", m.from, m.err)
			}
			if err := s.handle(m); err != nil {
				return err
			}
		case <-rt.C:
			s.rechoke(time.Since(start))
		case <-pt.C:
			printf("SWARM PROGRESS have=%d rx=%d tx=%d\n", peer.Bitfield().Count(), s.rx, s.tx)
		}
	}
	printf("SWARM DONE peers=%d\n", len(conns)+1)
	return nil
}

func main() {
	peersFlag := flag.String("peers", "", "comma-separated IPs of all peers' VMs, this one included")
	selfFlag := flag.String("self", "", "this VM's IP (one of -peers)")
	port := flag.Int("port", 6881, "TCP port")
	seeders := flag.Int("seeders", 1, "the first N peers start with the whole file")
	size := flag.Int64("bytes", 16<<20, "file size")
	piece := flag.Int64("piece", bittorrent.DefaultPieceSize, "piece size")
	rechoke := flag.Duration("rechoke", 2*time.Second, "time between rechokes (BitTorrent: 10s)")
	progress := flag.Duration("progress", time.Second, "time between progress lines")
	flag.Parse()
	// A guest's RAM is small and also holds its root file system: keep the
	// heap near the file's size rather than twice it.
	debug.SetMemoryLimit(*size + 24<<20)
	var mu sync.Mutex
	printf := func(format string, a ...any) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Printf(format, a...) // one write per line
	}
	fail := func(format string, a ...any) {
		printf("SWARM FAIL "+format+"\n", a...)
		os.Exit(1)
	}
	peers, self, err := mesh.Peers(*peersFlag, *selfFlag, *port)
	if err != nil {
		fail("%v", err)
	}
	cfg := bittorrent.DefaultConfig(1, *size)
	cfg.PieceSize, cfg.RechokeInterval = *piece, *rechoke
	if err := cfg.Validate(); err != nil || *piece > maxPiece {
		fail("config: %v (piece at most %d)", err, maxPiece)
	}
	seed := self < *seeders
	printf("SWARM START peer=%d peers=%d seed=%t pieces=%d bytes=%d\n", self, len(peers), seed, cfg.NumPieces(), cfg.FileSize)
	ln, err := mesh.Listen(peers[self])
	if err != nil {
		fail("listen: %v", err)
	}
	conns, err := dialAll(ln, self, peers)
	if err != nil {
		fail("connect: %v", err)
	}
	if err := run(cfg, self, seed, conns, *rechoke, *progress, printf); err != nil {
		fail("peer %d: %v", self, err)
	}
}
