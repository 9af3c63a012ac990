package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vnsnap/vnsnap/cluster/certs"
	"github.com/vnsnap/vnsnap/cluster/netnstest"
	"github.com/vnsnap/vnsnap/cluster/remote"
	"github.com/vnsnap/vnsnap/core"
	"github.com/vnsnap/vnsnap/core/cut"
	"github.com/vnsnap/vnsnap/qemubackend/qemutest"
	"github.com/vnsnap/vnsnap/qemubackend/qemutest/progress"
	"github.com/vnsnap/vnsnap/realbackend"
	"github.com/vnsnap/vnsnap/store"
	"github.com/vnsnap/vnsnap/vne"
	"github.com/vnsnap/vnsnap/vnet"
)

const (
	memMiB   = 128       // the guest image unpacks its initramfs (6.7 MB gzipped) into RAM
	wlBytes  = 3_000_000 // per direction and peer
	leaseTTL = 6 * time.Second
)

var vmNames = []string{"a", "b", "c"}

// text is a console line without the host's stamp.
func text(l string) string {
	_, t, _ := strings.Cut(l, " ")
	return t
}

// cluster is the test's three agents and the coordinator's view of them.
type cluster struct {
	c      *netnstest.Cluster
	bin    string
	certs  string
	root   string
	agents []*agentProc
	hosts  []*remote.Host
	// deadEpoch is the epoch of the coordinator killed mid-snapshot.
	deadEpoch core.Epoch
}

// vneFile writes a VNE with VM vmNames[i] on host place[i] and loads it.
func (cl *cluster) vneFile(t *testing.T, name string, place []int) *vne.VNE {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "name: e2e\nhosts:\n")
	for i, a := range cl.agents {
		fmt.Fprintf(&b, "  - {name: %s, agent: \"%s\"}\n", a.name, netip.AddrPortFrom(cl.c.Hosts[i].Addr, agentPort))
	}
	b.WriteString("vms:\n")
	for i, vm := range vmNames {
		fmt.Fprintf(&b, "  - name: %s\n    host: %s\n    memory: %dMiB\n    ip: 10.0.0.%d\n    guest: {builtin: tcpstream, args: [\"-bytes=%d\", \"-progress=250ms\"]}\n",
			vm, cl.agents[place[i]].name, memMiB, i+1, wlBytes)
	}
	p := filepath.Join(cl.root, name+".yaml")
	if err := os.WriteFile(p, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	v, err := vne.Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if !v.Clustered() {
		t.Fatalf("%s: not a clustered VNE", p)
	}
	return v
}

// consoleOf returns the console file of vm on host h.
func (cl *cluster) consoleOf(h int, vm string) string { return cl.agents[h].console(vm) }

// checkCut checks the cut of epoch e on the frame logs the agents flushed
// into their directories of snapshot snap: every VM cut at e, no orphan.
func (cl *cluster) checkCut(t *testing.T, snap string, e core.Epoch) cut.Result {
	t.Helper()
	var rs []io.Reader
	for _, a := range cl.agents {
		f, err := os.Open(filepath.Join(a.state, "snapshots", snap, "frames-"+a.name+".log"))
		if err != nil {
			t.Fatalf("agent %s's frame log: %v", a.name, err)
		}
		defer f.Close()
		rs = append(rs, f)
	}
	recs, err := vnet.ReadLogs(rs...)
	if err != nil {
		t.Fatalf("read frame logs: %v", err)
	}
	ch := cut.NewChecker(e, len(vmNames))
	for _, r := range recs {
		if err := ch.Observe(r); err != nil {
			t.Fatalf("checker: %v", err)
		}
	}
	res := ch.Result()
	t.Logf("%s: cut of epoch %d: sent %d, orphans %d, in transit %d, recovered by TCP %d, lost %d, dropped by the network %d",
		snap, e, res.Sent, res.Orphans, res.InTransit, res.RecoveredByTCP, res.Lost, res.NetDropped)
	if !res.Consistent() {
		t.Errorf("%s: cut not consistent: %d orphans (%v), missing cuts %v", snap, res.Orphans, res.OrphanFrames, res.MissingCuts)
	}
	if res.Sent == 0 {
		t.Errorf("%s: the frame logs hold no frame", snap)
	}
	return res
}

// beatsAfter waits for a heartbeat line in console after offset from.
func beatsAfter(ctx context.Context, console string, from int64) (int64, error) {
	_, off, err := waitLine(ctx, console, from, func(l string) bool { return strings.HasPrefix(text(l), "HB ") })
	return off, err
}

// TestCluster is cluster mode's end-to-end test (see doc.go).
func TestCluster(t *testing.T) {
	qemutest.RequireQEMU(t)
	netnstest.Require(t)
	img := qemutest.GuestImage(t, "../..")
	c := netnstest.New(t, netnstest.Config{Hosts: 4, Delay: 20 * time.Millisecond, Loss: 0.01, Seed: 1})
	t.Logf("cluster %s, impairment %s", c.Subnet, c.Impairment)
	root, err := os.MkdirTemp("/tmp", "vne2e")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	cl := &cluster{c: c, root: root, bin: buildVnsnap(t, root), certs: filepath.Join(root, "certs")}
	var hostsArg []string
	for i := 0; i < 3; i++ {
		hostsArg = append(hostsArg, fmt.Sprintf("h%d=%s", i+1, c.Hosts[i].Addr))
	}
	run(t, cl.bin, "certs", "--dir", cl.certs, "--hosts", strings.Join(hostsArg, ","))
	var probes []progress.Probe
	for i := 0; i < 3; i++ {
		name := fmt.Sprintf("h%d", i+1)
		a := &agentProc{name: name, state: filepath.Join(root, name), host: c.Hosts[i]}
		a.args = []string{"agent", "--listen", netip.AddrPortFrom(c.Hosts[i].Addr, agentPort).String(),
			"--certs", cl.certs, "--state", a.state, "--host", name,
			"--images", filepath.Dir(img.Kernel) + "," + filepath.Dir(img.Initrd)}
		a.start(t, cl.bin)
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("agent %s stderr (tail):\n%s", a.name, lastBytes(a.stderr.String(), 2000))
				for _, vm := range vmNames {
					if s := tail(a.console(vm), 1500); s != "" {
						t.Logf("agent %s console %s (tail):\n%s", a.name, vm, s)
					}
				}
			}
			a.crash()
		})
		cl.agents = append(cl.agents, a)
		probes = append(probes, progress.DirBytes(filepath.Join(a.state, "run")))
	}
	ctx := qemutest.Context(t, 30*time.Minute, probes...)
	coord, err := certs.Load(cl.certs, certs.CoordinatorName)
	if err != nil {
		t.Fatal(err)
	}
	for i, a := range cl.agents {
		h, err := remote.Connect(forward(t, c.Hosts[3], netip.AddrPortFrom(c.Hosts[i].Addr, agentPort).String()), a.name, coord)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { h.Close() })
		cl.hosts = append(cl.hosts, h)
	}
	opts := func(v *vne.VNE) realbackend.Options {
		d, err := os.MkdirTemp(root, "co")
		if err != nil {
			t.Fatal(err)
		}
		return realbackend.Options{Image: img, Dir: d, Agents: cl.hosts, LeaseTTL: leaseTTL, VNE: v}
	}
	storeDir := filepath.Join(root, "store")
	if err := os.Mkdir(storeDir, 0o755); err != nil {
		t.Fatal(err)
	}

	// Boot: VM i on host i.
	v1 := cl.vneFile(t, "boot", []int{0, 1, 2})
	env, err := realbackend.Boot(ctx, v1, opts(v1))
	if err != nil {
		t.Fatal(progress.Why(ctx, err))
	}
	t.Cleanup(func() { env.Close() })
	for i, vm := range vmNames {
		if _, _, err := waitLine(ctx, cl.consoleOf(i, vm), 0, func(l string) bool {
			var rx, tx uint64
			_, err := fmt.Sscanf(text(l), "TCPSTREAM PROGRESS rx=%d tx=%d", &rx, &tx)
			return err == nil && rx >= 300_000
		}); err != nil {
			t.Fatalf("%s: workload makes no progress: %v", vm, progress.Why(ctx, err))
		}
	}

	// A VNE snapshot across the three agents.
	var mu sync.Mutex
	var events []realbackend.Progress
	rep, err := env.Snapshot(ctx, realbackend.SnapshotOptions{Store: storeDir, Name: "s1", Algorithm: core.VNsnap, Sink: core.MemorySink,
		OnProgress: func(p realbackend.Progress) { mu.Lock(); events = append(events, p); mu.Unlock() }})
	if err != nil {
		t.Fatal(progress.Why(ctx, err))
	}
	for i, r := range rep.VMs {
		cr := rep.Core.VMs[i]
		t.Logf("s1 %s: core downtime %v, rounds %d, hypervisor downtime %v, stream %d bytes", r.Name,
			cr.Downtime().Round(time.Millisecond), cr.Rounds, r.Save.Downtime, r.Save.Bytes)
	}
	t.Logf("s1: epoch %d, window %v, duration %v", rep.Epoch, rep.Core.Window().Round(time.Millisecond), rep.Duration.Round(time.Millisecond))
	for i, vm := range vmNames {
		if l, _, err := waitLine(expired(), cl.consoleOf(i, vm), 0, func(l string) bool { return strings.HasPrefix(text(l), "TCPSTREAM DONE") }); err == nil {
			t.Fatalf("%s finished its transfer (%q) before the snapshot ended: raise wlBytes", vm, l)
		}
	}
	cl.checkCut(t, "s1", rep.Epoch)
	if out := os.Getenv("VNSNAP_TIMELINE"); out != "" {
		writeTimeline(t, out, rep, events)
	}
	env.Close()

	// Restore with every VM on another host. A restored VNE needs fresh
	// switches: the agents start again on their state directories.
	for _, a := range cl.agents {
		a.crash()
		a.start(t, cl.bin)
	}
	place := []int{1, 2, 0}
	v2 := cl.vneFile(t, "moved", place)
	from := make([]int64, len(vmNames))
	for i, vm := range vmNames {
		from[i] = size(cl.consoleOf(place[i], vm))
	}
	renv, rrep, err := realbackend.Restore(ctx, storeDir, "s1", opts(v2))
	if err != nil {
		t.Fatalf("restore: %v", progress.Why(ctx, err))
	}
	t.Cleanup(func() { renv.Close() })
	t.Logf("restored s1 at epoch %d with a on h2, b on h3, c on h1", rrep.Epoch)
	for i, vm := range vmNames {
		l, _, err := waitLine(ctx, cl.consoleOf(place[i], vm), from[i], func(l string) bool { return strings.HasPrefix(text(l), "TCPSTREAM DONE") })
		if err != nil {
			t.Fatalf("restored %s: %v", vm, progress.Why(ctx, err))
		}
		if text(l) != "TCPSTREAM DONE ok=4 fail=0" {
			t.Errorf("restored %s on %s: %q, want ok=4 fail=0", vm, cl.agents[place[i]].name, text(l))
		}
	}
	if t.Failed() {
		return
	}

	t.Run("foreign-coordinator", func(t *testing.T) { testForeignCoordinator(ctx, t, cl) })
	t.Run("coordinator-killed", func(t *testing.T) { testCoordinatorKilled(ctx, t, cl, place) })
	t.Run("next-snapshot", func(t *testing.T) {
		rep, err := renv.Snapshot(ctx, realbackend.SnapshotOptions{Store: storeDir, Name: "s2", Algorithm: core.VNsnap, Sink: core.MemorySink})
		if err != nil {
			t.Fatal(progress.Why(ctx, err))
		}
		// The dead coordinator's epoch is on every port (the agents' leases
		// ran out): this snapshot must take a later one and cut every VM
		// at it.
		if dead := cl.deadEpoch; rep.Epoch <= dead {
			t.Errorf("s2 at epoch %d, want above the dead coordinator's %d", rep.Epoch, dead)
		}
		if rep.Core.Epoch != rep.Epoch {
			t.Errorf("s2: the core ran epoch %d, the report says %d", rep.Core.Epoch, rep.Epoch)
		}
		cl.checkCut(t, "s2", rep.Epoch)
	})
	t.Run("agent-killed", func(t *testing.T) { testAgentKilled(ctx, t, cl, renv, storeDir, place) })
}

// expired returns a context that is already done.
func expired() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

func lastBytes(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// testForeignCoordinator: a coordinator whose certificate another CA
// signed is refused by an agent over the cluster network.
func testForeignCoordinator(ctx context.Context, t *testing.T, cl *cluster) {
	other := filepath.Join(cl.root, "other-certs")
	run(t, cl.bin, "certs", "--dir", other, "--hosts", "h1="+cl.c.Hosts[0].Addr.String())
	id, err := certs.Load(other, certs.CoordinatorName)
	if err != nil {
		t.Fatal(err)
	}
	h, err := remote.Connect(forward(t, cl.c.Hosts[3], netip.AddrPortFrom(cl.c.Hosts[0].Addr, agentPort).String()), "h1", id)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if _, err := h.Epoch(cctx); err == nil {
		t.Fatal("an agent answered a coordinator of another CA")
	} else {
		t.Logf("refused: %v", err)
	}
}

// writeTimeline writes the snapshot's per-VM progress (VMs booted on hosts
// h1, h2, h3) as JSON for results/cmd/clustertimeline.
func writeTimeline(t *testing.T, path string, rep *realbackend.Report, events []realbackend.Progress) {
	t.Helper()
	b, err := json.MarshalIndent(struct {
		Start  time.Time
		Epoch  core.Epoch
		Hosts  map[string]string
		Events []realbackend.Progress
	}{rep.Start, rep.Epoch, map[string]string{"a": "h1", "b": "h2", "c": "h3"}, events}, "", " ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// noManifest checks that the store has no snapshot name.
func noManifest(t *testing.T, storeDir, name string) {
	t.Helper()
	if s, err := store.Open(storeDir, name); err == nil {
		s.Close()
		t.Errorf("snapshot %s has a manifest", name)
	} else if !errors.Is(err, os.ErrNotExist) {
		t.Logf("store.Open(%s): %v", name, err)
	}
}
