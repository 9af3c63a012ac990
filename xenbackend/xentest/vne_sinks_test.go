//go:build xen_wip

// Work in progress (issue 8): TestXenVNESinks has not passed yet; it builds
// only with -tags xen_wip, so CI does not run it. Run:
//
//	cd xenbackend/xentest && CI=1 VNSNAP_XEN_DIR=<module>/.cache/xen \
//	  go test -tags xen_wip -run '^TestXenVNESinks$' -v -timeout 60m .

package xentest

import "testing"

// TestXenVNESinks is TestXenVNE's other snapshot kinds, in a boot of their
// own to keep each boot short: a live snapshot to the disk sink, then a
// stop-and-copy one, each verified and its cut checked, while the workload
// flows; the VNE is then restored from the stop-and-copy snapshot and must
// finish the workload.
func TestXenVNESinks(t *testing.T) {
	// 44 MB at 64 KiB/s: about 11 min of guest time, over both snapshots
	// (sized from TestXenVNE's s1; not yet run).
	runVNE(t, vneCase{snaps: []string{"s1 --sink disk", "s2 --algo stop-copy"}, restore: []string{"s2"}, bytes: 44_000_000})
}
