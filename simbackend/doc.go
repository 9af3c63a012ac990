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
//     its snapshot and runs it on. Each VM's commands take their time one
//     after the other, as on a real backend: the pause, the switch's colour
//     flip, the disk freeze, the command that releases the final copy, the
//     copy of the last dirty pages with the device and vCPU state, the
//     resume (calibration.go: Calibration, loadable from the JSON file
//     `vnsnap calibrate` writes; the built-in numbers are placeholders).
//   - Two modes (Config.Mode), as the core has them. Observed, the default
//     and the real backends' mode: the core says StartLiveCopy and a
//     modelled hypervisor runs its own pre-copy loop (hvloop.go), reporting
//     passes as realbackend does: QEMU's (iterate until the dirty memory
//     fits downtime-limit at the pass's bandwidth; auto-converge throttling
//     20 %, then +10 %, on the second period whose dirtying outpaces half the
//     copy; a forced dirty sync every 5 s) or Xen's libxc rule (at most 5
//     live passes, or stop once fewer than 50 pages are dirty); hvmodel.go
//     holds their parameters. Driven: the core orders every round with its
//     stop policy (core/policy.go).
//   - Images that are really copied (image.go): every page has a version,
//     changed when a dirty-log sync finds it written; each copy step records
//     the versions it copies, and when a VM's image is complete it is
//     compared with memory at the snapshot point page for page
//     (VMResult.StaleUnits, zero on every seed of the property test; a
//     deliberately broken copy makes it non-zero). A restore starts from the
//     image. Which pages a sync finds dirty is drawn at the sync, uniformly
//     in each region, so versions cost what the copies cost.
//   - Copy-on-write (cow.go): memory is write-protected at the point and
//     copied in the background in 64 steps; each first write to a page not
//     yet copied faults, the page's old version is copied first and the
//     writing VM stalls for that copy (VM.Stall).
package sim
