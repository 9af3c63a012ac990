// Package guest holds the programs that run inside the real test VMs built by
// qemubackend/guestimg: heartbeat (a counter on the serial console every
// 10 ms, stamped by the host on arrival to measure a VM's pause from outside),
// dirtier (dirties memory at a set rate and verifies every page it rewrites),
// tcpstream (every VM streams checksummed data to every other VM and
// verifies each byte it receives), npb (one rank per VM of an NPB
// kernel's communication and memory skeleton, from workloads/npb, every
// message and working-set page verified), and swarm (a BitTorrent swarm of
// the project's own peer, workloads/bittorrent, every piece verified on
// arrival and again when the download is complete), and diskcheck (a
// generation counter in the disk's first block, checked before each write:
// a disk restored with a snapshot must hold what the memory wrote last; the
// Xen disk test's guest, xenbackend/xentest).
//
// Each program is a static Go binary (CGO_ENABLED=0) with its own main
// package; they print one line per write() so that lines from several programs
// sharing /dev/console never interleave. Lines start with an upper-case tag
// (HB, DIRTIER, TCPSTREAM, NPB, SWARM, DISK) that the host parses.
package guest
