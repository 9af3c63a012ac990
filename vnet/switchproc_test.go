package vnet

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"sort"
	"strings"
	"testing"

	"github.com/vnsnap/vnsnap/cluster/netnstest"
	"github.com/vnsnap/vnsnap/core"
)

// switchProcEnv, when set in the environment of this test binary, makes it
// a switch process (switchProcMain) instead of running tests: the
// cross-host test starts one inside each host namespace of its cluster.
const switchProcEnv = "VNSNAP_VNET_SWITCH_PROC"

// switchProcConfig is a switch process's configuration, passed as JSON in
// switchProcEnv.
type switchProcConfig struct {
	ID        uint16            `json:"id"`
	Algorithm string            `json:"algorithm"`
	Tunnel    string            `json:"tunnel"`  // local UDP address, in the host's namespace
	Peers     map[string]string `json:"peers"`   // tunnel name -> the peer switch's address
	Ports     []PortConfig      `json:"ports"`   // one per local VM
	FrameLog  string            `json:"log"`     // frame log file
	Control   string            `json:"control"` // unix socket of the control protocol
}

// switchProcMain runs one switch until its standard input closes (the test
// stops it, or died): it prints "READY" once its tunnel, ports and control
// socket listen, and closes the switch (flushing the frame log) before it
// exits.
func switchProcMain(cfgJSON string) int {
	if err := runSwitchProc(cfgJSON, os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "switch process:", err)
		return 1
	}
	return 0
}

func runSwitchProc(cfgJSON string, stdin io.Reader, stdout io.Writer) error {
	var cfg switchProcConfig
	if err := json.Unmarshal([]byte(cfgJSON), &cfg); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	alg, err := core.ParseAlgorithm(cfg.Algorithm)
	if err != nil {
		return err
	}
	logf, err := os.Create(cfg.FrameLog)
	if err != nil {
		return err
	}
	defer logf.Close()
	sw, err := New(Config{ID: cfg.ID, Algorithm: alg, TunnelAddr: cfg.Tunnel, FrameLog: logf, PortSendBuffer: 64 << 10})
	if err != nil {
		return err
	}
	names := make([]string, 0, len(cfg.Peers))
	for n := range cfg.Peers {
		names = append(names, n)
	}
	sort.Strings(names)
	var errs []error
	for _, n := range names {
		ap, err := netip.ParseAddrPort(cfg.Peers[n])
		if err == nil {
			err = sw.AddTunnel(n, ap)
		}
		errs = append(errs, err)
	}
	for _, p := range cfg.Ports {
		errs = append(errs, sw.AddPort(p))
	}
	ln, err := net.Listen("unix", cfg.Control)
	errs = append(errs, err)
	if err := errors.Join(errs...); err != nil {
		sw.Close()
		return err
	}
	served := make(chan error, 1)
	go func() { served <- sw.ServeControl(ln) }()
	fmt.Fprintln(stdout, "READY", sw.TunnelAddr())
	io.Copy(io.Discard, stdin)
	return errors.Join(sw.Close(), <-served)
}

// switchProc is a switch process started by startSwitchProc.
type switchProc struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	ctl   *Client
}

// startSwitchProc runs a switch process with cfg inside host h and dials
// its control socket. It is stopped at cleanup if the test does not stop it.
func startSwitchProc(ctx context.Context, t *testing.T, h netnstest.Host, cfg switchProcConfig) *switchProc {
	t.Helper()
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := h.Command(ctx, self, "-test.run=^$")
	cmd.Env = append(os.Environ(), switchProcEnv+"="+string(b))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start switch in %s: %v", h.Name, err)
	}
	p := &switchProc{cmd: cmd, stdin: stdin}
	t.Cleanup(func() { p.stop() })
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if !strings.HasPrefix(line, "READY ") {
		t.Fatalf("switch in %s: got %q (%v), want READY; stderr: %s", h.Name, line, err, stderr.String())
	}
	if p.ctl, err = Dial(ctx, "unix", cfg.Control); err != nil {
		t.Fatalf("switch in %s: control: %v", h.Name, err)
	}
	return p
}

// stop closes the switch process's standard input and waits for it: the
// switch closes and flushes its frame log.
func (p *switchProc) stop() error {
	if p.ctl != nil {
		p.ctl.Close()
		p.ctl = nil
	}
	if p.stdin == nil {
		return nil
	}
	p.stdin.Close()
	p.stdin = nil
	return p.cmd.Wait()
}
