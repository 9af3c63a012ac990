package agent

import (
	"context"
	"os"
	"path/filepath"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/vnsnap/vnsnap/cluster/clusterpb"
	"github.com/vnsnap/vnsnap/realbackend/hv"
)

// machineSpec turns a checked spec into the port's, on the VM's switch
// port; the caller holds a.mu.
func (a *Agent) machineSpecLocked(s *clusterpb.MachineSpec) (hv.MachineSpec, *os.File, error) {
	if _, err := a.switchLocked(); err != nil {
		return hv.MachineSpec{}, nil, err
	}
	if name, ok := a.ports[s.Vm]; !ok || name != s.Name {
		return hv.MachineSpec{}, nil, status.Errorf(codes.FailedPrecondition, "vm %d (%s) has no port on host %s", s.Vm, s.Name, a.cfg.Host)
	}
	if a.vms[s.Vm] != nil {
		return hv.MachineSpec{}, nil, status.Errorf(codes.AlreadyExists, "vm %d (%s) already runs on host %s", s.Vm, s.Name, a.cfg.Host)
	}
	console, err := os.OpenFile(filepath.Join(runDir(a.cfg.State), s.Name+".console"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return hv.MachineSpec{}, nil, hvError("console", err)
	}
	return hv.MachineSpec{
		Name: s.Name, MemoryMiB: int(s.MemoryMib), VCPUs: int(s.Vcpus),
		Kernel: s.Kernel, Initrd: s.Initrd, Append: s.Append,
		NetSocket: a.socket(s.Name), MAC: s.Mac, ConsoleLog: console,
	}, console, nil
}

// StartVM boots a VM on its port. The VM runs when StartVM returns.
func (a *Agent) StartVM(ctx context.Context, r *clusterpb.StartVMRequest) (*clusterpb.Ack, error) {
	return ack(a.calls.do(r.GetCall(), "StartVM", func() (proto.Message, error) {
		if err := checkSpec(r.Spec, a.cfg.ImageDirs); err != nil {
			return nil, err
		}
		return a.launch(r.Spec, func(spec hv.MachineSpec) (hv.Machine, error) {
			return a.cfg.Hypervisor.Start(ctx, spec)
		})
	}))
}

// RestoreVM starts a VM from a complete image the agent holds (a snapshot
// taken here or an image received); the VM is paused when it returns.
func (a *Agent) RestoreVM(ctx context.Context, r *clusterpb.RestoreVMRequest) (*clusterpb.Ack, error) {
	return ack(a.calls.do(r.GetCall(), "RestoreVM", func() (proto.Message, error) {
		if err := checkSpec(r.Spec, a.cfg.ImageDirs); err != nil {
			return nil, err
		}
		if err := checkImageRef("image", r.Image); err != nil {
			return nil, err
		}
		path, _, err := a.completeImage(r.Image)
		if err != nil {
			return nil, err
		}
		return a.launch(r.Spec, func(spec hv.MachineSpec) (hv.Machine, error) {
			f, err := os.Open(path)
			if err != nil {
				return nil, err
			}
			defer f.Close()
			return a.cfg.Hypervisor.Restore(ctx, spec, f)
		})
	}))
}

// launch starts or restores a VM with start and records it. The VM's slot
// is taken (a placeholder without machine) while it boots, so two calls for
// one VM never both boot it.
func (a *Agent) launch(s *clusterpb.MachineSpec, start func(hv.MachineSpec) (hv.Machine, error)) (proto.Message, error) {
	a.mu.Lock()
	spec, console, err := a.machineSpecLocked(s)
	if err != nil {
		a.mu.Unlock()
		return nil, err
	}
	v := &vmState{id: s.Vm, name: s.Name, console: console}
	a.vms[s.Vm] = v
	a.mu.Unlock()

	m, err := start(spec)
	a.mu.Lock()
	defer a.mu.Unlock()
	if err != nil {
		delete(a.vms, s.Vm)
		console.Close()
		return nil, hvError("start "+s.Name, err)
	}
	v.m = m
	return &clusterpb.Ack{}, nil
}

// running returns a VM whose machine has started.
func (a *Agent) running(id int32) (*vmState, error) {
	if err := checkVM("vm", id); err != nil {
		return nil, err
	}
	v, err := a.vm(id)
	if err != nil {
		return nil, err
	}
	if v.m == nil {
		return nil, status.Errorf(codes.Unavailable, "vm %d (%s) is still starting", id, v.name)
	}
	return v, nil
}

// PauseVM pauses a VM (a paused VM stays paused). A pause of an epoch
// whose lease ran out is refused (calls.fence); one that the expiry
// overtook while it paused resumes the VM and is refused too: the expiry
// may have resumed the VM before this pause took hold, and no coordinator
// of that epoch is left to resume it.
func (a *Agent) PauseVM(ctx context.Context, r *clusterpb.VMRequest) (*clusterpb.Ack, error) {
	return ack(a.calls.do(r.GetCall(), "PauseVM", func() (proto.Message, error) {
		v, err := a.running(r.Vm)
		if err != nil {
			return nil, err
		}
		if err := v.m.Pause(ctx); err != nil {
			return nil, hvError("pause "+v.name, err)
		}
		if e := r.Call.Epoch; a.calls.fenced(e) {
			if err := v.m.Resume(a.ctx); err != nil {
				return nil, hvError("resume "+v.name+" after a pause of an epoch that ended", err)
			}
			return nil, status.Errorf(codes.FailedPrecondition, "PauseVM: epoch %d ended while vm %s paused (its lease ran out): resumed", e, v.name)
		}
		return &clusterpb.Ack{}, nil
	}))
}

// ResumeVM resumes a VM (a running VM is left alone). A retry of a resume
// already done answers without acting: it never resumes a VM paused since.
func (a *Agent) ResumeVM(ctx context.Context, r *clusterpb.VMRequest) (*clusterpb.Ack, error) {
	return ack(a.calls.do(r.GetCall(), "ResumeVM", func() (proto.Message, error) {
		v, err := a.running(r.Vm)
		if err != nil {
			return nil, err
		}
		return &clusterpb.Ack{}, hvError("resume "+v.name, v.m.Resume(ctx))
	}))
}

// KillVM stops a VM for good, cancelling its save if one runs.
func (a *Agent) KillVM(ctx context.Context, r *clusterpb.VMRequest) (*clusterpb.Ack, error) {
	return ack(a.calls.do(r.GetCall(), "KillVM", func() (proto.Message, error) {
		v, err := a.running(r.Vm)
		if err != nil {
			return nil, err
		}
		a.mu.Lock()
		s := v.save
		a.mu.Unlock()
		if s != nil {
			s.cancel()
			<-s.done
		}
		v.m.Kill()
		a.mu.Lock()
		delete(a.vms, r.Vm)
		a.mu.Unlock()
		v.console.Close()
		return &clusterpb.Ack{}, nil
	}))
}
