package main

import (
	"bufio"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vnsnap/vnsnap/cluster/certs"
	"github.com/vnsnap/vnsnap/cluster/remote"
	"github.com/vnsnap/vnsnap/core"
	"github.com/vnsnap/vnsnap/internal/testutil"
	"github.com/vnsnap/vnsnap/qemubackend"
	"github.com/vnsnap/vnsnap/qemubackend/guestimg"
	"github.com/vnsnap/vnsnap/qemubackend/qemutest"
	"github.com/vnsnap/vnsnap/qemubackend/qemutest/progress"
	"github.com/vnsnap/vnsnap/realbackend/hv"
)

// agentProc is a `vnsnap agent` process in a process group of its own
// (with the QEMUs it starts), so a test can crash the whole host at once.
type agentProc struct {
	cmd    *exec.Cmd
	addr   string
	stderr *testutil.SyncBuffer
}

func startAgentProc(t *testing.T, bin string, args ...string) *agentProc {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"agent", "--listen", "127.0.0.1:0"}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &agentProc{cmd: cmd, stderr: &testutil.SyncBuffer{}}
	cmd.Stderr = p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.crash)
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("agent: no address: %v\n%s", err, p.stderr)
	}
	_, addr, ok := strings.Cut(strings.TrimSpace(line), "listening on ")
	if !ok {
		t.Fatalf("agent said %q", line)
	}
	p.addr = addr
	go io.Copy(io.Discard, out)
	return p
}

// crash kills the agent and its QEMUs with SIGKILL and reaps the agent.
func (p *agentProc) crash() {
	if p.cmd.ProcessState != nil {
		return
	}
	syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	p.cmd.Wait()
}

// TestAgentProcess runs `vnsnap agent` as a real process with a real QEMU
// VM: a coordinator that vanishes mid-snapshot (its lease renewals stop)
// leaves a paused VM that the agent resumes on its own; an agent killed
// with SIGKILL mid-save (with its QEMU: the host crashed) is restarted on
// the same state directory, removes the partial snapshot and takes the
// next snapshot.
func TestAgentProcess(t *testing.T) {
	qemutest.RequireQEMU(t)
	img := qemutest.GuestImage(t, "../..")
	state, err := os.MkdirTemp("/tmp", "vnap")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(state) })
	console := filepath.Join(state, "run", "a.console")
	ctx := qemutest.Context(t, 15*time.Minute, progress.DirBytes(state))
	dir := t.TempDir()
	bin := buildVnsnap(t, dir)
	certDir := filepath.Join(dir, "certs")
	runBin(t, os.Environ(), bin, "certs", "--dir", certDir, "--hosts", "h1=127.0.0.1")
	args := []string{"--certs", certDir, "--state", state, "--host", "h1", "--images", filepath.Dir(img.Kernel) + "," + filepath.Dir(img.Initrd)}
	ag := startAgentProc(t, bin, args...)
	coord, err := certs.Load(certDir, certs.CoordinatorName)
	if err != nil {
		t.Fatal(err)
	}
	connect := func(addr string) (*remote.Host, hv.Hypervisor) {
		t.Helper()
		h, err := remote.Connect(addr, "h1", coord)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { h.Close() })
		hyp, err := h.Hypervisor(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return h, hyp
	}
	h, hyp := connect(ag.addr)
	if _, err := h.Setup(ctx, 1, core.VNsnap, "", []remote.Port{{VM: 0, Name: "a"}}); err != nil {
		t.Fatal(err)
	}
	m, err := hyp.Start(ctx, hv.MachineSpec{Name: "a", MemoryMiB: 128, VCPUs: 1, Kernel: img.Kernel, Initrd: img.Initrd,
		Append: guestimg.KernelArgs("", "", guestimg.Program{Name: "heartbeat", Args: []string{"-interval=20ms"}}),
		MAC:    qemubackend.MACFor("a")})
	if err != nil {
		t.Fatal(err)
	}
	// beats waits until the console holds more heartbeat lines than n,
	// and returns how many it holds.
	beats := func(n int, what string) int {
		t.Helper()
		for {
			b, _ := os.ReadFile(console)
			if c := strings.Count(string(b), "HB "); c > n {
				return c
			}
			select {
			case <-ctx.Done():
				t.Fatalf("%s: no heartbeat after %d: %v\nagent: %s", what, n, progress.Why(ctx, ctx.Err()), ag.stderr)
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	beats(0, "boot")

	// The coordinator pauses the VM in snapshot s1, then vanishes.
	if _, err := h.Begin(ctx, "s1", 1, 2*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := m.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	paused := beats(0, "before the pause")
	h.Close() // no more renewals: the coordinator is gone
	// Five more heartbeats (100 ms of guest time): more than the lines a
	// pause can leave in flight, so the VM runs again.
	beats(paused+5, "after the coordinator vanished")
	if _, err := os.Stat(filepath.Join(state, "snapshots", "s1")); !os.IsNotExist(err) {
		t.Errorf("snapshot s1 after its lease ran out: stat err %v, want not exist", err)
	}

	// A new coordinator (same epoch rules) saves into s2; the host crashes
	// at the save's snapshot point.
	h2, _ := connect(ag.addr)
	h2.SetEpoch(1)
	if _, err := h2.Setup(ctx, 1, core.VNsnap, "", []remote.Port{{VM: 0, Name: "a"}}); err == nil {
		t.Error("a second Setup of a set-up host succeeded")
	}
	if _, err := h2.Begin(ctx, "s2", 2, time.Minute); err != nil {
		t.Fatal(err)
	}
	m2 := h2.Machine(0, "a")
	atPoint := make(chan struct{})
	saveDone := make(chan error, 1)
	go func() {
		_, err := m2.Save(ctx, io.Discard, hv.SaveOptions{Live: true, AtSnapshotPoint: func(hctx context.Context) error {
			close(atPoint)
			<-hctx.Done() // the agent's crash breaks the stream, which ends the hook
			return hctx.Err()
		}})
		saveDone <- err
	}()
	select {
	case <-atPoint:
	case err := <-saveDone:
		t.Fatalf("save ended before its snapshot point: %v", err)
	case <-ctx.Done():
		t.Fatalf("no snapshot point: %v", progress.Why(ctx, ctx.Err()))
	}
	if _, err := os.Stat(filepath.Join(state, "snapshots", "s2", "a.img.part")); err != nil {
		t.Fatalf("no partial image at the snapshot point: %v", err)
	}
	ag.crash()
	if err := <-saveDone; err == nil {
		t.Error("the save succeeded though its agent crashed")
	}

	ag2 := startAgentProc(t, bin, args...)
	// The agent logs the cleanup before it listens, but its stderr reaches
	// the buffer through exec's copying goroutine: wait for the line.
	for !strings.Contains(ag2.stderr.String(), "removed a partial snapshot") {
		if ctx.Err() != nil {
			t.Fatalf("restarted agent did not report the partial snapshot (%v):\n%s", context.Cause(ctx), ag2.stderr)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := os.Stat(filepath.Join(state, "snapshots", "s2")); !os.IsNotExist(err) {
		t.Errorf("snapshot s2 after the restart: stat err %v, want not exist", err)
	}
	h3, _ := connect(ag2.addr)
	h3.SetEpoch(2)
	l3, err := h3.Begin(ctx, "s3", 3, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if err := l3.End(ctx, true); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(state, "snapshots", "s3", "COMPLETE")); err != nil {
		t.Errorf("the next snapshot after the crash: %v", err)
	}
}
