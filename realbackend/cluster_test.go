package realbackend

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/vnsnap/vnsnap/cluster/agent"
	"github.com/vnsnap/vnsnap/cluster/certs"
	"github.com/vnsnap/vnsnap/cluster/remote"
	"github.com/vnsnap/vnsnap/core"
	"github.com/vnsnap/vnsnap/core/cut"
	"github.com/vnsnap/vnsnap/qemubackend"
	"github.com/vnsnap/vnsnap/qemubackend/qemutest"
	"github.com/vnsnap/vnsnap/qemubackend/qemutest/progress"
)

// testAgent is one in-process agent served over mutual TLS on the
// loopback, with its real QEMU hypervisor.
type testAgent struct {
	a       *agent.Agent
	addr    string
	expired chan error // OnLeaseExpired's reports
}

// serveAgents serves an agent per host of the certificates in dir.
func serveAgents(t *testing.T, dir string, hyp Hypervisor, imageDirs []string, hosts ...string) []*testAgent {
	t.Helper()
	var out []*testAgent
	for _, h := range hosts {
		state := shortDir(t)
		ta := &testAgent{expired: make(chan error, 4)}
		a, _, err := agent.New(agent.Config{Host: h, State: state, Hypervisor: hyp, ImageDirs: imageDirs,
			OnLeaseExpired: func(_ string, err error) { ta.expired <- err }})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { a.Close() })
		id, err := certs.Load(dir, certs.AgentName(h))
		if err != nil {
			t.Fatal(err)
		}
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		s := agent.NewServer(a, certs.ServerConfig(id))
		done := make(chan error, 1)
		go func() { done <- s.Serve(l) }()
		t.Cleanup(func() {
			s.Stop()
			if err := <-done; err != nil && !errors.Is(err, grpc.ErrServerStopped) {
				t.Errorf("agent %s: serve: %v", h, err)
			}
		})
		ta.a, ta.addr = a, l.Addr().String()
		out = append(out, ta)
	}
	return out
}

// connect returns a coordinator's Hosts for the agents (hosts[i] is
// agents[i]'s), closed at cleanup.
func connect(t *testing.T, dir string, agents []*testAgent, hosts ...string) []*remote.Host {
	t.Helper()
	id, err := certs.Load(dir, certs.CoordinatorName)
	if err != nil {
		t.Fatal(err)
	}
	var out []*remote.Host
	for i, ta := range agents {
		h, err := remote.Connect(ta.addr, hosts[i], id)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { h.Close() })
		out = append(out, h)
	}
	return out
}

const pairYAML = `name: pair
hosts:
  - name: h1
  - name: h2
vms:
  - name: a
    host: h1
    memory: 128MiB
    ip: 10.0.0.1
    guest: {builtin: tcpstream, args: ["-bytes=%[1]d", "-progress=250ms"]}
  - name: b
    host: h2
    memory: 128MiB
    ip: 10.0.0.2
    guest: {builtin: tcpstream, args: ["-bytes=%[1]d", "-progress=250ms"]}
`

// agentCut checks the cut of epoch e on the frame logs the agents flushed
// into their directories of snapshot snap.
func agentCut(t *testing.T, agents []*testAgent, hosts []string, snap string, e core.Epoch, n int) cut.Result {
	t.Helper()
	var paths []string
	for i, ta := range agents {
		paths = append(paths, filepath.Join(ta.a.State(), "snapshots", snap, "frames-"+hosts[i]+".log"))
	}
	return checkLogs(t, paths, e, n)
}

// streams reports whether the tcpstream guest whose console is the file
// console has received data.
func streams(console string) bool {
	b, _ := os.ReadFile(console)
	for _, l := range strings.Split(string(b), "\n") {
		_, t, _ := strings.Cut(l, "TCPSTREAM PROGRESS ")
		var rx, tx uint64
		if _, err := fmt.Sscanf(t, "rx=%d tx=%d", &rx, &tx); err == nil && rx > 0 {
			return true
		}
	}
	return false
}

// TestClusterSnapshotAfterExpiredLease: a coordinator takes every agent's
// lease at an epoch past the VNE's and goes silent; each agent's lease runs
// out and it puts its ports on that epoch. The VNE's coordinator's next
// snapshot must take a later epoch and colour every VM with it: the agents'
// frame logs show every VM's cut at the snapshot's epoch, with no orphan,
// and the manifest, the report and the core agree on that epoch.
func TestClusterSnapshotAfterExpiredLease(t *testing.T) {
	h := requireQEMU(t)
	img := guestImage(t)
	hostNames := []string{"h1", "h2"}
	dir := t.TempDir()
	if err := certs.Create(dir, []certs.Host{{Name: "h1"}, {Name: "h2"}}, time.Now()); err != nil {
		t.Fatal(err)
	}
	agents := serveAgents(t, dir, qemubackend.NewHypervisor(h), []string{filepath.Dir(img.Kernel), filepath.Dir(img.Initrd)}, hostNames...)
	var probes []progress.Probe
	for _, ta := range agents {
		probes = append(probes, progress.DirBytes(filepath.Join(ta.a.State(), "run")))
	}
	ctx := qemutest.Context(t, 15*time.Minute, probes...) // derived from progress; 15m is a safety net
	v := writeVNE(t, filepath.Join(shortDir(t), "pair.yaml"), fmt.Sprintf(pairYAML, 200_000_000))
	env, err := Boot(ctx, v, Options{Image: img, Dir: shortDir(t), Agents: connect(t, dir, agents, hostNames...), LeaseTTL: 5 * time.Second})
	if err != nil {
		t.Fatal(progress.Why(ctx, err))
	}
	t.Cleanup(func() { env.Close() })
	for i, ta := range agents {
		console := filepath.Join(ta.a.State(), "run", v.VMs[i].Name+".console")
		for !streams(console) {
			select {
			case <-ctx.Done():
				t.Fatalf("%s: no stream progress: %v", v.VMs[i].Name, progress.Why(ctx, ctx.Err()))
			case <-time.After(100 * time.Millisecond):
			}
		}
	}

	// A coordinator that dies holding the leases: its epoch is one past
	// every agent's.
	dead := connect(t, dir, agents, hostNames...)
	var deadEpoch core.Epoch
	for _, h := range dead {
		e, err := h.Epoch(ctx)
		if err != nil {
			t.Fatal(err)
		}
		deadEpoch = max(deadEpoch, e+1)
	}
	for _, h := range dead {
		if _, err := h.Begin(ctx, "sdead", deadEpoch, time.Second); err != nil {
			t.Fatal(err)
		}
		h.Close() // no renewal: the lease runs out
	}
	for i, ta := range agents {
		select {
		case err := <-ta.expired:
			if err != agent.ErrLeaseExpired { // anything joined to it failed
				t.Fatalf("agent %s: lease expiry: %v", hostNames[i], err)
			}
		case <-ctx.Done():
			t.Fatalf("agent %s: the lease never ran out: %v", hostNames[i], progress.Why(ctx, ctx.Err()))
		}
		if got := ta.a.Epoch(); got != uint32(deadEpoch) {
			t.Fatalf("agent %s after the lease ran out: epoch %d, want %d", hostNames[i], got, deadEpoch)
		}
		for vm := range v.VMs {
			if e, err := ta.a.Switch().Epoch(core.VMID(vm)); err == nil && e != deadEpoch {
				t.Fatalf("agent %s: vm %d's port at epoch %d after the lease ran out, want %d", hostNames[i], vm, e, deadEpoch)
			}
		}
	}

	storeDir := t.TempDir()
	rep, err := env.Snapshot(ctx, SnapshotOptions{Store: storeDir, Name: "s1", Algorithm: core.VNsnap, Sink: core.MemorySink})
	if err != nil {
		t.Fatal(progress.Why(ctx, err))
	}
	if rep.Epoch <= deadEpoch {
		t.Errorf("snapshot epoch %d, want above the dead coordinator's %d", rep.Epoch, deadEpoch)
	}
	if rep.Core.Epoch != rep.Epoch {
		t.Errorf("core ran epoch %d, the report says %d", rep.Core.Epoch, rep.Epoch)
	}
	res := agentCut(t, agents, hostNames, "s1", rep.Epoch, len(v.VMs))
	t.Logf("s1: cut of epoch %d: sent %d, orphans %d, in transit %d, recovered by TCP %d, lost %d",
		rep.Epoch, res.Sent, res.Orphans, res.InTransit, res.RecoveredByTCP, res.Lost)
	if !res.Consistent() {
		t.Errorf("s1: cut not consistent: %d orphans (%v), missing cuts %v", res.Orphans, res.OrphanFrames, res.MissingCuts)
	}
	if res.Sent == 0 {
		t.Error("s1: the frame logs hold no frame")
	}
	for i, ta := range agents {
		for vm := range v.VMs {
			if e, err := ta.a.Switch().Epoch(core.VMID(vm)); err == nil && e != rep.Epoch {
				t.Errorf("agent %s: vm %d's port at epoch %d after s1, want %d", hostNames[i], vm, e, rep.Epoch)
			}
		}
	}
}
