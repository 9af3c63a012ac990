// Package vnet is vnsnap's user-space virtual switch: a VIOLIN-like overlay
// that carries real QEMU VMs' Ethernet frames between hosts and applies the
// colour rule of a snapshot algorithm (core.Rule) to every frame.
//
// # Topology
//
// A Switch runs on each host. Each local VM has a port: a unix socket the
// switch listens on and QEMU connects to as a client with
//
//	-netdev stream,id=n0,server=off,addr.type=unix,addr.path=PATH,reconnect-ms=MS
//
// (qemubackend builds it). On the stream each frame is a 4-byte big-endian
// length followed by the raw Ethernet frame (no FCS, no virtio header). A
// port is bound to one VM (core.VMID) for its life; QEMU may connect late,
// disconnect and reconnect (VM restore), and a new connection replaces the
// current one. Switches on different hosts are joined by UDP tunnels, a full
// mesh, all through one UDP socket per switch.
//
// Across real hosts, Config.TunnelAddr is the host's own address on the
// network between hosts (the VNE file's host address), not a wildcard: a
// peer knows a tunnel by the datagrams' source address, so the switch must
// send from the address its peers were given (AddTunnel with each other
// host's TunnelAddr). TestSwitchesAcrossHosts runs three switches that way,
// each in its own process inside a network namespace of a test cluster
// (cluster/netnstest) with 20 ms and 1 % loss between hosts, with a real
// QEMU VM per host running the TCP workload through a colour flip while
// two of the hosts are partitioned.
//
// Forwarding is plain learning-bridge forwarding: the source MAC of every
// frame is learned against the port or tunnel it came from (optionally aged,
// Config.MACAge); a frame to a learned unicast address goes there; broadcast,
// multicast and unknown unicast are flooded to every local port and every
// tunnel, never back where they came from. A frame that came from a tunnel is
// never sent into a tunnel (split horizon: the sender already flooded to every
// switch).
//
// # The colour rule
//
// Tag at ingress: when the switch reads a frame from a VM's port it tags it
// with that port's epoch (the VM's colour) and a frame id unique in the VNE
// (the switch id in bits 48..62, a counter below). Frames between two local
// ports get the same treatment as frames through a tunnel.
//
// Rule at egress: each port holds a core.Port. The port's writer goroutine
// applies core.Port.Admit with the switch's algorithm (SetAlgorithm) just
// before it writes a frame to the VM's socket, so the decision is taken
// against the receiver's epoch at delivery time:
//
//   - Deliver: written to the VM;
//   - Drop: counted (PortCounters.DroppedRule) and logged;
//   - Hold (vnsnap-log): kept in the port until SetEpoch advances the port's
//     epoch, then written in arrival order ahead of later frames;
//   - DeliverLog (vnsnap-log, white to red): written, and its bytes kept in
//     the in-transit log of the receiver's epoch (per destination VM) for
//     replay at restore: InTransit, WriteInTransit, ReadInTransit, Replay,
//     WaitReplayed, ForgetInTransit.
//
// SetEpoch(vm, e) is the VM's snapshot point. Call it while the VM is paused,
// before it runs again. It is synchronous: when it returns, every frame read
// from the VM afterwards is tagged e, every frame admitted to it afterwards is
// judged against e, and the cut record is in the frame log.
//
// Where the switch cannot see: frames already written to a VM's socket but
// not yet read by its NIC when the VM pauses reach the guest after its
// snapshot point, yet the frame log records them as delivered before it; and
// frames the guest sent before pausing that the switch reads after SetEpoch
// are tagged with the new epoch. The first kind are in transit but logged as
// received in the image (TCP recovers them; vnsnap-log does not record them);
// the second are treated as post-snapshot frames (dropped for a pre-snapshot
// receiver under vnsnap, which is always safe). Both errors are conservative:
// no real orphan can arise (a post-snapshot frame is always read after
// SetEpoch, so it is always tagged red) and the checker can only over-count
// orphans, never miss one. A smaller socket buffer narrows the first window.
//
// # Tunnel header
//
// Every tunnel datagram is a 24-byte header followed by the Ethernet frame.
// All fields are big-endian:
//
//	offset size field
//	0      1    magic 0x56 ('V')
//	1      1    version (1); a receiver drops other versions
//	2      1    type (0: frame)
//	3      1    flags (0)
//	4      4    frame epoch: the sending port's epoch when the frame was read
//	8      8    frame id: switch id << 48 | per-switch counter
//	16     4    source VM id (int32)
//	20     4    frame length; must equal the datagram length - 24
//
// The last four header bytes are also the stream record's length prefix, so a
// frame is forwarded to a port and into tunnels from one buffer without
// copying. A frame is at most MaxFrame bytes (one IPv4 UDP datagram).
//
// Everything a switch reads from the network or from disk is untrusted.
// ParseHeader drops (and Counters.BadHeaders counts) a datagram with another
// magic, version or type, a negative source VM, a frame id with bit 63 set,
// or a frame length that does not match the datagram or lies outside
// [MinFrame, MaxFrame]; a stream record from QEMU longer than MaxFrame closes
// the connection before anything is allocated for it; the MAC table is
// bounded (Config.MaxMACs); the log readers allocate only as bytes arrive.
// Go fuzz targets cover each decoder (fuzz_test.go).
//
// # Frame log
//
// Config.FrameLog receives a binary log of every frame event of the switch,
// in the order the switch decided them (one mutex orders the stream; a
// port's cut record is appended under the same lock that orders its tagging
// and admissions). It starts with a 32-byte header, then fixed 64-byte
// records. All fields are little-endian.
//
//	header: offset size field
//	0      8    magic "VNSNAPFL"
//	8      2    version (1)
//	10     2    record size (64)
//	12     2    switch id
//	14     2    reserved (0)
//	16     8    wall-clock start, Unix ns
//	24     8    reserved (0)
//
//	record: offset size field
//	0      8    time: host monotonic ns since the log's start
//	8      8    frame id (0 for a cut)
//	16     4    source VM (int32; for a cut, the VM)
//	20     4    destination VM (int32; -1 when not a local port)
//	24     4    frame epoch (for a cut, the new epoch)
//	28     4    destination epoch at the decision (for a cut, the old epoch)
//	32     1    action: 1 send, 2 deliver, 3 drop, 4 hold, 5 deliver-log,
//	            6 cut, 7 replay
//	33     1    drop reason: 1 colour, 2 queue, 3 loss (port down) (cut.DropReason)
//	34     1    protocol: 0 other, 1 TCP, 2 UDP (cut.Proto)
//	35     1    TCP flags
//	36     2    Ethernet frame bytes
//	38     2    copies: for a send, ports and tunnels it was forwarded to
//	40     4    flow id: FNV-1a of (protocol, addresses, ports), 0 if none
//	44     4    reverse flow id
//	48     4    TCP sequence number
//	52     4    TCP acknowledgement (0 without ACK)
//	56     4    transport payload bytes
//	60     4    reserved (0)
//
// ReadLogEntries decodes a log; ReadLog and ReadLogs convert one or several
// switches' logs into the cut.Record trace the consistency checker reads:
// send at ingress, receive at delivery to the VM's socket, drop, log, and a
// cut when a port's epoch is set. Each log keeps its own order; logs are
// merged by time (wall-clock start plus monotonic offset), except that a
// frame's events at the receiving switch never precede its send: clocks of
// different hosts are not comparable, but the only cross-switch order the
// checker depends on is send before receipt of the same frame, which is
// causal, so the merge enforces it. Parse errors name the byte offset.
//
// # In-transit log
//
// WriteInTransit writes a 16-byte header (magic "VNSNAPCH", version uint16 =
// 1, reserved uint16, frame count uint32) and per frame a 28-byte record
// (destination VM int32, snapshot epoch uint32, source VM int32, frame epoch
// uint32, frame id uint64, length uint32) followed by the frame. Big-endian.
//
// # Control protocol
//
// ServeControl serves a line protocol on any net.Listener (a unix socket, or
// TCP for a coordinator on another host; it has no authentication, so expose
// it only on a trusted network). Each request is one JSON object on one line,
// answered in order by one JSON line with the same id:
//
//	{"id":1,"op":"set-epoch","vm":2,"epoch":1}  ->  {"id":1,"ok":true}
//	{"id":2,"op":"set-algorithm","algorithm":"vnsnap-log"}
//	{"id":3,"op":"epoch","vm":2}                ->  {"id":3,"ok":true,"epoch":1}
//	{"id":4,"op":"counters"}                    ->  {"id":4,"ok":true,"counters":{...}}
//	{"id":5,"op":"dump-log","epoch":1}          ->  {"id":5,"ok":true,"frames":3,"data":"<base64>"}
//	{"id":6,"op":"dump-log","epoch":1,"path":"/var/lib/vnsnap/e1.chan"}  (written on the switch's host)
//	{"id":7,"op":"forget-log","epoch":1}
//	{"id":8,"op":"replay","data":"<base64>"}    (or "path"; -> "frames": queued)
//	{"id":9,"op":"flush-log"}
//	{"id":10,"op":"ping"}
//
// A failure answers {"id":N,"ok":false,"error":"...","code":C} with C one of
// unknown-vm, epoch-backwards, closed, bad-request, internal. set-epoch is
// answered after the flip is effective. Client implements it; *Switch and
// *Client both satisfy Controller.
package vnet
