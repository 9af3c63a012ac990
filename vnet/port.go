package vnet

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vnsnap/vnsnap/core"
	"github.com/vnsnap/vnsnap/core/cut"
)

// port is one VM's attachment: a unix socket listener, at most one QEMU
// connection at a time, a transmit queue, and the receiving-side colour state.
type port struct {
	s    *Switch
	vm   core.VMID
	name string
	path string
	ln   *net.UnixListener
	q    chan *frame
	kick chan struct{} // wakes the writer for released or replayed frames
	up   atomic.Bool   // a connection is active
	// epoch mirrors cp.Epoch() for readers that do not take mu.
	epoch      atomic.Uint32
	replayLeft atomic.Int64
	c          portCounters

	mu       sync.Mutex // guards cp, released, replay; orders tagging against SetEpoch
	cp       core.Port[*frame]
	released []*frame // held frames released by SetEpoch, not yet written
	replay   []*frame // in-transit frames to write before anything else
}

// pconn is one QEMU connection to a port.
type pconn struct {
	conn *net.UnixConn
	done chan struct{}
	once sync.Once
	wg   sync.WaitGroup
}

func (c *pconn) close() {
	c.once.Do(func() {
		close(c.done)
		c.conn.Close()
	})
}

// AddPort creates a port bound to pc.VM and starts listening on pc.Path.
// The port starts in epoch 0 and accepts frames once QEMU connects.
func (s *Switch) AddPort(pc PortConfig) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if pc.Path == "" {
		return fmt.Errorf("vnet: port vm %d: empty socket path", pc.VM)
	}
	old := *s.ports.Load()
	for _, p := range old {
		if p.vm == pc.VM || p.path == pc.Path {
			return fmt.Errorf("%w: port vm %d path %s", ErrDuplicate, pc.VM, pc.Path)
		}
	}
	if err := removeStaleSocket(pc.Path); err != nil {
		return fmt.Errorf("vnet: port vm %d: %w", pc.VM, err)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: pc.Path, Net: "unix"})
	if err != nil {
		return fmt.Errorf("vnet: port vm %d: %w", pc.VM, err)
	}
	p := &port{
		s: s, vm: pc.VM, name: pc.Name, path: pc.Path, ln: ln,
		q:    make(chan *frame, s.cfg.QueueLen),
		kick: make(chan struct{}, 1),
	}
	p.cp.MaxHeld = s.cfg.MaxHeld
	ps := append(slices.Clip(old), p)
	sort.Slice(ps, func(i, j int) bool { return ps[i].vm < ps[j].vm })
	s.ports.Store(&ps)
	s.wg.Add(1)
	go p.acceptLoop()
	return nil
}

// removeStaleSocket removes a socket file left at path by an earlier run;
// anything else at path is an error.
func removeStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return err
	case fi.Mode()&fs.ModeSocket == 0:
		return fmt.Errorf("%s exists and is not a socket", path)
	}
	return os.Remove(path)
}

// Connected reports whether a QEMU process is connected to vm's port.
func (s *Switch) Connected(vm core.VMID) bool {
	p, err := s.port(vm)
	return err == nil && p.up.Load()
}

// WaitConnected waits until a QEMU process is connected to vm's port.
func (s *Switch) WaitConnected(ctx context.Context, vm core.VMID) error {
	p, err := s.port(vm)
	if err != nil {
		return err
	}
	return poll(ctx, func() bool { return p.up.Load() })
}

func poll(ctx context.Context, cond func() bool) error {
	t := time.NewTicker(2 * time.Millisecond)
	defer t.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}

// acceptLoop serves one connection at a time. A new connection replaces the
// current one (QEMU restarted, or a VM restored): the old one is closed and
// its goroutines finish before the new one starts, so only one writer ever
// drains the queue.
func (p *port) acceptLoop() {
	defer p.s.wg.Done()
	var cur *pconn
	defer func() {
		if cur != nil {
			cur.close()
			cur.wg.Wait()
		}
		os.Remove(p.path)
	}()
	for {
		conn, err := p.ln.AcceptUnix()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				p.s.log.Error("accept", "vm", p.vm, "err", err)
			}
			return
		}
		if cur != nil {
			cur.close()
			cur.wg.Wait()
		}
		if n := p.s.cfg.PortSendBuffer; n > 0 {
			if err := conn.SetWriteBuffer(n); err != nil {
				p.s.log.Warn("set port send buffer", "vm", p.vm, "err", err)
			}
		}
		cur = &pconn{conn: conn, done: make(chan struct{})}
		p.up.Store(true)
		p.c.connects.Add(1) // after up: a caller that sees the count sees the port up
		p.s.log.Info("port connected", "vm", p.vm, "name", p.name)
		cur.wg.Add(2)
		go p.readLoop(cur)
		go p.writeLoop(cur)
	}
}

// readLoop reads stream records from QEMU and forwards them.
func (p *port) readLoop(c *pconn) {
	defer c.wg.Done()
	defer func() {
		p.up.Store(false)
		c.close()
	}()
	br := bufio.NewReaderSize(c.conn, 64<<10)
	for {
		f, err := p.s.readRecord(br)
		if errors.Is(err, errLongRecord) {
			p.s.log.Error("port protocol error; closing", "vm", p.vm, "err", err)
			return
		}
		if err != nil {
			p.readErr(err)
			return
		}
		if f == nil {
			continue
		}
		p.c.rxFrames.Add(1)
		p.c.rxBytes.Add(uint64(f.n))
		p.s.ingressPort(p, f)
	}
}

// errLongRecord: a stream record announced more than MaxFrame bytes. The
// stream cannot be trusted to resynchronise, so the connection is closed.
var errLongRecord = errors.New("vnet: stream record longer than MaxFrame")

// readRecord reads the next stream record (4-byte big-endian length, then
// the frame) from br into a pooled frame with one reference. The stream is
// untrusted: a record shorter than an Ethernet header is skipped and
// returns (nil, nil); a record longer than MaxFrame returns errLongRecord
// before anything is allocated for it. Both count as bad frames.
func (s *Switch) readRecord(br *bufio.Reader) (*frame, error) {
	var lb [4]byte
	if _, err := io.ReadFull(br, lb[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(lb[:])
	if n > MaxFrame {
		s.stats.badFrames.Add(1)
		return nil, fmt.Errorf("%w: %d bytes", errLongRecord, n)
	}
	if n < MinFrame {
		s.stats.badFrames.Add(1)
		if _, err := br.Discard(int(n)); err != nil {
			return nil, noEOF(err)
		}
		return nil, nil
	}
	f := s.pool.get(int(n))
	if _, err := io.ReadFull(br, f.data()); err != nil {
		f.release()
		return nil, noEOF(err)
	}
	return f, nil
}

func (p *port) readErr(err error) {
	if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
		p.s.log.Info("port disconnected", "vm", p.vm)
		return
	}
	p.s.log.Warn("port read", "vm", p.vm, "err", err)
}

func (p *port) kickWriter() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// writeLoop writes frames to QEMU: replayed frames first, then frames
// released by SetEpoch, then the queue. It batches writes while the queue is
// busy and flushes when it runs dry.
func (p *port) writeLoop(c *pconn) {
	defer c.wg.Done()
	defer c.close()
	bw := bufio.NewWriterSize(c.conn, 64<<10)
	for {
		if !p.writePending(c, bw) {
			return
		}
		var f *frame
		select {
		case <-c.done:
			return
		case <-p.kick:
			continue
		case f = <-p.q:
		}
		if !p.egress(bw, f) {
			return
		}
		if len(p.q) == 0 {
			if err := bw.Flush(); err != nil {
				p.writeErr(err)
				return
			}
		}
	}
}

// writePending writes replayed and released frames. It reports false when
// the connection failed. Replayed frames that could not be written to this
// connection go back to the front of the replay queue for the next one (a
// restored VM reconnecting), so a writer outliving its connection cannot
// swallow them.
func (p *port) writePending(c *pconn, bw *bufio.Writer) bool {
	p.mu.Lock()
	if len(p.replay) == 0 && len(p.released) == 0 {
		p.mu.Unlock()
		return true
	}
	select {
	case <-c.done:
		p.mu.Unlock()
		return false
	default:
	}
	rp, rel := p.replay, p.released
	p.replay, p.released = nil, nil
	alg := p.s.Algorithm()
	ep := p.cp.Epoch()
	for _, f := range rel {
		p.decideDeliver(alg, f, ep)
	}
	p.mu.Unlock()
	ok := true
	for _, f := range rp {
		if ok {
			ok = p.write(bw, f)
		}
	}
	if ok {
		if err := bw.Flush(); err != nil {
			p.writeErr(err)
			ok = false
		}
	}
	if !ok {
		p.mu.Lock()
		p.replay = append(rp, p.replay...)
		p.mu.Unlock()
		p.kickWriter()
	} else {
		p.mu.Lock()
		for _, f := range rp {
			p.s.flog.add(frameEntry(LogReplay, f, p.vm, ep))
		}
		p.mu.Unlock()
		for _, f := range rp {
			f.release()
		}
		p.replayLeft.Add(-int64(len(rp)))
	}
	for _, f := range rel {
		if ok {
			ok = p.write(bw, f)
		}
		f.release()
	}
	if ok && len(rel) > 0 {
		if err := bw.Flush(); err != nil {
			p.writeErr(err)
			ok = false
		}
	}
	return ok
}

// egress applies the colour rule to f and writes it if the rule delivers.
// It consumes the queue's reference to f and reports false when the
// connection failed.
func (p *port) egress(bw *bufio.Writer, f *frame) bool {
	alg := p.s.Algorithm()
	p.mu.Lock()
	ep := p.cp.Epoch()
	switch act := p.cp.Admit(alg, f.epoch, f); act {
	case core.Hold:
		p.s.flog.add(frameEntry(LogHold, f, p.vm, ep))
		p.c.held.Add(1)
		p.mu.Unlock()
		return true // the hold queue keeps the reference
	case core.Drop, core.DropFull:
		reason := cut.DropColour
		if act == core.DropFull {
			reason = cut.DropQueue
			p.c.droppedQueue.Add(1)
		} else {
			p.c.droppedRule.Add(1)
		}
		p.s.logDrop(p, f, reason)
		p.mu.Unlock()
		f.release()
		return true
	}
	p.decideDeliver(alg, f, ep)
	p.mu.Unlock()
	ok := p.write(bw, f)
	f.release()
	return ok
}

// decideDeliver logs the delivery of f at epoch ep, recording it as channel
// state when the rule says DeliverLog. Called with mu held.
func (p *port) decideDeliver(alg core.Algorithm, f *frame, ep core.Epoch) {
	if core.Rule(alg, f.epoch, ep) == core.DeliverLog {
		if p.s.transit.add(p.vm, ep, f) {
			p.c.logged.Add(1)
			p.s.flog.add(frameEntry(LogDeliverLog, f, p.vm, ep))
			return
		}
		p.s.stats.transitOverflow.Add(1)
	}
	p.s.flog.add(frameEntry(LogDeliver, f, p.vm, ep))
}

func (p *port) write(bw *bufio.Writer, f *frame) bool {
	if _, err := bw.Write(f.stream()); err != nil {
		p.writeErr(err)
		return false
	}
	p.c.txFrames.Add(1)
	p.c.txBytes.Add(uint64(f.n))
	return true
}

func (p *port) writeErr(err error) {
	if !errors.Is(err, net.ErrClosed) {
		p.s.log.Warn("port write", "vm", p.vm, "err", err)
	}
}

// discard returns every queued, held, released and replayed frame to the
// pool. Called after the port's goroutines have finished.
func (p *port) discard() {
	for {
		select {
		case f := <-p.q:
			f.release()
			continue
		default:
		}
		break
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	held := p.cp.SetEpoch(^core.Epoch(0)) // empties the hold queue; the port is dead
	for _, f := range slices.Concat(p.replay, p.released, held) {
		f.release()
	}
	p.replay, p.released = nil, nil
}
