//go:build xen_wip

// TestXenVNESinks is out of CI again (7 December 2026): in that day's
// fresh-clone CI, beside TestXenVNE, its first snapshot had not ended after
// 32 minutes, with its workload at 35 of 44 MB, and the main stage would
// have passed its 80-minute timeout (on 4 December the pair took 350 and
// 476 s). Until it is made cheaper (a smaller workload, or a boot shared
// with TestXenVNE), it builds with -tags xen_wip:
//
//	cd xenbackend/xentest && CI=1 VNSNAP_XEN_DIR=<module>/.cache/xen \
//	  go test -tags xen_wip -run '^TestXenVNESinks$' -v -timeout 70m .

package xentest

import "testing"

// TestXenVNESinks is TestXenVNE's other snapshot kinds, in a boot of their
// own to keep each boot short: a live snapshot to the disk sink, then a
// stop-and-copy one, each verified and its cut checked, while the workload
// flows; the VNE is then restored from the stop-and-copy snapshot and must
// finish the workload.
func TestXenVNESinks(t *testing.T) {
	t.Parallel() // beside TestXenVNE
	// 44 MB at 64 KiB/s: about 11 min of guest time if paced throughout,
	// over both snapshots (sized from TestXenVNE's s1). s2 ended at 15-16
	// MB in two passing runs (the first run went down at 20 MB) and at 9.7
	// MB in a later one: the margin is for a loaded machine, where the
	// snapshots take longer against the paced streams; the restored run
	// sends the rest unpaced (vneUnpace), so it costs little. s2, the
	// stop-and-copy, must stay last: its pause unpaces the first run.
	runVNE(t, vneCase{snaps: []string{"s1 --sink disk", "s2 --algo stop-copy"}, restore: []string{"s2"}, bytes: 44_000_000})
}
