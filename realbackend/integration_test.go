package realbackend

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vnsnap/vnsnap/core"
	"github.com/vnsnap/vnsnap/qemubackend"
	"github.com/vnsnap/vnsnap/qemubackend/qemutest"
	"github.com/vnsnap/vnsnap/qemubackend/qemutest/progress"
	"github.com/vnsnap/vnsnap/store"
)

// Test sizes: small guests and a transfer that outlives the snapshot by a few
// seconds, so that the whole test fits CI on two cores.
const (
	testMemMiB = 128
	testBytes  = 12_000_000 // per direction and peer
	restores   = 3
)

type snapCase struct {
	name string
	algo core.Algorithm
	sink core.Sink
}

var snapCases = []snapCase{
	{"vnsnap-memory", core.VNsnap, core.MemorySink},
	{"vnsnap-disk", core.VNsnap, core.DiskSink},
	{"cow", core.COW, core.MemorySink},
	{"stop-copy", core.StopCopy, core.DiskSink},
	{"vnsnap-log", core.VNsnapLog, core.MemorySink},
}

// TestVNESnapshotRestore is the acceptance test of the real backend: three
// VMs on two switches joined by a UDP tunnel run the tcpstream workload; a
// VNE snapshot is taken with each algorithm; the frame log shows no orphan;
// everything is killed; the VNE is restored from the store three times and
// the workload completes with every byte verified. Finally a flipped byte in
// a stored chunk is found by Verify and refused by Restore.
func TestVNESnapshotRestore(t *testing.T) {
	h := requireQEMU(t)
	img := guestImage(t)
	storeDir := t.TempDir()
	logDir := t.TempDir()
	// The deadline derives from progress (QEMU CPU time, console output):
	// see qemutest.Context. 30 minutes is only a safety net.
	ctx := qemutest.Context(t, 30*time.Minute, progress.DirBytes(logDir))
	console := consoles(t, logDir)
	opts := func() Options {
		return Options{Hypervisor: qemubackend.NewHypervisor(h), Image: img, Dir: shortDir(t), Console: func(vm string) io.Writer { return console(vm) }}
	}
	v := loadVNE(t, t.TempDir(), testMemMiB, testBytes)
	t.Logf("QEMU %s, machine %s", h.Version, h.Machine)

	for _, c := range snapCases {
		t.Run(c.name, func(t *testing.T) {
			start := time.Now()
			env, err := Boot(ctx, v, opts())
			if err != nil {
				t.Fatal(progress.Why(ctx, err))
			}
			t.Cleanup(func() { env.Close() })
			waitProgress(ctx, t, env, 1_000_000)
			booted := since(start)

			rep, err := env.Snapshot(ctx, SnapshotOptions{Store: storeDir, Name: c.name, Algorithm: c.algo, Sink: c.sink})
			if err != nil {
				t.Fatal(progress.Why(ctx, err))
			}
			var pauses []string
			for i, r := range rep.VMs {
				cr := rep.Core.VMs[i]
				pauses = append(pauses, r.Name+"="+r.Pause.Gap.Round(time.Millisecond).String())
				t.Logf("%s %s: pause seen from outside %v (heartbeats %d), core downtime %v, rounds %d, qemu downtime %v, stream %d bytes, sink %s, disk frozen: %q",
					c.name, r.Name, r.Pause.Gap.Round(time.Millisecond), r.Pause.Count, cr.Downtime().Round(time.Millisecond),
					cr.Rounds, r.Save.Downtime, r.Save.Bytes, cr.Sink, r.Frozen)
			}
			t.Logf("%s: epoch %d, window %v, duration %v (boot+warm-up %v); pause per VM from outside: %s",
				c.name, rep.Epoch, rep.Core.Window().Round(time.Millisecond), rep.Duration.Round(time.Millisecond), booted,
				strings.Join(pauses, " "))
			for i := 0; i < env.NumVMs(); i++ {
				// The restored VMs can only finish the transfer if it was
				// still going at their snapshot points.
				point := rep.Start.Add(rep.Core.VMs[i].Paused)
				if l, _, err := qvm(env, i).Console.WaitPrefix(expired(), 0, "TCPSTREAM DONE"); err == nil && l.At.Before(point) {
					t.Fatalf("%s finished its transfer before its snapshot point: raise testBytes", qvm(env, i).Spec.Name)
				}
			}
			res := checkCut(t, env, rep.Epoch)
			t.Logf("%s: cut: sent %d, orphans %d, in transit %d, replayable %d, recovered by TCP %d, lost %d, dropped by the network %d",
				c.name, res.Sent, res.Orphans, res.InTransit, res.Replayed, res.RecoveredByTCP, res.Lost, res.NetDropped)
			if !res.Consistent() {
				t.Errorf("%s: cut not consistent: %d orphans (%v), missing cuts %v", c.name, res.Orphans, res.OrphanFrames, res.MissingCuts)
			}
			noFail(t, env, "original")
			env.Close()

			for k := 0; k < restores; k++ {
				start := time.Now()
				renv, rrep, err := Restore(ctx, storeDir, c.name, opts())
				if err != nil {
					t.Fatalf("restore %d: %v", k+1, progress.Why(ctx, err))
				}
				t.Cleanup(func() { renv.Close() })
				loaded := since(start)
				done := waitAll(ctx, t, renv, "TCPSTREAM DONE")
				for i, l := range done {
					if l.Text != "TCPSTREAM DONE ok=4 fail=0" {
						t.Errorf("restore %d: %s: %q, want ok=4 fail=0", k+1, qvm(renv, i).Spec.Name, l.Text)
					}
				}
				noFail(t, renv, "restored")
				t.Logf("%s: restore %d: loaded and resumed in %v, %d frames replayed, workload verified after %v",
					c.name, k+1, loaded, rrep.Replayed, since(start))
				renv.Close()
			}
		})
		if t.Failed() {
			return
		}
	}

	t.Run("corrupt", func(t *testing.T) {
		name := snapCases[len(snapCases)-1].name
		snap, err := store.Open(storeDir, name)
		if err != nil {
			t.Fatal(err)
		}
		m := snap.Manifest()
		vm := m.VMs[1]
		if len(vm.Images) != 1 || vm.Images[0].Name != "memory" {
			t.Fatalf("vm %s: images %+v, want its memory as a page image", vm.Name, vm.Images)
		}
		// Flip a byte of a block object in the middle of the image.
		blk, path := midBlock(t, storeDir, vm.Name, vm.Images[0].Index)
		snap.Close()
		flipByte(t, path)
		snap, err = store.Open(storeDir, name)
		if err != nil {
			t.Fatal(err)
		}
		probs, err := snap.Verify(ctx)
		snap.Close()
		if err != nil {
			t.Fatal(err)
		}
		if len(probs) == 0 {
			t.Fatal("Verify found no problem after a flipped byte")
		}
		// A block object is shared by every block with the same content, in
		// every image (the VMs run the same guest), and Verify reports each
		// of those blocks: one of the problems is vm's block blk.
		var p *store.CorruptError
		for _, q := range probs {
			if q.VM == vm.Name && q.Chunk == blk {
				p = q
				break
			}
		}
		if p == nil {
			t.Fatalf("verify: %d problems, none names vm %q block %d; first %v", len(probs), vm.Name, blk, probs[0])
		}
		t.Logf("verify: %v (%d problems)", p, len(probs))
		if p.Image != "memory" || p.Chunk != blk || p.Len == 0 ||
			!strings.Contains(p.Error(), `vm "`+vm.Name+`" image "memory" block`) {
			t.Errorf("verify: %v, want vm %q image memory block %d and its offset", p, vm.Name, blk)
		}
		o := opts()
		renv, _, err := Restore(ctx, storeDir, name, o)
		if err == nil {
			renv.Close()
			t.Fatal("restore of a damaged snapshot succeeded")
		}
		t.Logf("restore: %v", err)
		if !errors.Is(err, store.ErrCorrupt) || !strings.Contains(err.Error(), `vm "`+vm.Name+`" image "memory" block`) || !strings.Contains(err.Error(), "offset 0x") {
			t.Errorf("restore error %v: want a store.CorruptError naming vm %q, its image, the block and offset", err, vm.Name)
		}
		if left := processesUsing(o.Dir); len(left) > 0 {
			t.Errorf("QEMU processes left after the failed restore: %v", left)
		}
	})
}

// flipByte flips one byte in the middle of a file.
func flipByte(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x40
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// processesUsing lists the pids whose command line mentions dir.
func processesUsing(dir string) []string {
	ents, _ := os.ReadDir("/proc")
	var out []string
	for _, e := range ents {
		if e.Name()[0] < '0' || e.Name()[0] > '9' {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && strings.Contains(string(b), dir) {
			out = append(out, e.Name())
		}
	}
	return out
}

// expired returns a context that is already done: WaitFor then only looks at
// lines already read.
func expired() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}
