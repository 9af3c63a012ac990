package agent

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/vnsnap/vnsnap/cluster/clusterpb"
	"github.com/vnsnap/vnsnap/core"
	"github.com/vnsnap/vnsnap/vnet"
)

// SetupHost creates the host's switch with its ports. A host is set up
// once (a retry of the same call returns its first answer).
func (a *Agent) SetupHost(ctx context.Context, r *clusterpb.SetupHostRequest) (*clusterpb.SetupHostReply, error) {
	rep, err := a.calls.do(r.GetCall(), "SetupHost", func() (proto.Message, error) {
		alg, err := checkSetupHost(r)
		if err != nil {
			return nil, err
		}
		a.mu.Lock()
		defer a.mu.Unlock()
		if a.sw != nil {
			return nil, status.Errorf(codes.FailedPrecondition, "host %s is already set up", a.cfg.Host)
		}
		flog, err := os.OpenFile(filepath.Join(runDir(a.cfg.State), "frames.log"), os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
		if err != nil {
			return nil, hvError("frame log", err)
		}
		sw, err := vnet.New(vnet.Config{ID: uint16(r.SwitchId), Algorithm: alg, TunnelAddr: r.TunnelAddr, FrameLog: flog, Logger: a.log})
		if err != nil {
			flog.Close()
			return nil, hvError("switch", err)
		}
		ports := map[int32]string{}
		for _, p := range r.Ports {
			if err := sw.AddPort(vnet.PortConfig{VM: core.VMID(p.Vm), Name: p.Name, Path: a.socket(p.Name)}); err != nil {
				sw.Close()
				flog.Close()
				return nil, hvError("port "+p.Name, err)
			}
			ports[p.Vm] = p.Name
		}
		a.sw, a.flog, a.ports = sw, flog, ports
		rep := &clusterpb.SetupHostReply{}
		if sw.TunnelAddr().IsValid() {
			rep.TunnelAddr = sw.TunnelAddr().String()
		}
		return rep, nil
	})
	if err != nil {
		return nil, err
	}
	return rep.(*clusterpb.SetupHostReply), nil
}

func (a *Agent) socket(vm string) string { return filepath.Join(runDir(a.cfg.State), vm+".sock") }

// switchLocked returns the switch; the caller holds a.mu.
func (a *Agent) switchLocked() (*vnet.Switch, error) {
	if a.sw == nil {
		return nil, status.Errorf(codes.FailedPrecondition, "host %s is not set up (SetupHost first)", a.cfg.Host)
	}
	return a.sw, nil
}

// AddTunnels joins the switch to other hosts' switches.
func (a *Agent) AddTunnels(ctx context.Context, r *clusterpb.AddTunnelsRequest) (*clusterpb.Ack, error) {
	return ack(a.calls.do(r.GetCall(), "AddTunnels", func() (proto.Message, error) {
		addrs, err := checkTunnels(r)
		if err != nil {
			return nil, err
		}
		a.mu.Lock()
		sw, err := a.switchLocked()
		a.mu.Unlock()
		if err != nil {
			return nil, err
		}
		for i, t := range r.Tunnels {
			if err := sw.AddTunnel(t.Name, addrs[i]); err != nil {
				return nil, hvError("tunnel "+t.Name, err)
			}
		}
		return &clusterpb.Ack{}, nil
	}))
}

// SetEpoch flips a VM's colour. Setting the epoch a port already has
// changes nothing; a lower one is refused (FailedPrecondition).
func (a *Agent) SetEpoch(ctx context.Context, r *clusterpb.SetEpochRequest) (*clusterpb.Ack, error) {
	return ack(a.calls.do(r.GetCall(), "SetEpoch", func() (proto.Message, error) {
		if err := checkVM("vm", r.Vm); err != nil {
			return nil, err
		}
		a.mu.Lock()
		sw, err := a.switchLocked()
		a.mu.Unlock()
		if err != nil {
			return nil, err
		}
		return &clusterpb.Ack{}, hvError("set epoch", setEpoch(sw, r.Vm, r.Colour))
	}))
}

// SetAlgorithm changes the switch's snapshot algorithm; it is refused
// during a snapshot (while a lease is held).
func (a *Agent) SetAlgorithm(ctx context.Context, r *clusterpb.SetAlgorithmRequest) (*clusterpb.Ack, error) {
	return ack(a.calls.do(r.GetCall(), "SetAlgorithm", func() (proto.Message, error) {
		alg, err := core.ParseAlgorithm(r.Algorithm)
		if err != nil {
			return nil, invalid("algorithm", err)
		}
		a.mu.Lock()
		sw, err := a.switchLocked()
		if err == nil && a.lease != nil {
			err = status.Errorf(codes.FailedPrecondition, "host %s is in snapshot %s", a.cfg.Host, a.lease.snapshot)
		}
		a.mu.Unlock()
		if err != nil {
			return nil, err
		}
		return &clusterpb.Ack{}, hvError("set algorithm", sw.SetAlgorithm(alg))
	}))
}

// setEpoch sets vm's port to e unless it is there already.
func setEpoch(sw *vnet.Switch, vm int32, e uint32) error {
	cur, err := sw.Epoch(core.VMID(vm))
	if err != nil {
		return err
	}
	if cur == core.Epoch(e) {
		return nil
	}
	return sw.SetEpoch(core.VMID(vm), core.Epoch(e))
}

// Flush writes the switch's frame log (as it is now) and, when asked, the
// in-transit log of an epoch into the snapshot's directory, which must be
// that of the current lease.
func (a *Agent) Flush(ctx context.Context, r *clusterpb.FlushRequest) (*clusterpb.Ack, error) {
	return ack(a.calls.do(r.GetCall(), "Flush", func() (proto.Message, error) {
		if err := checkSnapshot("snapshot", r.Snapshot); err != nil {
			return nil, err
		}
		a.mu.Lock()
		sw, err := a.switchLocked()
		if err == nil {
			_, err = a.leaseLocked(r.Snapshot)
		}
		a.mu.Unlock()
		if err != nil {
			return nil, err
		}
		if err := sw.FlushLog(); err != nil {
			return nil, hvError("flush frame log", err)
		}
		dir := a.snapshotDir(r.Snapshot)
		if err := a.copyFile(filepath.Join(runDir(a.cfg.State), "frames.log"), filepath.Join(dir, "frames-"+a.cfg.Host+".log")); err != nil {
			return nil, hvError("frame log", err)
		}
		if r.InTransitEpoch != 0 {
			err := a.writeAtomic(filepath.Join(dir, fmt.Sprintf("in-transit-%s-e%d.chan", a.cfg.Host, r.InTransitEpoch)), func(w io.Writer) error {
				_, err := sw.WriteInTransit(w, core.Epoch(r.InTransitEpoch))
				return err
			})
			if err != nil {
				return nil, hvError("in-transit log", err)
			}
		}
		return &clusterpb.Ack{}, nil
	}))
}

// ack converts calls.do's answer for handlers that return an Ack.
func ack(m proto.Message, err error) (*clusterpb.Ack, error) {
	if err != nil {
		return nil, err
	}
	return m.(*clusterpb.Ack), nil
}

// copyFile copies src to dst through a temporary name.
func (a *Agent) copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	return a.writeAtomic(dst, func(w io.Writer) error {
		_, err := io.Copy(w, in)
		return err
	})
}

// writeAtomic writes path through path.tmp, synced, then renamed, and
// syncs the directory: once it returns, path is whole and stays so across a
// crash.
func (a *Agent) writeAtomic(path string, write func(io.Writer) error) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	err = write(f)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return a.syncDir(filepath.Dir(path))
}
