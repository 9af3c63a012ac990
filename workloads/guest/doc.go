// Package guest holds the programs that run inside the real test VMs built by
// qemubackend/guestimg: heartbeat (a counter on the serial console every
// 10 ms, stamped by the host on arrival to measure a VM's pause from outside),
// dirtier (dirties memory at a set rate and verifies every page it rewrites),
// and tcpstream (every VM streams checksummed data to every other VM and
// verifies each byte it receives).
//
// Each program is a static Go binary (CGO_ENABLED=0) with its own main
// package; they print one line per write() so that lines from several programs
// sharing /dev/console never interleave. Lines start with an upper-case tag
// (HB, DIRTIER, TCPSTREAM) that the host parses.
package guest
