// Package remote is the coordinator's side of cluster mode: a Host is one
// agent reached over mutual TLS, and it offers what a snapshot driver needs
// from a host through the same ports as a local one: hv.Hypervisor and
// hv.Machine for its VMs (Hypervisor), vnet.Controller for its switch
// (Controller). Calls are retried with the same request ID when the
// connection fails, so the agent acts once (cluster/doc.go).
package remote

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/vnsnap/vnsnap/cluster"
	"github.com/vnsnap/vnsnap/cluster/certs"
	"github.com/vnsnap/vnsnap/cluster/clusterpb"
	"github.com/vnsnap/vnsnap/core"
	"github.com/vnsnap/vnsnap/vnet"
)

// Retries is how many times a call is retried after a transport failure
// (Unavailable) before its error is returned.
const Retries = 5

// Host is one agent as the coordinator sees it.
type Host struct {
	name  string
	cc    *grpc.ClientConn
	c     clusterpb.AgentClient
	id    string // this coordinator's request ID prefix
	seq   atomic.Uint64
	epoch atomic.Uint32

	mu    sync.Mutex
	vms   map[string]int32 // VM name -> id, from Setup
	lease *Lease
}

// Connect returns the Host of the agent named host serving at addr; the
// connection is made at the first call.
func Connect(addr, host string, id certs.Identity) (*Host, error) {
	cc, c, err := cluster.Dial(addr, host, id)
	if err != nil {
		return nil, err
	}
	b := make([]byte, 6)
	rand.Read(b)
	return &Host{name: host, cc: cc, c: c, id: hex.EncodeToString(b), vms: map[string]int32{}}, nil
}

// Close ends the lease's renewals and the connection.
func (h *Host) Close() error {
	h.mu.Lock()
	if l := h.lease; l != nil {
		l.stopRenew()
	}
	h.mu.Unlock()
	return h.cc.Close()
}

// Name is the agent's host name.
func (h *Host) Name() string { return h.name }

// Client is the raw service client.
func (h *Host) Client() clusterpb.AgentClient { return h.c }

// SetEpoch sets the coordinator epoch the host's next calls carry (the
// current snapshot's epoch); it never goes back.
func (h *Host) SetEpoch(e core.Epoch) {
	for {
		cur := h.epoch.Load()
		if uint32(e) <= cur || h.epoch.CompareAndSwap(cur, uint32(e)) {
			return
		}
	}
}

// newCall makes a Call with a fresh request ID at the current epoch.
func (h *Host) newCall() *clusterpb.Call {
	return &clusterpb.Call{RequestId: fmt.Sprintf("%s-%d", h.id, h.seq.Add(1)), Epoch: h.epoch.Load()}
}

// do runs f with one Call, retrying with the same Call after a transport
// failure: the agent answers a retry of a call it carried out without
// acting again.
func (h *Host) do(ctx context.Context, what string, f func(*clusterpb.Call) error) error {
	call := h.newCall()
	var err error
	for attempt := 0; ; attempt++ {
		err = f(call)
		if status.Code(err) != codes.Unavailable || attempt == Retries || ctx.Err() != nil {
			break
		}
		select {
		case <-time.After(time.Duration(50<<attempt) * time.Millisecond):
		case <-ctx.Done():
		}
	}
	if err != nil {
		return fmt.Errorf("agent %s: %s: %w", h.name, what, err)
	}
	return nil
}

// Port is one VM of the host's switch.
type Port struct {
	VM   core.VMID
	Name string
}

// Setup creates the host's switch with a port per VM; it returns the
// switch's tunnel address (empty without tunnelAddr).
func (h *Host) Setup(ctx context.Context, switchID uint16, alg core.Algorithm, tunnelAddr string, ports []Port) (string, error) {
	req := &clusterpb.SetupHostRequest{SwitchId: uint32(switchID), Algorithm: alg.String(), TunnelAddr: tunnelAddr}
	for _, p := range ports {
		req.Ports = append(req.Ports, &clusterpb.PortSpec{Vm: int32(p.VM), Name: p.Name})
	}
	var rep *clusterpb.SetupHostReply
	err := h.do(ctx, "setup", func(c *clusterpb.Call) (err error) {
		req.Call = c
		rep, err = h.c.SetupHost(ctx, req)
		return err
	})
	if err != nil {
		return "", err
	}
	h.mu.Lock()
	for _, p := range ports {
		h.vms[p.Name] = int32(p.VM)
	}
	h.mu.Unlock()
	return rep.TunnelAddr, nil
}

// AddTunnel joins the host's switch to the switch of host peer at addr.
func (h *Host) AddTunnel(ctx context.Context, peer, addr string) error {
	return h.do(ctx, "add tunnel", func(c *clusterpb.Call) error {
		_, err := h.c.AddTunnels(ctx, &clusterpb.AddTunnelsRequest{Call: c, Tunnels: []*clusterpb.Tunnel{{Name: peer, Addr: addr}}})
		return err
	})
}

// Controller returns the host's switch as a vnet.Controller.
func (h *Host) Controller() vnet.Controller { return controller{h} }

type controller struct{ h *Host }

var _ vnet.Controller = controller{}

// SetEpoch flips vm's colour on the host's switch.
func (c controller) SetEpoch(vm core.VMID, e core.Epoch) error {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	return c.h.do(ctx, "set epoch", func(call *clusterpb.Call) error {
		_, err := c.h.c.SetEpoch(ctx, &clusterpb.SetEpochRequest{Call: call, Vm: int32(vm), Colour: uint32(e)})
		return err
	})
}

// SetAlgorithm changes the host's switch's algorithm.
func (c controller) SetAlgorithm(a core.Algorithm) error {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	return c.h.do(ctx, "set algorithm", func(call *clusterpb.Call) error {
		_, err := c.h.c.SetAlgorithm(ctx, &clusterpb.SetAlgorithmRequest{Call: call, Algorithm: a.String()})
		return err
	})
}

// callTimeout bounds the calls of the ports without a context
// (vnet.Controller, hv.Machine.Kill).
const callTimeout = time.Minute
