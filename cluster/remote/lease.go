package remote

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/vnsnap/vnsnap/cluster/clusterpb"
	"github.com/vnsnap/vnsnap/core"
)

// Lease is the coordinator's hold on a host during one snapshot: Begin
// takes it and renews it every third of its TTL until End. If the
// coordinator dies, the renewals stop and the agent ends the snapshot on
// its own when the TTL runs out.
type Lease struct {
	h        *Host
	snapshot string
	ttl      time.Duration
	stop     chan struct{}
	once     sync.Once
	done     chan struct{}
	mu       sync.Mutex
	err      error // the first renewal failure
}

// Begin takes the host's lease for snapshot snap of epoch e (the host's
// calls carry e from now on) with the given TTL.
func (h *Host) Begin(ctx context.Context, snap string, e core.Epoch, ttl time.Duration) (*Lease, error) {
	h.SetEpoch(e)
	req := &clusterpb.LeaseRequest{Snapshot: snap, TtlMillis: ttl.Milliseconds()}
	err := h.do(ctx, "begin snapshot", func(c *clusterpb.Call) error {
		req.Call = c
		_, err := h.c.BeginSnapshot(ctx, req)
		return err
	})
	if err != nil {
		return nil, err
	}
	l := &Lease{h: h, snapshot: snap, ttl: ttl, stop: make(chan struct{}), done: make(chan struct{})}
	h.mu.Lock()
	h.lease = l
	h.mu.Unlock()
	go l.renew()
	return l, nil
}

// renew renews the lease every third of its TTL until stopped.
func (l *Lease) renew() {
	defer close(l.done)
	t := time.NewTicker(l.ttl / 3)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), l.ttl)
		err := l.h.do(ctx, "renew lease", func(c *clusterpb.Call) error {
			_, err := l.h.c.RenewLease(ctx, &clusterpb.LeaseRequest{Call: c, Snapshot: l.snapshot, TtlMillis: l.ttl.Milliseconds()})
			return err
		})
		cancel()
		if err != nil {
			l.mu.Lock()
			if l.err == nil {
				l.err = err
			}
			l.mu.Unlock()
		}
	}
}

// Err returns the first renewal failure: the lease may have run out.
func (l *Lease) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

func (l *Lease) stopRenew() {
	l.once.Do(func() { close(l.stop) })
	<-l.done
}

// End stops the renewals and ends the snapshot on the host: commit marks
// its directory whole, otherwise the agent discards it.
func (l *Lease) End(ctx context.Context, commit bool) error {
	l.stopRenew()
	l.h.mu.Lock()
	if l.h.lease == l {
		l.h.lease = nil
	}
	l.h.mu.Unlock()
	err := l.h.do(ctx, "end snapshot", func(c *clusterpb.Call) error {
		_, err := l.h.c.EndSnapshot(ctx, &clusterpb.EndSnapshotRequest{Call: c, Snapshot: l.snapshot, Commit: commit})
		return err
	})
	if err != nil {
		return fmt.Errorf("snapshot %s: %w", l.snapshot, err)
	}
	return nil
}

// currentSnapshot returns the snapshot of the host's lease.
func (h *Host) currentSnapshot() (string, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.lease == nil {
		return "", fmt.Errorf("agent %s: save outside a snapshot (Begin first)", h.name)
	}
	return h.lease.snapshot, nil
}
