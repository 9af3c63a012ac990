package realbackend

import (
	"context"
	"fmt"
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
	"github.com/vnsnap/vnsnap/vne"
)

// midRun is a four-VM workload on two hosts, snapshotted in the middle of
// its run and restored.
type midRun struct {
	name string
	args string // the guest line of every VM
	// started reports, per VM, that the run is far enough along to
	// snapshot; finished is the prefix of the line that ends a VM's run.
	started  func(vm int, l qemubackend.Line) bool
	finished string
	sink     core.Sink
}

// snapshotRestore boots the run, snapshots it (VNsnap) once every VM has
// started, checks that no VM finished before its snapshot point and that
// the cut has no orphans, kills everything and restores the VNE from the
// store, which it returns running, with a context for the waits on its
// workload (workloadContext).
func (m midRun) snapshotRestore(t *testing.T) (context.Context, *Env) {
	h := requireQEMU(t)
	img := guestImage(t)
	storeDir, logDir := t.TempDir(), t.TempDir()
	ctx := qemutest.Context(t, 30*time.Minute, progress.DirBytes(logDir))
	console := consoles(t, logDir)
	opts := func() Options {
		return Options{Hypervisor: qemubackend.NewHypervisor(h), Image: img, Dir: shortDir(t), Console: func(vm string) io.Writer { return console(vm) }}
	}
	yaml := fmt.Sprintf("name: %s\nhosts:\n  - name: h1\n  - name: h2\nvms:\n", m.name)
	for i, host := range []string{"h1", "h1", "h2", "h2"} {
		yaml += fmt.Sprintf("  - name: v%d\n    host: %s\n    memory: %dMiB\n    ip: 10.0.0.%d\n    guest: %s\n",
			i, host, testMemMiB, i+1, m.args)
	}
	p := filepath.Join(t.TempDir(), m.name+".yaml")
	if err := os.WriteFile(p, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	v, err := vne.Load(p)
	if err != nil {
		t.Fatal(err)
	}
	env, err := Boot(ctx, v, opts())
	if err != nil {
		t.Fatal(progress.Why(ctx, err))
	}
	t.Cleanup(func() { env.Close() })
	wctx := workloadContext(t, ctx, env)
	for i := 0; i < env.NumVMs(); i++ {
		if _, _, err := qvm(env, i).Console.WaitFor(wctx, 0, func(l qemubackend.Line) bool { return m.started(i, l) }); err != nil {
			t.Fatalf("%s: no progress: %v", qvm(env, i).Spec.Name, progress.Why(wctx, err))
		}
	}
	rep, err := env.Snapshot(ctx, SnapshotOptions{Store: storeDir, Name: m.name, Algorithm: core.VNsnap, Sink: m.sink})
	if err != nil {
		t.Fatal(progress.Why(ctx, err))
	}
	for i := 0; i < env.NumVMs(); i++ {
		point := rep.Start.Add(rep.Core.VMs[i].Paused)
		if l, _, err := qvm(env, i).Console.WaitPrefix(expired(), 0, m.finished); err == nil && l.At.Before(point) {
			t.Fatalf("%s finished before its snapshot point: make the run longer", qvm(env, i).Spec.Name)
		}
	}
	res := checkCut(t, env, rep.Epoch)
	t.Logf("cut: sent %d, orphans %d, in transit %d, recovered by TCP %d", res.Sent, res.Orphans, res.InTransit, res.RecoveredByTCP)
	if !res.Consistent() {
		t.Errorf("cut not consistent: %d orphans (%v)", res.Orphans, res.OrphanFrames)
	}
	noFail(t, env, "original")
	env.Close()

	renv, _, err := Restore(ctx, storeDir, m.name, opts())
	if err != nil {
		t.Fatal(progress.Why(ctx, err))
	}
	t.Cleanup(func() { renv.Close() })
	return workloadContext(t, ctx, renv), renv
}

// TestNPBSnapshotRestore runs NPB CG class S across four real VMs, one rank
// each (the npb guest program: the kernel's messages over TCP and its
// working set, every byte verified, slowed down so that the run outlives a
// snapshot), snapshots it mid-run (memory sink), restores it, and checks
// that every rank verifies the run: every message's content, every
// working-set page, and each rank's checksum of what it received, compared
// by its peers.
func TestNPBSnapshotRestore(t *testing.T) {
	ctx, renv := midRun{
		name:     "cg4",
		args:     `{builtin: npb, args: ["-kernel=CG", "-class=S", "-iterations=16", "-compute-scale=200"]}`,
		started:  func(_ int, l qemubackend.Line) bool { return strings.HasPrefix(l.Text, "NPB ITER 3/") },
		finished: "NPB VERIFIED",
		sink:     core.MemorySink,
	}.snapshotRestore(t)
	for i := 0; i < renv.NumVMs(); i++ {
		vm := qvm(renv, i)
		got, _, err := vm.Console.WaitFor(ctx, 0, func(l qemubackend.Line) bool {
			return strings.HasPrefix(l.Text, "NPB VERIFIED") || strings.HasPrefix(l.Text, "NPB FAIL")
		})
		if err != nil {
			t.Fatalf("%s: no verdict: %v", vm.Spec.Name, progress.Why(ctx, err))
		}
		want := fmt.Sprintf("NPB VERIFIED kernel=CG class=S ranks=4 rank=%d iterations=16 ", i)
		if !strings.HasPrefix(got.Text, want) {
			t.Errorf("%s: %q, want %q...", vm.Spec.Name, got.Text, want)
		}
	}
	noFail(t, renv, "restored")
}

// TestSwarmSnapshotRestore runs a BitTorrent swarm of the project's peer
// (one seeder, three leechers), snapshots it in the middle of the download
// (disk sink), restores it, and checks that every leecher completes the
// download with every piece verified, on arrival and again in memory at the
// end, and that every peer finishes.
func TestSwarmSnapshotRestore(t *testing.T) {
	ctx, renv := midRun{
		name: "swarm4",
		args: `{builtin: swarm, args: ["-bytes=12582912", "-piece=65536", "-rechoke=1s", "-progress=250ms"]}`,
		started: func(vm int, l qemubackend.Line) bool {
			var have, rx, tx int
			_, err := fmt.Sscanf(l.Text, "SWARM PROGRESS have=%d rx=%d tx=%d", &have, &rx, &tx)
			return err == nil && (vm == 0 || have >= 8) // the seeder has all from the start
		},
		finished: "SWARM COMPLETE",
		sink:     core.DiskSink,
	}.snapshotRestore(t)
	for i, l := range waitAll(ctx, t, renv, "SWARM DONE") {
		if l.Text != "SWARM DONE peers=4" {
			t.Errorf("%s: %q, want SWARM DONE peers=4", qvm(renv, i).Spec.Name, l.Text)
		}
	}
	for i := 1; i < renv.NumVMs(); i++ {
		if _, _, err := qvm(renv, i).Console.WaitPrefix(expired(), 0, "SWARM COMPLETE pieces=192 bytes=12582912 verified"); err != nil {
			t.Errorf("%s: no verified completion after the restore", qvm(renv, i).Spec.Name)
		}
	}
	noFail(t, renv, "restored")
}
