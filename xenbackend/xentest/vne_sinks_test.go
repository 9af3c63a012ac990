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
