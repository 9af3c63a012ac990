package vnet

import (
	"sync/atomic"

	"github.com/vnsnap/vnsnap/core"
)

type portCounters struct {
	connects                               atomic.Uint64
	rxFrames, rxBytes, txFrames, txBytes   atomic.Uint64
	flooded                                atomic.Uint64
	droppedRule, droppedQueue, droppedDown atomic.Uint64
	held, released, logged, replayed       atomic.Uint64
}

type tunnelCounters struct {
	rxFrames, rxBytes, txFrames, txBytes atomic.Uint64
	flooded, txErrors                    atomic.Uint64
}

type switchStats struct {
	badFrames, badHeaders, unknownPeers, filtered, transitOverflow atomic.Uint64
}

// PortCounters are one port's counters. "Rx" is from the VM into the
// switch, "Tx" from the switch to the VM.
type PortCounters struct {
	VM        core.VMID  `json:"vm"`
	Name      string     `json:"name"`
	Connected bool       `json:"connected"`
	Connects  uint64     `json:"connects"`
	Epoch     core.Epoch `json:"epoch"`
	RxFrames  uint64     `json:"rx_frames"`
	RxBytes   uint64     `json:"rx_bytes"`
	TxFrames  uint64     `json:"tx_frames"`
	TxBytes   uint64     `json:"tx_bytes"`
	// Flooded counts frames from this VM flooded for want of a learned
	// destination.
	Flooded uint64 `json:"flooded"`
	// DroppedRule counts frames for this VM dropped by the colour rule.
	DroppedRule uint64 `json:"dropped_rule"`
	// DroppedQueue counts frames for this VM dropped on a full transmit or
	// hold queue.
	DroppedQueue uint64 `json:"dropped_queue"`
	// DroppedDown counts frames for this VM dropped while no QEMU was
	// connected.
	DroppedDown uint64 `json:"dropped_down"`
	// Held counts frames ever held for this VM; HeldNow those held now;
	// Released those released by SetEpoch.
	Held     uint64 `json:"held"`
	HeldNow  int    `json:"held_now"`
	Released uint64 `json:"released"`
	// Logged counts frames delivered and recorded as channel state.
	Logged uint64 `json:"logged"`
	// Replayed counts frames queued by Replay.
	Replayed uint64 `json:"replayed"`
}

// TunnelCounters are one tunnel's counters.
type TunnelCounters struct {
	Name     string `json:"name"`
	Peer     string `json:"peer"`
	RxFrames uint64 `json:"rx_frames"`
	RxBytes  uint64 `json:"rx_bytes"`
	TxFrames uint64 `json:"tx_frames"`
	TxBytes  uint64 `json:"tx_bytes"`
	// Flooded counts frames from this tunnel flooded to the local ports.
	Flooded  uint64 `json:"flooded"`
	TxErrors uint64 `json:"tx_errors"`
}

// Counters is a snapshot of a switch's counters; ports sorted by VM, tunnels
// by name.
type Counters struct {
	Switch    uint16           `json:"switch"`
	Algorithm string           `json:"algorithm"`
	Ports     []PortCounters   `json:"ports"`
	Tunnels   []TunnelCounters `json:"tunnels"`
	// BadFrames counts stream records shorter than an Ethernet header or
	// longer than MaxFrame.
	BadFrames uint64 `json:"bad_frames"`
	// BadHeaders counts tunnel datagrams with a bad header.
	BadHeaders uint64 `json:"bad_headers"`
	// UnknownPeers counts datagrams from addresses that are no tunnel's.
	UnknownPeers uint64 `json:"unknown_peers"`
	// Filtered counts frames not forwarded because their destination is
	// where they came from.
	Filtered uint64 `json:"filtered"`
	// InTransitOverflow counts white-to-red frames delivered but not
	// recorded because the in-transit log was full.
	InTransitOverflow uint64 `json:"in_transit_overflow"`
	// InTransitBytes is the size of the in-transit log.
	InTransitBytes int64 `json:"in_transit_bytes"`
	// MACTableFull counts source addresses not learned because the MAC
	// table was full (Config.MaxMACs).
	MACTableFull uint64 `json:"mac_table_full"`
}

// Counters returns a snapshot of the switch's counters. Each counter is read
// atomically; the set is not one instant.
func (s *Switch) Counters() Counters {
	c := Counters{
		Switch:            s.cfg.ID,
		Algorithm:         s.Algorithm().String(),
		BadFrames:         s.stats.badFrames.Load(),
		BadHeaders:        s.stats.badHeaders.Load(),
		UnknownPeers:      s.stats.unknownPeers.Load(),
		Filtered:          s.stats.filtered.Load(),
		InTransitOverflow: s.stats.transitOverflow.Load(),
		InTransitBytes:    s.transit.size(),
		MACTableFull:      s.fdb.full.Load(),
	}
	for _, p := range *s.ports.Load() {
		p.mu.Lock()
		held := p.cp.Held()
		p.mu.Unlock()
		c.Ports = append(c.Ports, PortCounters{
			VM: p.vm, Name: p.name, Connected: p.up.Load(), Connects: p.c.connects.Load(),
			Epoch:    core.Epoch(p.epoch.Load()),
			RxFrames: p.c.rxFrames.Load(), RxBytes: p.c.rxBytes.Load(),
			TxFrames: p.c.txFrames.Load(), TxBytes: p.c.txBytes.Load(),
			Flooded:     p.c.flooded.Load(),
			DroppedRule: p.c.droppedRule.Load(), DroppedQueue: p.c.droppedQueue.Load(),
			DroppedDown: p.c.droppedDown.Load(),
			Held:        p.c.held.Load(), HeldNow: held, Released: p.c.released.Load(),
			Logged: p.c.logged.Load(), Replayed: p.c.replayed.Load(),
		})
	}
	for _, t := range *s.tunnels.Load() {
		c.Tunnels = append(c.Tunnels, TunnelCounters{
			Name: t.name, Peer: t.peer.String(),
			RxFrames: t.c.rxFrames.Load(), RxBytes: t.c.rxBytes.Load(),
			TxFrames: t.c.txFrames.Load(), TxBytes: t.c.txBytes.Load(),
			Flooded: t.c.flooded.Load(), TxErrors: t.c.txErrors.Load(),
		})
	}
	return c
}

// Port returns the counters of vm's port.
func (c Counters) Port(vm core.VMID) (PortCounters, bool) {
	for _, p := range c.Ports {
		if p.VM == vm {
			return p, true
		}
	}
	return PortCounters{}, false
}
