package realbackend

import (
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

// npbYAML is four VMs on two hosts, each one rank of NPB CG class S (the
// npb guest program: the kernel's messages over TCP and its working set,
// every byte verified), slowed down so that the run outlives a snapshot.
const npbYAML = `name: cg4
hosts:
  - name: h1
  - name: h2
vms:
%s`

// TestNPBSnapshotRestore runs an NPB kernel across four real VMs on two
// switches, snapshots the VNE in the middle of the run (VNsnap, memory
// sink), checks the cut, kills everything, restores it from the store, and
// checks that every rank completes and verifies the run: every message's
// content, every working-set page, and each rank's checksum of what it
// received, compared by its peers.
func TestNPBSnapshotRestore(t *testing.T) {
	h := requireQEMU(t)
	img := guestImage(t)
	storeDir, logDir := t.TempDir(), t.TempDir()
	ctx := qemutest.Context(t, 30*time.Minute, progress.DirBytes(logDir))
	console := consoles(t, logDir)
	opts := func() Options {
		return Options{Hypervisor: qemubackend.NewHypervisor(h), Image: img, Dir: shortDir(t), Console: func(vm string) io.Writer { return console(vm) }}
	}
	vms := ""
	for i, host := range []string{"h1", "h1", "h2", "h2"} {
		vms += fmt.Sprintf("  - name: r%d\n    host: %s\n    memory: %dMiB\n    ip: 10.0.0.%d\n"+
			"    guest: {builtin: npb, args: [\"-kernel=CG\", \"-class=S\", \"-iterations=16\", \"-compute-scale=200\"]}\n",
			i, host, testMemMiB, i+1)
	}
	p := filepath.Join(t.TempDir(), "cg4.yaml")
	if err := os.WriteFile(p, []byte(fmt.Sprintf(npbYAML, vms)), 0o644); err != nil {
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
	for i := 0; i < env.NumVMs(); i++ {
		if _, _, err := qvm(env, i).Console.WaitPrefix(ctx, 0, "NPB ITER 3/"); err != nil {
			t.Fatalf("%s: no progress: %v", qvm(env, i).Spec.Name, progress.Why(ctx, err))
		}
	}
	rep, err := env.Snapshot(ctx, SnapshotOptions{Store: storeDir, Name: "cg", Algorithm: core.VNsnap, Sink: core.MemorySink})
	if err != nil {
		t.Fatal(progress.Why(ctx, err))
	}
	for i := 0; i < env.NumVMs(); i++ {
		point := rep.Start.Add(rep.Core.VMs[i].Paused)
		if l, _, err := qvm(env, i).Console.WaitPrefix(expired(), 0, "NPB VERIFIED"); err == nil && l.At.Before(point) {
			t.Fatalf("%s finished before its snapshot point: raise -iterations", qvm(env, i).Spec.Name)
		}
	}
	res := checkCut(t, env, rep.Epoch)
	t.Logf("cut: sent %d, orphans %d, in transit %d, recovered by TCP %d", res.Sent, res.Orphans, res.InTransit, res.RecoveredByTCP)
	if !res.Consistent() {
		t.Errorf("cut not consistent: %d orphans (%v)", res.Orphans, res.OrphanFrames)
	}
	noFail(t, env, "original")
	env.Close()

	renv, _, err := Restore(ctx, storeDir, "cg", opts())
	if err != nil {
		t.Fatal(progress.Why(ctx, err))
	}
	t.Cleanup(func() { renv.Close() })
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
// (one seeder, three leechers on two switches), snapshots the VNE in the
// middle of the download (VNsnap, disk sink), checks the cut, kills
// everything, restores it, and checks that every leecher completes the
// download with every piece verified, on arrival and again in memory at the
// end, and that every peer finishes.
func TestSwarmSnapshotRestore(t *testing.T) {
	h := requireQEMU(t)
	img := guestImage(t)
	storeDir, logDir := t.TempDir(), t.TempDir()
	ctx := qemutest.Context(t, 30*time.Minute, progress.DirBytes(logDir))
	console := consoles(t, logDir)
	opts := func() Options {
		return Options{Hypervisor: qemubackend.NewHypervisor(h), Image: img, Dir: shortDir(t), Console: func(vm string) io.Writer { return console(vm) }}
	}
	vms := ""
	for i, host := range []string{"h1", "h1", "h2", "h2"} {
		vms += fmt.Sprintf("  - name: p%d\n    host: %s\n    memory: %dMiB\n    ip: 10.0.0.%d\n"+
			"    guest: {builtin: swarm, args: [\"-bytes=12582912\", \"-piece=65536\", \"-rechoke=1s\", \"-progress=250ms\"]}\n",
			i, host, testMemMiB, i+1)
	}
	p := filepath.Join(t.TempDir(), "swarm.yaml")
	if err := os.WriteFile(p, []byte(fmt.Sprintf(strings.Replace(npbYAML, "cg4", "swarm4", 1), vms)), 0o644); err != nil {
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
	// Snapshot once every leecher holds some pieces.
	for i := 1; i < env.NumVMs(); i++ {
		_, _, err := qvm(env, i).Console.WaitFor(ctx, 0, func(l qemubackend.Line) bool {
			var have, rx, tx int
			_, err := fmt.Sscanf(l.Text, "SWARM PROGRESS have=%d rx=%d tx=%d", &have, &rx, &tx)
			return err == nil && have >= 8
		})
		if err != nil {
			t.Fatalf("%s: no pieces: %v", qvm(env, i).Spec.Name, progress.Why(ctx, err))
		}
	}
	rep, err := env.Snapshot(ctx, SnapshotOptions{Store: storeDir, Name: "swarm", Algorithm: core.VNsnap, Sink: core.DiskSink})
	if err != nil {
		t.Fatal(progress.Why(ctx, err))
	}
	for i := 1; i < env.NumVMs(); i++ {
		point := rep.Start.Add(rep.Core.VMs[i].Paused)
		if l, _, err := qvm(env, i).Console.WaitPrefix(expired(), 0, "SWARM COMPLETE"); err == nil && l.At.Before(point) {
			t.Fatalf("%s completed before its snapshot point: raise -bytes", qvm(env, i).Spec.Name)
		}
	}
	res := checkCut(t, env, rep.Epoch)
	t.Logf("cut: sent %d, orphans %d, in transit %d, recovered by TCP %d", res.Sent, res.Orphans, res.InTransit, res.RecoveredByTCP)
	if !res.Consistent() {
		t.Errorf("cut not consistent: %d orphans (%v)", res.Orphans, res.OrphanFrames)
	}
	noFail(t, env, "original")
	env.Close()

	renv, _, err := Restore(ctx, storeDir, "swarm", opts())
	if err != nil {
		t.Fatal(progress.Why(ctx, err))
	}
	t.Cleanup(func() { renv.Close() })
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
