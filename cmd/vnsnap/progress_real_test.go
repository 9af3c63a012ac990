package main

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// readAnswer decodes `vnsnap snapshot|restore --json` output with the
// client's own checks: the events per VM, in order, and the result.
func readAnswer(t *testing.T, out string) (map[string][]progressEvent, response) {
	t.Helper()
	a := newAnswerReader(strings.NewReader(out))
	evs := map[string][]progressEvent{}
	for {
		e, r, err := a.next()
		if err != nil {
			t.Fatalf("--json output: %v", err)
		}
		if r != nil {
			if _, _, err := a.next(); err == nil {
				t.Error("--json output goes on after the result")
			}
			return evs, *r
		}
		evs[e.VM] = append(evs[e.VM], *e)
	}
}

// phaseSeq folds a VM's events into its phases in order (repeats, and the
// live passes, folded) and checks that its counters and clock never go
// back.
func phaseSeq(t *testing.T, vm string, evs []progressEvent) []string {
	t.Helper()
	var seq []string
	for i, e := range evs {
		if len(seq) == 0 || seq[len(seq)-1] != e.Phase {
			seq = append(seq, e.Phase)
		}
		if i == 0 {
			continue
		}
		p := evs[i-1]
		if e.Bytes < p.Bytes || e.FlushBytes < p.FlushBytes || e.Pass < p.Pass || e.At.Before(p.At) || e.ElapsedNS < p.ElapsedNS {
			t.Errorf("%s: event %+v after %+v: bytes, flush bytes, pass or time went back", vm, e, p)
		}
	}
	return seq
}

// snapshotKind is what checkSnapshotEvents expects of each VM.
type snapshotKind struct {
	phases []string
	flush  bool // memory sink: the image is flushed to the store
	live   bool // pre-copy: the last pass is the report's rounds
}

var (
	preCopyMemory = snapshotKind{
		phases: []string{"live-copy", "paused", "final-copy", "copied", "resumed", "flushing", "flushed"},
		flush:  true, live: true,
	}
	stopCopyDisk = snapshotKind{phases: []string{"paused", "final-copy", "copied", "resumed"}}
)

// checkSnapshotEvents checks a snapshot's --json output: each VM goes
// through the phases of k in order, with counters that never go back; its
// last event's bytes (and flush) are the image the report gives, and for a
// live copy its last pass the report's rounds.
func checkSnapshotEvents(t *testing.T, out string, vms []string, k snapshotKind) {
	t.Helper()
	evs, r := readAnswer(t, out)
	if !r.OK || r.Summary == nil || len(r.Summary.VMs) != len(vms) {
		t.Fatalf("result %+v: want ok with a summary of %d VMs", r, len(vms))
	}
	for i, vm := range vms {
		sum := r.Summary.VMs[i]
		if sum.VM != vm {
			t.Errorf("summary VM %d is %q, want %q", i, sum.VM, vm)
			continue
		}
		if d := cmp.Diff(k.phases, phaseSeq(t, vm, evs[vm])); d != "" {
			t.Errorf("%s: phases (-want +got):\n%s", vm, d)
			continue
		}
		last := evs[vm][len(evs[vm])-1]
		if sum.StreamBytes <= 0 || last.Bytes != sum.StreamBytes {
			t.Errorf("%s: last event copied %d; the report's image is %d bytes (want equal, > 0)", vm, last.Bytes, sum.StreamBytes)
		}
		if flushed := last.FlushBytes == sum.StreamBytes && last.FlushTotal == sum.StreamBytes; k.flush != flushed || !k.flush && last.FlushTotal != 0 {
			t.Errorf("%s: last event flushed %d of %d, image %d bytes: want the whole image flushed %v", vm, last.FlushBytes, last.FlushTotal, sum.StreamBytes, k.flush)
		}
		if k.live && (last.Pass != sum.Rounds || last.Pass < 1) {
			t.Errorf("%s: last event's pass %d, the report's rounds %d: want equal, at least 1", vm, last.Pass, sum.Rounds)
		}
		if last.Total != 128<<20 {
			t.Errorf("%s: total %d, want the guest's 128 MiB", vm, last.Total)
		}
	}
}

// checkRestoreEvents checks a restore's --json output: each VM goes
// restoring, loaded, resumed, and has read its whole stored image.
func checkRestoreEvents(t *testing.T, out string, vms []string) {
	t.Helper()
	evs, r := readAnswer(t, out)
	if !r.OK || r.Summary == nil || len(r.Summary.VMs) != len(vms) {
		t.Fatalf("result %+v: want ok with a summary of %d VMs", r, len(vms))
	}
	for _, vm := range vms {
		if d := cmp.Diff([]string{"restoring", "loaded", "resumed"}, phaseSeq(t, vm, evs[vm])); d != "" {
			t.Errorf("%s: restore phases (-want +got):\n%s", vm, d)
			continue
		}
		last := evs[vm][len(evs[vm])-1]
		if last.Total <= 0 || last.Bytes != last.Total {
			t.Errorf("%s: restore read %d of %d bytes, want all of a non-empty image", vm, last.Bytes, last.Total)
		}
	}
}
