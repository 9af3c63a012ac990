package realbackend

import (
	"context"
	"errors"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/vnsnap/vnsnap/core"
	"github.com/vnsnap/vnsnap/realbackend/hv"
)

// rewriteHV is fakeHV whose machines save into page files (hv.FileSaver)
// as a live Xen save does: the first pass writes the pages, the later ones
// write them again in place, so the file stops growing while the copy goes
// on. With report the save tells its bytes through SaveOptions.Progress.
type rewriteHV struct {
	*fakeHV
	report bool
	live   time.Duration // how long the later passes go on
	mu     sync.Mutex
	sent   int64 // bytes the saves reported
}

func (f *rewriteHV) FileFormat() string { return "rewrite-pages-v1" }

func (f *rewriteHV) RestoreFile(context.Context, hv.MachineSpec, func() (*os.File, error)) (hv.Machine, error) {
	return nil, errors.New("rewriteHV does not restore")
}

func (f *rewriteHV) Start(ctx context.Context, s hv.MachineSpec) (hv.Machine, error) {
	m, err := f.fakeHV.Start(ctx, s)
	if err != nil {
		return nil, err
	}
	return &rewriteMachine{fakeMachine: m.(*fakeMachine), hv: f}, nil
}

type rewriteMachine struct {
	*fakeMachine
	hv *rewriteHV
}

var (
	_ hv.FileRestorer = (*rewriteHV)(nil)
	_ hv.FileSaver    = (*rewriteMachine)(nil)
)

func (m *rewriteMachine) SaveFile(ctx context.Context, f *os.File, o hv.SaveOptions) (hv.SaveStats, error) {
	page := make([]byte, 64<<10)
	for i := range page {
		page[i] = byte(i%251) + 1
	}
	var sent int64
	write := func() error {
		if _, err := f.WriteAt(page, 0); err != nil {
			return err
		}
		sent += int64(len(page))
		if m.hv.report && o.Progress != nil {
			o.Progress(int64(len(page)))
		}
		return nil
	}
	if err := write(); err != nil {
		return hv.SaveStats{}, err
	}
	for start := time.Now(); time.Since(start) < m.hv.live; {
		select {
		case <-ctx.Done():
			return hv.SaveStats{}, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if err := write(); err != nil {
			return hv.SaveStats{}, err
		}
	}
	m.hv.mu.Lock()
	m.hv.sent += sent
	m.hv.mu.Unlock()
	m.mu.Lock()
	m.running = false // the snapshot point
	m.mu.Unlock()
	if o.AtSnapshotPoint != nil {
		if err := o.AtSnapshotPoint(ctx); err != nil {
			return hv.SaveStats{}, err
		}
	}
	return hv.SaveStats{Bytes: int64(len(page)), Passes: 1, MemoryCopied: sent}, nil
}

// TestFileSaveRewritesAreProgress: a live save into a page file that
// writes the same pages again for longer than the stall bound, with no
// pass event, is progress when the save reports its bytes (the VM's
// progress counts every byte sent, rewrites included); the same save that
// does not report them is a stall (the file does not grow), which is what
// TestXenVNE's live snapshots met before the Xen backend reported its
// stream.
func TestFileSaveRewritesAreProgress(t *testing.T) {
	const stall = time.Second
	for _, report := range []bool{true, false} {
		t.Run(map[bool]string{true: "reported", false: "silent"}[report], func(t *testing.T) {
			te := newTrustEnv(t)
			f := &rewriteHV{fakeHV: newFakeHV("rewritehv"), report: report, live: 3 * stall}
			te.o.Hypervisor = f
			l := goodLayout(te.dir)
			l.VMs = l.VMs[:1]
			l.VMs[0].Kernel, l.VMs[0].Initrd = te.kernel, te.initrd
			env, err := BootLayout(context.Background(), l, nil, te.o)
			if err != nil {
				t.Fatal(err)
			}
			defer env.Close()
			var (
				mu    sync.Mutex
				bytes int64
			)
			_, err = env.Snapshot(context.Background(), SnapshotOptions{
				Store: t.TempDir(), Name: "s", Algorithm: core.VNsnap, Sink: core.MemorySink, Stall: stall,
				OnProgress: func(p Progress) {
					mu.Lock()
					bytes = max(bytes, p.Bytes)
					mu.Unlock()
				},
			})
			if !report {
				if !contains(err, ErrStalled.Error()) {
					t.Fatalf("a silent save that only rewrites its file: got %v, want %v", err, ErrStalled)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			defer mu.Unlock()
			if f.sent <= 64<<10 || bytes != f.sent {
				t.Errorf("progress: %d bytes, want the %d the save reported (more than its %d-byte file)", bytes, f.sent, 64<<10)
			}
		})
	}
}
