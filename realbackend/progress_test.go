package realbackend

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/vnsnap/vnsnap/core"
)

// blockedConsumer is a progress consumer whose first call blocks until
// release is closed, after telling started: the events pushed meanwhile all
// wait in the queue.
type blockedConsumer struct {
	mu      sync.Mutex
	got     []Progress
	started chan struct{}
	release chan struct{}
}

func newBlockedConsumer() *blockedConsumer {
	return &blockedConsumer{started: make(chan struct{}), release: make(chan struct{})}
}

func (c *blockedConsumer) fn(p Progress) {
	c.mu.Lock()
	c.got = append(c.got, p)
	first := len(c.got) == 1
	c.mu.Unlock()
	if first {
		close(c.started)
		<-c.release
	}
}

// TestProgressQueueCoalesces: behind a stalled consumer, a VM's byte
// updates of one phase and pass merge into the newest, while each phase and
// pass it reached is still delivered, in order, and Seq numbers the
// deliveries.
func TestProgressQueueCoalesces(t *testing.T) {
	c := newBlockedConsumer()
	q := newProgressQueue(c.fn, 2)
	q.push(0, Progress{VM: "a", Phase: PhaseLiveCopy, Pass: 1})
	<-c.started
	steps := []struct {
		ph   Phase
		pass int
	}{{PhaseLiveCopy, 1}, {PhaseLiveCopy, 2}, {PhasePaused, 2}, {PhaseFinalCopy, 2}, {PhaseResumed, 2}}
	var b int64
	for _, s := range steps {
		for k := 0; k < 100; k++ {
			b++
			q.push(0, Progress{VM: "a", Phase: s.ph, Pass: s.pass, Bytes: b})
			q.push(1, Progress{VM: "b", Phase: s.ph, Pass: s.pass, Bytes: 2 * b})
		}
	}
	close(c.release)
	q.close()
	q.push(0, Progress{VM: "a", Phase: PhaseFlushed}) // after close: dropped
	type row struct {
		Seq   uint64
		VM    string
		Phase Phase
		Pass  int
		Bytes int64
	}
	var got []row
	for _, p := range c.got {
		if p.Dropped != 0 {
			t.Errorf("event %+v: Dropped %d, want 0 (the queue was never full)", p, p.Dropped)
		}
		got = append(got, row{p.Seq, p.VM, p.Phase, p.Pass, p.Bytes})
	}
	want := []row{{Seq: 1, VM: "a", Phase: PhaseLiveCopy, Pass: 1}}
	seq := uint64(1)
	// Pending events are delivered in push order: a's and b's alternate.
	for i, s := range steps {
		last := int64(100 * (i + 1))
		seq++
		want = append(want, row{seq, "a", s.ph, s.pass, last})
		seq++
		want = append(want, row{seq, "b", s.ph, s.pass, 2 * last})
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("delivered events (-want +got):\n%s", d)
	}
}

// TestProgressQueueBounded: a consumer stalled while thousands of events of
// distinct phases arrive never blocks the producer; the queue holds at most
// its bound plus one event per VM, each VM's newest state is delivered last,
// its events stay in order, and Dropped says that some were merged.
func TestProgressQueueBounded(t *testing.T) {
	const nvm, n = 3, 5000
	c := newBlockedConsumer()
	q := newProgressQueue(c.fn, nvm)
	q.push(0, Progress{VM: "vm0"})
	<-c.started
	for k := 1; k <= n; k++ {
		for i := 0; i < nvm; i++ {
			// A new pass every event: nothing merges but for the bound.
			q.push(i, Progress{VM: fmt.Sprintf("vm%d", i), Phase: PhaseLiveCopy, Pass: k, Bytes: int64(k)})
		}
	}
	q.mu.Lock()
	held := len(q.pend)
	q.mu.Unlock()
	if held > q.max+nvm {
		t.Errorf("queue holds %d events, want at most %d (bound) + %d (VMs)", held, q.max, nvm)
	}
	close(c.release)
	q.close()
	last := map[string]Progress{}
	for k, p := range c.got {
		if p.Seq != uint64(k+1) {
			t.Fatalf("event %d has Seq %d, want %d", k, p.Seq, k+1)
		}
		if l, ok := last[p.VM]; ok && (p.Pass <= l.Pass || p.Bytes <= l.Bytes || p.Dropped < l.Dropped) {
			t.Errorf("%s: event %+v after %+v: want later pass, more bytes, no fewer dropped", p.VM, p, l)
		}
		last[p.VM] = p
	}
	for i := 0; i < nvm; i++ {
		l := last[fmt.Sprintf("vm%d", i)]
		if l.Pass != n || l.Bytes != n || l.Dropped == 0 {
			t.Errorf("vm%d: last event %+v, want pass %d, bytes %d, some dropped", i, l, n, n)
		}
	}
	if len(c.got) > 1+q.max+nvm {
		t.Errorf("%d events delivered, want at most %d", len(c.got), 1+q.max+nvm)
	}
}

// TestTrackerNil: without a callback the tracker is nil and every hook is a
// no-op.
func TestTrackerNil(t *testing.T) {
	tr := newTracker(nil, time.Now(), []string{"a"}, []int64{1})
	if tr != nil {
		t.Fatal("tracker without callback: want nil")
	}
	tr.phase(0, PhaseLiveCopy, 1)
	tr.sample()
	if tr.counter(0) != nil || tr.flushCounter(0, 5) != nil {
		t.Error("nil tracker gave a counter")
	}
	r := strings.NewReader("x")
	if tr.reader(0, r) != r {
		t.Error("nil tracker wrapped a reader")
	}
	tr.close()
}

// phases returns the phases of vm's events with consecutive repeats
// (byte updates) folded, and its last event.
func phases(evs []Progress, vm string) ([]string, Progress) {
	var out []string
	var last Progress
	for _, p := range evs {
		if p.VM != vm {
			continue
		}
		s := string(p.Phase)
		if p.Phase == PhaseLiveCopy {
			s = fmt.Sprintf("%s/%d", p.Phase, p.Pass)
		}
		if len(out) == 0 || out[len(out)-1] != s {
			out = append(out, s)
		}
		last = p
	}
	return out, last
}

// TestSnapshotProgressFake snapshots over the fake hypervisor with each
// algorithm and sink and checks the phases each VM goes through, in order,
// and that the last event's counters are the report's image size; then a
// restore's.
func TestSnapshotProgressFake(t *testing.T) {
	te := newTrustEnv(t)
	f := newFakeHV("fakehv")
	te.o.Hypervisor = f
	l := goodLayout(te.dir)
	l.VMs = l.VMs[:1]
	l.VMs[0].Kernel, l.VMs[0].Initrd = te.kernel, te.initrd
	env, err := BootLayout(context.Background(), l, nil, te.o)
	if err != nil {
		t.Fatal(err)
	}
	defer env.Close()
	root := t.TempDir()
	size := int64(len("image of a"))
	for i, tc := range []struct {
		algo core.Algorithm
		sink core.Sink
		want []string
	}{
		{core.VNsnap, core.MemorySink, []string{"live-copy/1", "live-copy/2", "paused", "final-copy", "copied", "resumed", "flushing", "flushed"}},
		{core.VNsnap, core.DiskSink, []string{"live-copy/1", "live-copy/2", "paused", "final-copy", "copied", "resumed"}},
		{core.StopCopy, core.MemorySink, []string{"paused", "final-copy", "copied", "resumed", "flushing", "flushed"}},
		{core.COW, core.DiskSink, []string{"paused", "background-copy", "resumed", "copied"}},
	} {
		var mu sync.Mutex
		var evs []Progress
		rep, err := env.Snapshot(context.Background(), SnapshotOptions{
			Store: root, Name: fmt.Sprintf("p%d", i), Algorithm: tc.algo, Sink: tc.sink,
			OnProgress: func(p Progress) { mu.Lock(); evs = append(evs, p); mu.Unlock() },
		})
		if err != nil {
			t.Fatalf("%s-%s: %v", tc.algo, tc.sink, err)
		}
		mu.Lock()
		got, last := phases(evs, "a")
		mu.Unlock()
		if d := cmp.Diff(tc.want, got); d != "" {
			t.Errorf("%s-%s: phases of a (-want +got):\n%s", tc.algo, tc.sink, d)
		}
		if last.Bytes != rep.VMs[0].Save.Bytes || last.Bytes != size {
			t.Errorf("%s-%s: last event's bytes %d, report's %d, want %d", tc.algo, tc.sink, last.Bytes, rep.VMs[0].Save.Bytes, size)
		}
		if tc.sink == core.MemorySink && (last.FlushBytes != size || last.FlushTotal != size) {
			t.Errorf("%s-%s: last event flushed %d of %d, want %d of %d", tc.algo, tc.sink, last.FlushBytes, last.FlushTotal, size, size)
		}
		if last.Total != int64(l.VMs[0].MemoryMiB)<<20 {
			t.Errorf("%s-%s: Total %d, want the memory size %d", tc.algo, tc.sink, last.Total, l.VMs[0].MemoryMiB<<20)
		}
	}
	env.Close()

	var evs []Progress
	o := te.o
	o.OnRestoreProgress = func(p Progress) { evs = append(evs, p) } // Restore returns after the last call
	renv, _, err := Restore(context.Background(), root, "p0", o)
	if err != nil {
		t.Fatal(err)
	}
	defer renv.Close()
	got, last := phases(evs, "a")
	if d := cmp.Diff([]string{"restoring", "loaded", "resumed"}, got); d != "" {
		t.Errorf("restore: phases of a (-want +got):\n%s", d)
	}
	if last.Bytes != size || last.Total != size {
		t.Errorf("restore: last event read %d of %d, want %d of %d", last.Bytes, last.Total, size, size)
	}
	if renv.opts.OnRestoreProgress != nil {
		t.Error("restored Env keeps OnRestoreProgress")
	}
}

// TestSlowConsumerDoesNotStall: a consumer stuck in its first call does not
// hold the snapshot up. The consumer waits there until the fake machine has
// been resumed by the core after its save, which happens only if the loop
// runs on without it (else the test hangs); the events held meanwhile are
// delivered after, in order, ending with the flush.
func TestSlowConsumerDoesNotStall(t *testing.T) {
	te := newTrustEnv(t)
	f := newFakeHV("fakehv")
	te.o.Hypervisor = f
	l := goodLayout(te.dir)
	l.VMs = l.VMs[:1]
	l.VMs[0].Kernel, l.VMs[0].Initrd = te.kernel, te.initrd
	env, err := BootLayout(context.Background(), l, nil, te.o)
	if err != nil {
		t.Fatal(err)
	}
	defer env.Close()
	resumed := func() bool {
		m := f.vms["a"]
		m.mu.Lock()
		defer m.mu.Unlock()
		saved := false
		for _, s := range m.log {
			saved = saved || s == "saved"
			if saved && s == "resume" {
				return true
			}
		}
		return false
	}
	var evs []Progress
	waited := false
	_, err = env.Snapshot(context.Background(), SnapshotOptions{
		Store: t.TempDir(), Name: "slow", Algorithm: core.VNsnap, Sink: core.MemorySink,
		OnProgress: func(p Progress) {
			if len(evs) == 0 {
				for !resumed() {
					time.Sleep(time.Millisecond)
				}
				waited = true
			}
			evs = append(evs, p)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	got, last := phases(evs, "a")
	if !waited || len(got) < 2 || got[0] != "live-copy/1" || last.Phase != PhaseFlushed {
		t.Errorf("phases %v (waited %v): want live-copy/1 first, flushed last", got, waited)
	}
}
