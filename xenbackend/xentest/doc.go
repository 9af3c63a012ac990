// Package xentest boots real Xen inside QEMU for tests: Debian 12's Xen 4.17
// with a Linux dom0, emulated by Debian 12's QEMU 7.2 under TCG, all unpacked
// from pinned .debs by scripts/setup-xen.sh into <module>/.cache/xen (nothing
// is installed on the host).
//
// A test builds a dom0 initramfs (BuildDom0Initrd) holding busybox, xl and
// the Xen daemons with their libraries, the Xen kernel modules, and the files
// and script the test adds; Boot starts QEMU on it, and the test follows the
// serial console, where Xen, dom0 and the script print, with Machine.Wait.
// Deadlines come from console progress: a Wait fails when the console has
// been silent for BootConfig.Stall, never after a fixed wall time, because
// the machine's load changes how long TCG takes by a large factor.
//
// Why QEMU 7.2 and not the host's QEMU 10: under QEMU 10's TCG a PVH domU of
// Debian's Xen 4.17 powers itself off at boot (QEMU 10 reports guest CR reads
// as CR0-read intercepts, and this Xen then hands the guest a stale CR2).
//
// # Work in progress
//
// TestXenMachine (one domU through vnsnap up, a live snapshot, down and a
// restore) and TestXenVNE (two domUs running tcpstream on the switch in
// dom0, snapshot, verify, restore; cut checked by testdata/framecheck) are
// written but have not passed: at load 35-45 one boot took 19-30 minutes,
// and with two domUs dom0's processes (xl, busybox) began to segfault in
// ld.so right after the second domain was created, for a reason not yet
// found. They build only with -tags xen_wip, so CI does not run them.
package xentest
