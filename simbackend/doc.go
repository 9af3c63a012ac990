// Package sim is vnsnap's discrete-event simulator of a virtual networked
// environment (VNE). It drives the same core.Coordinator as the real
// backends, with virtual time.
//
// The pieces:
//   - Engine (engine.go): one heap of events ordered by (time, sequence), one
//     master seed, typed events addressed to long-lived handlers; no goroutine
//     per entity. Every fired event is folded into a trace hash, so the same
//     seed must give the same hash.
//   - Hosts (host.go) with a disk, a memory bus and a NIC; copy traffic and
//     the memory sink's flush share the disk or the memory bus fairly with
//     other transfers (resource.go: a processor-sharing fluid model).
//   - VMs (vm.go) with 4 KiB-page memory and a dirtying model (memory.go: a
//     hot writable working set and a cold region, at a rate a workload can
//     change), a CPU that workloads consume, pause/resume, throttle.
//   - A network (net.go): one virtual switch per host applying the core's
//     colour rule, tunnels between hosts over the sender's uplink and the
//     receiver's downlink (so senders into one host share its downlink),
//     each with bandwidth, latency, a drop-tail queue and random loss.
//   - Packet-level TCP (tcp.go: slow start, congestion avoidance, NewReno
//     fast recovery, RTO with a 200 ms minimum, exponential backoff to
//     120 s; tcpack.go: Linux's delayed and quick ACKs; tcpsack.go: SACK
//     blocks, the RFC 6675 scoreboard and pipe with PRR) and UDP; every
//     segment carries a frame id the consistency checker sees.
//   - The driver (driver.go) that carries out the core's commands and feeds
//     back its events, and restore (restore.go), which rebuilds a VNE from
//     its snapshot and runs it on.
package sim
