package qemubackend

import (
	"io"
	"slices"
	"testing"
	"time"

	"github.com/vnsnap/vnsnap/qemubackend/qemutest/progress"
)

// TestPauseLiveVsStopCopy measures, on one VM under one load, the pause seen
// from outside (heartbeat gap) of live pre-copy and of stop-and-copy,
// alternating three of each into a sink that discards (memory speed), and
// logs the medians and their ratio. Wall-clock numbers are reported, never
// asserted.
func TestPauseLiveVsStopCopy(t *testing.T) {
	h := requireQEMU(t)
	img := guestImage(t)
	ctx := testContext(t, 15*time.Minute)
	_, vm := startDirtier(ctx, t, h, img, "pause", 256, "DIRTIER START", "-rate=16", "-ws=96")
	time.Sleep(time.Second) // let the dirtier reach its rate
	pauses := map[Method][]time.Duration{}
	for round := 0; round < 3; round++ {
		for _, m := range []Method{Precopy, StopCopy} {
			st, err := vm.Snapshot(ctx, io.Discard, Options{Method: m, DowntimeLimit: 30 * time.Millisecond, Resume: true})
			if err != nil {
				t.Fatal(progress.Why(ctx, err))
			}
			pauses[m] = append(pauses[m], st.Pause.Gap)
			t.Logf("round %d %-9s pause(outside)=%v qemu-downtime=%v passes=%d bytes=%d duration=%v",
				round, m, st.Pause.Gap.Round(time.Millisecond), st.QEMUDowntime, st.Passes, st.Bytes, st.Duration.Round(time.Millisecond))
			time.Sleep(300 * time.Millisecond)
		}
	}
	med := func(d []time.Duration) time.Duration { d = slices.Clone(d); slices.Sort(d); return d[len(d)/2] }
	p, s := med(pauses[Precopy]), med(pauses[StopCopy])
	t.Logf("median pause from outside: precopy %v, stop-copy %v, stop-copy/precopy = %.1f",
		p.Round(time.Millisecond), s.Round(time.Millisecond), float64(s)/float64(p))
	checkNoFail(t, vm, "pause")
}
