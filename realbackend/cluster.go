package realbackend

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/vnsnap/vnsnap/cluster/remote"
	"github.com/vnsnap/vnsnap/core"
	"github.com/vnsnap/vnsnap/realbackend/hv"
	"github.com/vnsnap/vnsnap/vne"
)

// DefaultLeaseTTL is a clustered snapshot's lease on each agent when
// Options.LeaseTTL is zero: how long an agent waits for a coordinator that
// went silent before it ends the snapshot on its own.
const DefaultLeaseTTL = 10 * time.Second

// clustered reports whether the VNE runs on agents (Options.Agents).
func (e *Env) clustered() bool { return len(e.opts.Agents) > 0 }

// hypFor returns the hypervisor that runs VM i: its host's agent's in
// cluster mode, Options.Hypervisor otherwise.
func (e *Env) hypFor(i int) hv.Hypervisor {
	if e.hyps != nil {
		return e.hyps[e.Layout.VMs[i].Host]
	}
	return e.opts.Hypervisor
}

// agentHypervisors asks every agent who it is (Hello) and returns their
// hypervisors; they must all be the same hypervisor and image format.
func agentHypervisors(ctx context.Context, agents []*remote.Host) ([]hv.Hypervisor, error) {
	hyps := make([]hv.Hypervisor, len(agents))
	for i, a := range agents {
		h, err := a.Hypervisor(ctx)
		if err != nil {
			return nil, err
		}
		if in, first := h.Info(), hyps[0]; first != nil && (in.Name != first.Info().Name || in.ImageFormat != first.Info().ImageFormat) {
			return nil, fmt.Errorf("agent %s runs %s (image format %s), agent %s %s (%s): one VNE needs one hypervisor",
				a.Name(), in.Name, in.ImageFormat, agents[0].Name(), first.Info().Name, first.Info().ImageFormat)
		}
		hyps[i] = h
	}
	return hyps, nil
}

// checkAgents checks that Options.Agents are the layout's hosts, in order,
// and that every VM is one an agent can run.
func (e *Env) checkAgents() error {
	if len(e.opts.Agents) != len(e.Layout.Hosts) {
		return fmt.Errorf("cluster: %d agents for %d hosts", len(e.opts.Agents), len(e.Layout.Hosts))
	}
	for i, a := range e.opts.Agents {
		if a.Name() != e.Layout.Hosts[i].Name {
			return fmt.Errorf("cluster: agent %d is of host %s, hosts[%d] is %s", i, a.Name(), i, e.Layout.Hosts[i].Name)
		}
	}
	for _, vm := range e.Layout.VMs {
		if vm.Disk != "" {
			return fmt.Errorf("cluster: vm %s: disk guests do not run on agents yet", vm.Name)
		}
	}
	return nil
}

// connectAgents checks the agents and takes their hypervisors; the first
// one's labels the manifest.
func (e *Env) connectAgents(ctx context.Context) error {
	if err := e.checkAgents(); err != nil {
		return err
	}
	hyps, err := agentHypervisors(ctx, e.opts.Agents)
	if err != nil {
		return err
	}
	e.hyps, e.opts.Hypervisor = hyps, hyps[0]
	return nil
}

// startClusterNet sets up every agent's switch with the ports of its VMs
// and its tunnel at its host's address, joins every pair of switches with
// a tunnel over the network between the agents, and puts every port at
// epoch ep.
func (e *Env) startClusterNet(ctx context.Context, ep core.Epoch) error {
	agents := e.opts.Agents
	addrs := make([]string, len(agents))
	for i, a := range agents {
		a.SetEpoch(ep)
		var ports []remote.Port
		for j, vm := range e.Layout.VMs {
			if vm.Host == i {
				ports = append(ports, remote.Port{VM: core.VMID(j), Name: vm.Name})
			}
		}
		addr, err := a.Setup(ctx, uint16(i+1), core.VNsnap, tunnelAddr(e.Layout.Hosts[i].Address), ports)
		if err != nil {
			return err
		}
		if addr == "" {
			return fmt.Errorf("agent %s: switch has no tunnel (hosts[%d].address)", a.Name(), i)
		}
		addrs[i] = addr
		e.ctl = append(e.ctl, a.Controller())
	}
	for i, a := range agents {
		for j := range agents {
			if i != j {
				if err := a.AddTunnel(ctx, e.Layout.Hosts[j].Name, addrs[j]); err != nil {
					return err
				}
			}
		}
	}
	if ep > 0 {
		for j, vm := range e.Layout.VMs {
			if err := e.ctl[vm.Host].SetEpoch(core.VMID(j), ep); err != nil {
				return err
			}
		}
	}
	e.epoch = ep
	return nil
}

// clusterEpoch returns the snapshot's epoch in cluster mode: at least
// epoch, and above every epoch an agent has seen (an aborted snapshot's,
// whose colour an agent's expired lease may have put on its ports).
func (e *Env) clusterEpoch(ctx context.Context, epoch core.Epoch) (core.Epoch, error) {
	for _, a := range e.opts.Agents {
		seen, err := a.Epoch(ctx)
		if err != nil {
			return 0, fmt.Errorf("agent %s: %w", a.Name(), err)
		}
		epoch = max(epoch, seen+1)
	}
	for _, a := range e.opts.Agents {
		a.SetEpoch(epoch) // every call of the snapshot carries it
	}
	return epoch, nil
}

// beginCluster takes every agent's lease for snapshot name at epoch; if one
// cannot be taken the others are ended.
func (e *Env) beginCluster(ctx context.Context, name string, epoch core.Epoch) ([]*remote.Lease, error) {
	ttl := e.opts.LeaseTTL
	if ttl == 0 {
		ttl = DefaultLeaseTTL
	}
	var leases []*remote.Lease
	for _, a := range e.opts.Agents {
		l, err := a.Begin(ctx, name, epoch, ttl)
		if err != nil {
			endCluster(leases, false)
			return nil, err
		}
		leases = append(leases, l)
	}
	return leases, nil
}

// endCluster ends every lease: commit marks the agents' snapshot
// directories whole (frame logs, images), otherwise they are discarded. An
// agent that died cannot be reached: its lease ran out, or it cleans up
// when it starts again.
func endCluster(leases []*remote.Lease, commit bool) error {
	var errs []error
	for _, l := range leases {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		errs = append(errs, l.End(ctx, commit))
		cancel()
	}
	return errors.Join(errs...)
}

// flushCluster writes every agent's frame log into its snapshot directory.
func (e *Env) flushCluster(ctx context.Context, name string) error {
	for _, a := range e.opts.Agents {
		if err := a.Flush(ctx, name, 0); err != nil {
			return err
		}
	}
	return nil
}

// placeOn moves l onto the hosts of v (restore elsewhere): l's hosts
// become v's, and every VM goes to the host v names for the VM of its name.
func placeOn(l *Layout, v *vne.VNE) error {
	if v == nil {
		return errors.New("cluster: restore onto agents needs the VNE file that places the VMs (Options.VNE)")
	}
	idx := map[string]int{}
	l.Hosts = nil
	for i, h := range v.Hosts {
		idx[h.Name] = i
		l.Hosts = append(l.Hosts, HostLayout{Name: h.Name, Address: h.Address, RAMBudget: h.RAMBudget})
	}
	host := map[string]int{}
	for _, vm := range v.VMs {
		host[vm.Name] = idx[vm.Host]
	}
	for i := range l.VMs {
		h, ok := host[l.VMs[i].Name]
		if !ok {
			return fmt.Errorf("cluster: %s has no vm %s of the snapshot", v.File, l.VMs[i].Name)
		}
		l.VMs[i].Host = h
	}
	return nil
}
