package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/vnsnap/vnsnap/cluster/clusterpb"
	"github.com/vnsnap/vnsnap/internal/durable"
	"github.com/vnsnap/vnsnap/realbackend/hv"
	"github.com/vnsnap/vnsnap/vne"
	"github.com/vnsnap/vnsnap/vnet"
)

// Config configures an Agent.
type Config struct {
	// Host is the agent's host name (a VNE host name).
	Host string
	// State is the agent's state directory: sockets, consoles, snapshot
	// directories and received images live there, under names the agent
	// makes itself.
	State string
	// Hypervisor runs the host's VMs.
	Hypervisor hv.Hypervisor
	// ImageDirs are the directories kernels and initramfs images may come
	// from; a StartVM naming a file elsewhere is refused.
	ImageDirs []string
	// Clock runs the leases; nil means SystemClock.
	Clock Clock
	// Logger receives diagnostics; nil discards them.
	Logger *slog.Logger
	// OnLeaseExpired, if set, is called when a lease ran out and the
	// agent has discarded its snapshot and resumed its VMs; err wraps
	// ErrLeaseExpired and whatever failed.
	OnLeaseExpired func(snapshot string, err error)
}

// Agent is one host's agent: the gRPC service clusterpb.AgentServer over
// the host's switch, VMs, snapshot directories and images.
type Agent struct {
	clusterpb.UnimplementedAgentServer

	cfg   Config
	clock Clock
	log   *slog.Logger
	calls *calls
	ctx   context.Context // ends with Close
	stop  context.CancelFunc
	// syncDir makes a directory's entries durable (durable.SyncDir;
	// tests watch it).
	syncDir func(dir string) error

	mu    sync.Mutex // guards the fields below
	sw    *vnet.Switch
	flog  *os.File
	vms   map[int32]*vmState
	ports map[int32]string // VM id -> name, from SetupHost
	lease *lease
	xfers map[string]bool // images being received (PutImage), by path
}

// vmState is one VM of the host.
type vmState struct {
	id      int32
	name    string
	m       hv.Machine
	console *os.File
	save    *saveRun // the save in progress, if any
}

// New opens the agent's state directory, creating it if missing, and
// removes what a crashed agent left half-done: snapshot directories it made
// and never committed (see Cleanup). Only then does it serve; a snapshot
// directory whose state cannot be read fails New, naming it.
func New(cfg Config) (*Agent, []string, error) {
	if err := vne.CheckName("host", cfg.Host); err != nil {
		return nil, nil, fmt.Errorf("agent: host: %w", err)
	}
	if cfg.Hypervisor == nil {
		return nil, nil, errors.New("agent: no hypervisor")
	}
	if !filepath.IsAbs(cfg.State) {
		return nil, nil, fmt.Errorf("agent: state directory %q is not absolute", cfg.State)
	}
	for _, d := range []string{cfg.State, runDir(cfg.State), snapshotsDir(cfg.State), imagesDir(cfg.State)} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, nil, fmt.Errorf("agent: %w", err)
		}
	}
	removed, err := Cleanup(cfg.State)
	if err != nil {
		return nil, nil, err
	}
	a := &Agent{cfg: cfg, clock: cfg.Clock, log: cfg.Logger, calls: newCalls(), syncDir: durable.SyncDir,
		vms: map[int32]*vmState{}, ports: map[int32]string{}, xfers: map[string]bool{}}
	if a.clock == nil {
		a.clock = SystemClock{}
	}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	a.ctx, a.stop = context.WithCancel(context.Background())
	return a, removed, nil
}

// Close kills the agent's VMs, closes its switch and ends its lease timer.
func (a *Agent) Close() error {
	a.stop()
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.lease != nil {
		a.lease.timer.Stop()
		a.lease.cancel()
	}
	for _, v := range a.vms {
		v.m.Kill()
		if v.console != nil {
			v.console.Close()
		}
	}
	a.vms = map[int32]*vmState{}
	var err error
	if a.sw != nil {
		err = a.sw.Close()
		a.sw = nil
	}
	if a.flog != nil {
		a.flog.Close()
	}
	return err
}

// mkdir makes directory dir (and its missing parents) durably: each new
// directory's parent is synced.
func (a *Agent) mkdir(dir string) error {
	if fi, err := os.Lstat(dir); err == nil {
		if !fi.IsDir() {
			return fmt.Errorf("%s is not a directory", dir)
		}
		return nil
	}
	if parent := filepath.Dir(dir); parent != dir {
		if err := a.mkdir(parent); err != nil {
			return err
		}
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	return a.syncDir(filepath.Dir(dir))
}

// Switch returns the host's switch, nil before SetupHost.
func (a *Agent) Switch() *vnet.Switch {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.sw
}

// Machine returns VM vm's machine, nil if the agent runs no such VM.
func (a *Agent) Machine(vm int32) hv.Machine {
	a.mu.Lock()
	defer a.mu.Unlock()
	if v := a.vms[vm]; v != nil {
		return v.m
	}
	return nil
}

// State returns the agent's state directory.
func (a *Agent) State() string { return a.cfg.State }

// Epoch returns the highest coordinator epoch the agent has seen.
func (a *Agent) Epoch() uint32 { return a.calls.Epoch() }

// Hello names the agent.
func (a *Agent) Hello(ctx context.Context, _ *clusterpb.HelloRequest) (*clusterpb.HelloReply, error) {
	info := a.cfg.Hypervisor.Info()
	r := &clusterpb.HelloReply{Host: a.cfg.Host, Hypervisor: info.Name, HypervisorVersion: info.Version,
		ImageFormat: info.ImageFormat, Epoch: a.calls.Epoch()}
	if sw := a.Switch(); sw != nil && sw.TunnelAddr().IsValid() {
		r.TunnelAddr = sw.TunnelAddr().String()
	}
	return r, nil
}

// sortedVMsLocked returns the VMs in id order; the caller holds a.mu.
func (a *Agent) sortedVMsLocked() []*vmState {
	ids := slices.Sorted(maps.Keys(a.vms))
	vs := make([]*vmState, len(ids))
	for i, id := range ids {
		vs[i] = a.vms[id]
	}
	return vs
}

// vm returns VM id's state; the caller holds a.mu.
func (a *Agent) vmLocked(id int32) (*vmState, error) {
	v := a.vms[id]
	if v == nil {
		return nil, status.Errorf(codes.NotFound, "vm %d: not running on host %s", id, a.cfg.Host)
	}
	return v, nil
}

func (a *Agent) vm(id int32) (*vmState, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.vmLocked(id)
}

// hvError turns a hypervisor or switch failure into a status.
func hvError(what string, err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok && status.Code(err) != codes.Unknown {
		return err
	}
	switch {
	case errors.Is(err, context.Canceled):
		return status.Errorf(codes.Canceled, "%s: %v", what, err)
	case errors.Is(err, context.DeadlineExceeded):
		return status.Errorf(codes.DeadlineExceeded, "%s: %v", what, err)
	case errors.Is(err, vnet.ErrEpochBackwards):
		return status.Errorf(codes.FailedPrecondition, "%s: %v", what, err)
	case errors.Is(err, vnet.ErrUnknownVM):
		return status.Errorf(codes.NotFound, "%s: %v", what, err)
	}
	return status.Errorf(codes.Internal, "%s: %v", what, err)
}

var _ clusterpb.AgentServer = (*Agent)(nil)
