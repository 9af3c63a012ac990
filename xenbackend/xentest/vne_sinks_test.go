package xentest

import "testing"

// TestXenVNESinks is TestXenVNE's other snapshot kinds, in a boot of their
// own to keep each boot short: a live snapshot to the disk sink, then a
// stop-and-copy one, each verified and its cut checked, while the workload
// flows; the VNE is then restored from the stop-and-copy snapshot and must
// finish the workload.
func TestXenVNESinks(t *testing.T) {
	t.Parallel() // beside TestXenVNE
	// 44 MB at 64 KiB/s: about 11 min of guest time, over both snapshots
	// (sized from TestXenVNE's s1). In its passing run s2 ended at 16 MB
	// and the first run went down at 20 MB: the margin is for a loaded
	// machine, where the snapshots take longer against the paced streams.
	runVNE(t, vneCase{snaps: []string{"s1 --sink disk", "s2 --algo stop-copy"}, restore: []string{"s2"}, bytes: 44_000_000})
}
