package remote

import (
	"context"

	"github.com/vnsnap/vnsnap/cluster/clusterpb"
	"github.com/vnsnap/vnsnap/core"
)

// Flush writes the host's frame log, and for inTransit > 0 the in-transit
// log of that epoch, into the directory of snapshot snap (whose lease the
// coordinator holds) on the agent.
func (h *Host) Flush(ctx context.Context, snap string, inTransit core.Epoch) error {
	return h.do(ctx, "flush", func(c *clusterpb.Call) error {
		_, err := h.c.Flush(ctx, &clusterpb.FlushRequest{Call: c, Snapshot: snap, InTransitEpoch: uint32(inTransit)})
		return err
	})
}

// Epoch asks the agent for the highest coordinator epoch it has seen: a
// new snapshot must take a later one.
func (h *Host) Epoch(ctx context.Context) (core.Epoch, error) {
	rep, err := h.c.Hello(ctx, &clusterpb.HelloRequest{})
	if err != nil {
		return 0, err
	}
	return core.Epoch(rep.Epoch), nil
}
