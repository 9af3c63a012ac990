package vnet

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vnsnap/vnsnap/core"
	"github.com/vnsnap/vnsnap/core/cut"
)

// Errors returned for caller mistakes.
var (
	// ErrClosed: the switch is closed.
	ErrClosed = errors.New("vnet: switch closed")
	// ErrUnknownVM: no port of this switch is bound to the VM.
	ErrUnknownVM = errors.New("vnet: no port for vm")
	// ErrEpochBackwards: SetEpoch asked for an epoch before the port's.
	ErrEpochBackwards = errors.New("vnet: epoch moved backwards")
	// ErrDuplicate: a port or tunnel with that VM, path, name or peer exists.
	ErrDuplicate = errors.New("vnet: duplicate port or tunnel")
)

// MaxSwitchID is the largest switch id: ids occupy bits 48..62 of frame ids.
const MaxSwitchID = 1<<15 - 1

// Config configures a Switch.
type Config struct {
	// ID identifies the switch in frame ids (bits 48..62); every switch of a
	// VNE needs a distinct ID, at most MaxSwitchID.
	ID uint16
	// Algorithm is the snapshot algorithm whose rule the switch applies;
	// SetAlgorithm changes it between snapshots.
	Algorithm core.Algorithm
	// TunnelAddr is the local UDP address for tunnels ("127.0.0.1:0" picks
	// a port); empty means no tunnels.
	TunnelAddr string
	// FrameLog receives the binary frame log; nil writes none. The switch
	// buffers it and flushes on FlushLog, every LogFlushInterval, and on
	// Close; it never closes it.
	FrameLog io.Writer
	// LogFlushInterval is how often the frame log is flushed; 0 means
	// 100ms, negative means only on FlushLog and Close.
	LogFlushInterval time.Duration
	// QueueLen is each port's transmit queue length in frames; 0 means 512.
	// A frame for a full queue is dropped (cut.DropQueue).
	QueueLen int
	// MaxHeld bounds each port's hold queue (vnsnap-log); 0 means core's
	// default. Beyond it Hold becomes a drop (cut.DropQueue).
	MaxHeld int
	// MaxInTransitBytes bounds the in-transit log; 0 means 64 MiB. A
	// white-to-red frame beyond it is delivered but not recorded (counted
	// in Counters.InTransitOverflow, logged as a plain delivery).
	MaxInTransitBytes int64
	// PortSendBuffer sets SO_SNDBUF of each port connection when positive.
	// A smaller buffer holds fewer frames that a paused VM has not read (see
	// the package doc), at some cost in throughput.
	PortSendBuffer int
	// MACAge expires learned MAC addresses not seen for this long; 0 keeps
	// them until they move.
	MACAge time.Duration
	// MaxMACs bounds the MAC learning table, whose source addresses come
	// from untrusted frames; 0 means 16384. When it is full (after expired
	// addresses are removed) a new address is not learned: frames to it
	// are flooded (Counters.MACTableFull counts them).
	MaxMACs int
	// Logger receives diagnostics (connections, drops at debug level); nil
	// discards them.
	Logger *slog.Logger
}

// PortConfig binds a port to one VM and one unix socket path.
type PortConfig struct {
	VM   core.VMID
	Name string
	// Path is the unix socket the switch listens on; QEMU connects to it
	// (qemubackend builds the -netdev value). A stale socket file at Path is replaced.
	Path string
}

// Switch is a user-space Ethernet switch with QEMU stream ports, UDP tunnels
// to other switches, MAC learning, and the colour rule of a snapshot
// algorithm applied at every port's egress. It is safe for concurrent use.
type Switch struct {
	cfg  Config
	log  *slog.Logger
	pool *framePool
	flog *frameLog
	alg  atomic.Uint32
	seq  atomic.Uint64
	fdb  fdb
	udp  *net.UDPConn

	transit inTransit
	stats   switchStats

	ports   atomic.Pointer[[]*port]   // sorted by VM; copy on write under mu
	tunnels atomic.Pointer[[]*tunnel] // sorted by name; copy on write under mu
	peers   atomic.Pointer[map[netip.AddrPort]*tunnel]

	mu        sync.Mutex // guards the fields below and the copy-on-write lists
	closed    bool
	ctrlLns   map[net.Listener]struct{}
	ctrlConns map[net.Conn]struct{}

	done chan struct{}
	wg   sync.WaitGroup
}

// New starts a switch with no ports and no tunnels.
func New(cfg Config) (*Switch, error) {
	if cfg.ID > MaxSwitchID {
		return nil, fmt.Errorf("vnet: switch id %d above %d", cfg.ID, MaxSwitchID)
	}
	if int(cfg.Algorithm) >= len(core.Algorithms()) {
		return nil, fmt.Errorf("vnet: unknown algorithm %d", cfg.Algorithm)
	}
	if cfg.QueueLen == 0 {
		cfg.QueueLen = 512
	}
	if cfg.MaxInTransitBytes == 0 {
		cfg.MaxInTransitBytes = 64 << 20
	}
	if cfg.LogFlushInterval == 0 {
		cfg.LogFlushInterval = 100 * time.Millisecond
	}
	if cfg.MaxMACs < 0 {
		return nil, fmt.Errorf("vnet: MaxMACs %d is negative", cfg.MaxMACs)
	}
	if cfg.MaxMACs == 0 {
		cfg.MaxMACs = 1 << 14
	}
	s := &Switch{
		cfg:       cfg,
		log:       cfg.Logger,
		pool:      newFramePool(),
		fdb:       fdb{age: cfg.MACAge, max: cfg.MaxMACs, m: make(map[mac]fdbEntry)},
		ctrlLns:   make(map[net.Listener]struct{}),
		ctrlConns: make(map[net.Conn]struct{}),
		done:      make(chan struct{}),
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.log = s.log.With("switch", cfg.ID)
	s.transit.max = cfg.MaxInTransitBytes
	s.alg.Store(uint32(cfg.Algorithm))
	s.ports.Store(&[]*port{})
	s.tunnels.Store(&[]*tunnel{})
	s.peers.Store(&map[netip.AddrPort]*tunnel{})
	if cfg.FrameLog != nil {
		l, err := newFrameLog(cfg.FrameLog, cfg.ID)
		if err != nil {
			return nil, fmt.Errorf("vnet: switch %d: %w", cfg.ID, err)
		}
		s.flog = l
	}
	if cfg.TunnelAddr != "" {
		if err := s.listenUDP(cfg.TunnelAddr); err != nil {
			return nil, err
		}
	}
	if s.flog != nil && cfg.LogFlushInterval > 0 {
		s.wg.Add(1)
		go s.flushLoop()
	}
	return s, nil
}

func (s *Switch) flushLoop() {
	defer s.wg.Done()
	t := time.NewTicker(s.cfg.LogFlushInterval)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
			if err := s.flog.flush(); err != nil {
				s.log.Error("flush frame log", "err", err)
				return
			}
		}
	}
}

// ID returns the switch id.
func (s *Switch) ID() uint16 { return s.cfg.ID }

// Algorithm returns the algorithm whose rule the switch applies.
func (s *Switch) Algorithm() core.Algorithm { return core.Algorithm(s.alg.Load()) }

// SetAlgorithm changes the algorithm for every frame admitted from now on.
// Frames already held stay held until their port's epoch advances.
func (s *Switch) SetAlgorithm(a core.Algorithm) error {
	if int(a) >= len(core.Algorithms()) {
		return fmt.Errorf("vnet: unknown algorithm %d", a)
	}
	s.alg.Store(uint32(a))
	return nil
}

// SetEpoch moves vm's port to epoch e: the VM's snapshot point. Call it
// while the VM is paused, before it runs again. When SetEpoch returns, every
// frame read from the VM afterwards is tagged e, every frame admitted to it
// afterwards is judged against e, the cut record is in the frame log, and the
// frames held for it that e releases are queued for delivery ahead of any
// later frame. Setting the current epoch again does nothing; an earlier one
// returns ErrEpochBackwards.
func (s *Switch) SetEpoch(vm core.VMID, e core.Epoch) error {
	p, err := s.port(vm)
	if err != nil {
		return err
	}
	if s.isClosed() {
		return ErrClosed
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	cur := p.cp.Epoch()
	switch {
	case e < cur:
		return fmt.Errorf("%w: vm %d from %d to %d", ErrEpochBackwards, vm, cur, e)
	case e == cur:
		return nil
	}
	rel := p.cp.SetEpoch(e)
	p.epoch.Store(uint32(e))
	s.flog.add(LogEntry{Action: LogCut, Src: vm, Dst: vm, FrameEpoch: e, DstEpoch: cur})
	if len(rel) > 0 {
		p.released = append(p.released, rel...)
		p.c.released.Add(uint64(len(rel)))
		p.kickWriter()
	}
	return nil
}

// Epoch returns vm's port epoch.
func (s *Switch) Epoch(vm core.VMID) (core.Epoch, error) {
	p, err := s.port(vm)
	if err != nil {
		return 0, err
	}
	return core.Epoch(p.epoch.Load()), nil
}

// FlushLog writes the buffered frame log records out.
func (s *Switch) FlushLog() error { return s.flog.flush() }

func (s *Switch) port(vm core.VMID) (*port, error) {
	ps := *s.ports.Load()
	i := sort.Search(len(ps), func(i int) bool { return ps[i].vm >= vm })
	if i == len(ps) || ps[i].vm != vm {
		return nil, fmt.Errorf("%w %d on switch %d", ErrUnknownVM, vm, s.cfg.ID)
	}
	return ps[i], nil
}

func (s *Switch) newID() uint64 {
	return uint64(s.cfg.ID)<<48 | s.seq.Add(1)&(1<<48-1)
}

func (s *Switch) isClosed() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// Close stops the switch: it closes every listener, connection and the
// tunnel socket, waits for its goroutines, removes the socket files it
// created and flushes the frame log. Queued and held frames are discarded.
func (s *Switch) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.done)
	for l := range s.ctrlLns {
		l.Close()
	}
	for c := range s.ctrlConns {
		c.Close()
	}
	if s.udp != nil {
		s.udp.Close()
	}
	ps := *s.ports.Load()
	for _, p := range ps {
		p.ln.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	for _, p := range ps {
		p.discard()
	}
	return s.flog.flush()
}

// ingressPort forwards frame f just read from port in. It holds one
// reference to f and releases it.
func (s *Switch) ingressPort(in *port, f *frame) {
	d := f.data()
	f.meta = parseFlow(d)
	s.fdb.learn(srcMAC(d), loc{p: in})
	dstPort, dstTun, flood := s.fdb.lookup(dstMAC(d))
	ports, tunnels := *s.ports.Load(), *s.tunnels.Load()
	copies := 0
	dstVM, dstEpoch := NoVM, core.Epoch(0)
	switch {
	case flood:
		copies = len(ports) - 1 + len(tunnels)
		in.c.flooded.Add(1)
	case dstPort == in:
		s.stats.filtered.Add(1) // never back where it came from
	case dstPort != nil:
		copies, dstVM, dstEpoch = 1, dstPort.vm, core.Epoch(dstPort.epoch.Load())
	case dstTun != nil:
		copies = 1
	}

	// Tag and log under the sender's port lock, so that the tag and the
	// send record's place relative to the sender's cut record agree.
	in.mu.Lock()
	f.epoch = in.cp.Epoch()
	f.id = s.newID()
	f.src = in.vm
	e := frameEntry(LogSend, f, dstVM, dstEpoch)
	e.Copies = uint16(min(copies, 0xffff))
	s.flog.add(e)
	in.mu.Unlock()
	f.putHeader()

	switch {
	case flood:
		for _, p := range ports {
			if p != in {
				s.enqueue(p, f)
			}
		}
		for _, t := range tunnels {
			s.sendTunnel(t, f)
		}
	case dstPort != nil && dstPort != in:
		s.enqueue(dstPort, f)
	case dstTun != nil:
		s.sendTunnel(dstTun, f)
	}
	f.release()
}

// ingressTunnel forwards frame f received from tunnel t (its header already
// parsed into f). Frames from a tunnel never go back into a tunnel: the
// tunnels form a full mesh and the sending switch has already flooded to
// every other switch (split horizon).
func (s *Switch) ingressTunnel(t *tunnel, f *frame) {
	d := f.data()
	s.fdb.learn(srcMAC(d), loc{t: t})
	dstPort, dstTun, flood := s.fdb.lookup(dstMAC(d))
	switch {
	case flood:
		t.c.flooded.Add(1)
		for _, p := range *s.ports.Load() {
			s.enqueue(p, f)
		}
	case dstPort != nil:
		s.enqueue(dstPort, f)
	case dstTun != nil: // behind a tunnel: not ours to forward
		s.stats.filtered.Add(1)
	}
	f.release()
}

// enqueue hands f to p's transmit queue; the colour rule is applied when p's
// writer takes it, as close as possible to the VM.
func (s *Switch) enqueue(p *port, f *frame) {
	if !p.up.Load() {
		p.c.droppedDown.Add(1)
		s.logDrop(p, f, cut.DropLoss)
		return
	}
	f.refs.Add(1)
	select {
	case p.q <- f:
	default:
		f.refs.Add(-1)
		p.c.droppedQueue.Add(1)
		s.logDrop(p, f, cut.DropQueue)
	}
}

func (s *Switch) logDrop(p *port, f *frame, r cut.DropReason) {
	e := frameEntry(LogDrop, f, p.vm, core.Epoch(p.epoch.Load()))
	e.Reason = r
	s.flog.add(e)
	s.log.Debug("drop", "frame", f.id, "src", f.src, "dst", p.vm, "reason", r)
}

type mac [6]byte

func srcMAC(d []byte) (m mac) { copy(m[:], d[6:12]); return m }
func dstMAC(d []byte) (m mac) { copy(m[:], d[0:6]); return m }

// loc is where a MAC address was learned: a local port or a tunnel.
type loc struct {
	p *port
	t *tunnel
}

type fdbEntry struct {
	loc  loc
	seen time.Time // zero unless aging is on
}

// fdb is the MAC learning table.
type fdb struct {
	age   time.Duration
	max   int
	mu    sync.RWMutex
	m     map[mac]fdbEntry
	swept time.Time     // last sweep of expired entries, under mu
	full  atomic.Uint64 // addresses not learned because the table was full
}

// learn records that src was seen at l. Group addresses are not learned,
// and neither is a new address while the table is full.
func (t *fdb) learn(src mac, l loc) {
	if src[0]&1 != 0 {
		return
	}
	var now time.Time
	if t.age > 0 {
		now = time.Now()
	}
	t.mu.RLock()
	e, ok := t.m[src]
	t.mu.RUnlock()
	if ok && e.loc == l && (t.age == 0 || now.Sub(e.seen) < t.age/4) {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.m[src]; !ok && len(t.m) >= t.max {
		t.sweep(now)
		if len(t.m) >= t.max {
			t.full.Add(1)
			return
		}
	}
	t.m[src] = fdbEntry{loc: l, seen: now}
}

// sweep removes expired entries, at most once per quarter of the age so
// that a flood of new addresses into a full table costs little. Callers
// hold mu.
func (t *fdb) sweep(now time.Time) {
	if t.age == 0 || now.Sub(t.swept) < t.age/4 {
		return
	}
	t.swept = now
	for k, e := range t.m {
		if now.Sub(e.seen) > t.age {
			delete(t.m, k)
		}
	}
}

// lookup says where dst is: a port, a tunnel, or nowhere known (flood).
func (t *fdb) lookup(dst mac) (*port, *tunnel, bool) {
	if dst[0]&1 != 0 {
		return nil, nil, true
	}
	t.mu.RLock()
	e, ok := t.m[dst]
	t.mu.RUnlock()
	if !ok || (t.age > 0 && time.Since(e.seen) > t.age) {
		return nil, nil, true
	}
	return e.loc.p, e.loc.t, false
}
