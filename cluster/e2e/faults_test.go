package e2e

import (
	"bufio"
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
	"syscall"
	"testing"
	"time"

	"github.com/vnsnap/vnsnap/cluster/certs"
	"github.com/vnsnap/vnsnap/cluster/remote"
	"github.com/vnsnap/vnsnap/core"
	"github.com/vnsnap/vnsnap/internal/testutil"
	"github.com/vnsnap/vnsnap/qemubackend/qemutest/progress"
	"github.com/vnsnap/vnsnap/realbackend"
	"github.com/vnsnap/vnsnap/realbackend/hv"
)

// coordEnv, when set, makes the test binary a coordinator process that
// takes a snapshot's leases, holds every VM at its snapshot point and waits
// to be killed (coordinatorMain).
const coordEnv = "VNSNAP_E2E_COORDINATOR"

// coordConfig is what the coordinator process is told.
type coordConfig struct {
	Certs    string
	Snapshot string
	TTL      time.Duration
	VMs      []coordVM
}

type coordVM struct {
	Host, Addr, Name string
	ID               core.VMID
}

func TestMain(m *testing.M) {
	if cfg := os.Getenv(coordEnv); cfg != "" {
		if err := coordinatorMain(cfg); err != nil {
			fmt.Fprintln(os.Stderr, "coordinator:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// coordinatorMain takes the leases and holds every VM's live save at its
// snapshot point, printing "POINT vm" for each, until it is killed.
func coordinatorMain(raw string) error {
	var cfg coordConfig
	if err := json.Unmarshal([]byte(raw), &cfg); err != nil {
		return err
	}
	id, err := certs.Load(cfg.Certs, certs.CoordinatorName)
	if err != nil {
		return err
	}
	ctx := context.Background()
	var hosts []*remote.Host
	var epoch core.Epoch
	for _, vm := range cfg.VMs {
		h, err := remote.Connect(vm.Addr, vm.Host, id)
		if err != nil {
			return err
		}
		e, err := h.Epoch(ctx)
		if err != nil {
			return err
		}
		epoch = max(epoch, e+1)
		hosts = append(hosts, h)
	}
	for _, h := range hosts {
		if _, err := h.Begin(ctx, cfg.Snapshot, epoch, cfg.TTL); err != nil {
			return err
		}
	}
	var mu sync.Mutex
	errs := make(chan error, len(cfg.VMs))
	for i, vm := range cfg.VMs {
		m := hosts[i].Machine(vm.ID, vm.Name)
		go func() {
			_, err := m.Save(ctx, io.Discard, hv.SaveOptions{Live: true, AtSnapshotPoint: func(ctx context.Context) error {
				mu.Lock()
				fmt.Printf("POINT %s %d\n", vm.Name, epoch)
				mu.Unlock()
				select {} // held until this process is killed
			}})
			errs <- err
		}()
	}
	return <-errs
}

// testCoordinatorKilled: a coordinator process killed with SIGKILL while
// every VM is paused at its snapshot point. Each agent's lease runs out and
// it resumes its VM on its own, with the partial snapshot removed: the
// VMs beat again.
func testCoordinatorKilled(ctx context.Context, t *testing.T, cl *cluster, place []int) {
	cfg := coordConfig{Certs: cl.certs, Snapshot: "sdead", TTL: leaseTTL}
	for i, vm := range vmNames {
		h := place[i]
		cfg.VMs = append(cfg.VMs, coordVM{Host: cl.agents[h].name, Addr: netip.AddrPortFrom(cl.c.Hosts[h].Addr, agentPort).String(),
			Name: vm, ID: core.VMID(i)})
	}
	raw, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cmd := cl.c.Hosts[3].Command(context.Background(), os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), coordEnv+"="+string(raw))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := &testutil.SyncBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	kill := func() {
		if !killed {
			killed = true
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			cmd.Wait()
		}
	}
	defer kill()
	points := make(chan string)
	go func() {
		defer close(points)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			points <- sc.Text()
		}
	}()
	var epoch core.Epoch
	for range vmNames {
		var l string
		var ok bool
		select {
		case l, ok = <-points:
		case <-ctx.Done():
		}
		if !ok {
			t.Fatalf("coordinator process: %v\n%s", progress.Why(ctx, ctx.Err()), stderr)
		}
		var vm string
		if _, err := fmt.Sscanf(l, "POINT %s %d", &vm, &epoch); err != nil {
			t.Fatalf("coordinator process said %q", l)
		}
	}
	kill()
	killedAt := time.Now()
	cl.deadEpoch = epoch
	for i, vm := range vmNames {
		// An agent whose lease ran out removes the partial snapshot, then
		// resumes its VMs: wait for the one, then for a heartbeat after it.
		a := cl.agents[place[i]]
		dir := filepath.Join(a.state, "snapshots", "sdead")
		for {
			if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
				break
			}
			select {
			case <-ctx.Done():
				t.Fatalf("agent %s keeps the partial snapshot %s: %v", a.name, dir, progress.Why(ctx, ctx.Err()))
			case <-time.After(50 * time.Millisecond):
			}
		}
		expired := time.Since(killedAt)
		if _, err := beatsAfter(ctx, a.console(vm), size(a.console(vm))); err != nil {
			t.Fatalf("%s on %s does not run again after the coordinator died: %v", vm, a.name, progress.Why(ctx, err))
		}
		t.Logf("%s on %s: partial snapshot gone %v and the VM beating again %v after the coordinator was killed (lease %v)",
			vm, a.name, expired.Round(time.Millisecond), time.Since(killedAt).Round(time.Millisecond), leaseTTL)
	}
	for i, h := range cl.hosts {
		if e, err := h.Epoch(ctx); err != nil || e < epoch {
			t.Errorf("agent %s has seen epoch %d (%v), want the dead coordinator's %d", cl.agents[i].name, e, err, epoch)
		}
	}
}

// testAgentKilled: an agent killed with SIGKILL (with its QEMU: the host
// crashed) while the VNE's snapshot copies: the coordinator aborts, no
// manifest is written and the other VMs run on.
func testAgentKilled(ctx context.Context, t *testing.T, cl *cluster, env *realbackend.Env, storeDir string, place []int) {
	const victim = 0 // vm a's host
	dead := cl.agents[place[victim]]
	var once sync.Once
	_, err := env.Snapshot(ctx, realbackend.SnapshotOptions{Store: storeDir, Name: "s3", Algorithm: core.VNsnap, Sink: core.MemorySink,
		OnProgress: func(p realbackend.Progress) {
			if p.VM == vmNames[victim] && p.Phase == realbackend.PhaseLiveCopy {
				once.Do(dead.crash)
			}
		}})
	if err == nil {
		t.Fatal("the snapshot succeeded with an agent killed in it")
	}
	t.Logf("snapshot with agent %s killed: %v", dead.name, err)
	if !errors.Is(err, realbackend.ErrAborted) || !strings.Contains(err.Error(), dead.name) {
		t.Errorf("snapshot error %v: want ErrAborted naming agent %s", err, dead.name)
	}
	noManifest(t, storeDir, "s3")
	for i, vm := range vmNames {
		if i == victim {
			continue
		}
		a := cl.agents[place[i]]
		if _, err := beatsAfter(ctx, a.console(vm), size(a.console(vm))); err != nil {
			t.Errorf("%s on %s does not run after the abort: %v", vm, a.name, progress.Why(ctx, err))
		}
		if _, err := os.Stat(filepath.Join(a.state, "snapshots", "s3")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("agent %s kept the aborted snapshot's directory: %v", a.name, err)
		}
	}
}
