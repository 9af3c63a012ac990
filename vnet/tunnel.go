package vnet

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"sort"
)

// tunnel is a UDP tunnel to the switch on another host. All tunnels share
// the switch's one UDP socket; a datagram's source address names its tunnel.
type tunnel struct {
	name string
	peer netip.AddrPort
	c    tunnelCounters
}

func (s *Switch) listenUDP(addr string) error {
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return fmt.Errorf("vnet: tunnel address %q: %w", addr, err)
	}
	c, err := net.ListenUDP("udp", ua)
	if err != nil {
		return fmt.Errorf("vnet: listen tunnel %s: %w", addr, err)
	}
	// A bigger receive buffer absorbs bursts; the kernel may cap it.
	_ = c.SetReadBuffer(4 << 20)
	_ = c.SetWriteBuffer(4 << 20)
	s.udp = c
	s.wg.Add(1)
	go s.tunnelLoop()
	return nil
}

// TunnelAddr returns the local address of the tunnel socket, to give to the
// peers' AddTunnel; the zero AddrPort if the switch has no tunnels.
func (s *Switch) TunnelAddr() netip.AddrPort {
	if s.udp == nil {
		return netip.AddrPort{}
	}
	return s.udp.LocalAddr().(*net.UDPAddr).AddrPort()
}

// AddTunnel adds a tunnel to the switch whose tunnel socket is at peer.
// Datagrams from addresses that are not a tunnel's peer are dropped.
func (s *Switch) AddTunnel(name string, peer netip.AddrPort) error {
	if s.udp == nil {
		return fmt.Errorf("vnet: tunnel %s: switch %d has no TunnelAddr", name, s.cfg.ID)
	}
	peer = netip.AddrPortFrom(peer.Addr().Unmap(), peer.Port())
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	old := *s.tunnels.Load()
	for _, t := range old {
		if t.name == name || t.peer == peer {
			return fmt.Errorf("%w: tunnel %s to %s", ErrDuplicate, name, peer)
		}
	}
	t := &tunnel{name: name, peer: peer}
	ts := append(slices.Clip(old), t)
	sort.Slice(ts, func(i, j int) bool { return ts[i].name < ts[j].name })
	s.tunnels.Store(&ts)
	peers := maps.Clone(*s.peers.Load())
	peers[peer] = t
	s.peers.Store(&peers)
	return nil
}

// sendTunnel sends f (whose header is written) to t's peer.
func (s *Switch) sendTunnel(t *tunnel, f *frame) {
	if _, err := s.udp.WriteToUDPAddrPort(f.wire(), t.peer); err != nil {
		t.c.txErrors.Add(1)
		if !errors.Is(err, net.ErrClosed) {
			s.log.Debug("tunnel send", "tunnel", t.name, "err", err)
		}
		return
	}
	t.c.txFrames.Add(1)
	t.c.txBytes.Add(uint64(f.n))
}

// tunnelLoop receives datagrams from every tunnel.
func (s *Switch) tunnelLoop() {
	defer s.wg.Done()
	buf := make([]byte, HeaderLen+MaxFrame+1)
	for {
		n, from, err := s.udp.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Warn("tunnel receive", "err", err)
			continue
		}
		s.receive(from, buf[:n])
	}
}

// receive forwards datagram d from the UDP address from. d is untrusted: a
// datagram from an address that is no tunnel's peer, or with a bad header, is
// counted and dropped. d is copied; the caller may reuse it.
func (s *Switch) receive(from netip.AddrPort, d []byte) {
	from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
	t := (*s.peers.Load())[from]
	if t == nil {
		s.stats.unknownPeers.Add(1)
		return
	}
	h, err := ParseHeader(d)
	if err != nil {
		s.stats.badHeaders.Add(1)
		s.log.Debug("tunnel receive", "tunnel", t.name, "err", err)
		return
	}
	f := s.pool.get(int(h.Len))
	copy(f.wire(), d)
	f.id, f.src, f.epoch = h.Frame, h.Src, h.Epoch
	f.meta = parseFlow(f.data())
	t.c.rxFrames.Add(1)
	t.c.rxBytes.Add(uint64(h.Len))
	s.ingressTunnel(t, f)
}
