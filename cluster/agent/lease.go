package agent

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/vnsnap/vnsnap/cluster/clusterpb"
)

// lease is the coordinator's hold on the host during one snapshot. While
// it lasts the agent leaves its VMs as the coordinator puts them (paused at
// their snapshot points, say); when it runs out the agent ends the snapshot
// on its own (expire).
type lease struct {
	snapshot string
	epoch    uint32 // the snapshot's epoch: the Call epoch of BeginSnapshot
	deadline time.Time
	timer    Timer
	ctx      context.Context // ends with the lease; saves run under it
	cancel   context.CancelFunc
}

// leaseLocked returns the lease of snapshot snap; the caller holds a.mu.
func (a *Agent) leaseLocked(snap string) (*lease, error) {
	if a.lease == nil || a.lease.snapshot != snap {
		return nil, status.Errorf(codes.FailedPrecondition, "host %s holds no lease for snapshot %s", a.cfg.Host, snap)
	}
	return a.lease, nil
}

// BeginSnapshot takes the host's lease for a snapshot and creates the
// snapshot's directory. The call's epoch is the snapshot's epoch: the one
// every VM runs on if the lease runs out.
func (a *Agent) BeginSnapshot(ctx context.Context, r *clusterpb.LeaseRequest) (*clusterpb.LeaseReply, error) {
	rep, err := a.calls.do(r.GetCall(), "BeginSnapshot", func() (proto.Message, error) {
		if err := checkLease(r); err != nil {
			return nil, err
		}
		a.mu.Lock()
		defer a.mu.Unlock()
		if a.lease != nil {
			return nil, status.Errorf(codes.FailedPrecondition, "host %s is in snapshot %s", a.cfg.Host, a.lease.snapshot)
		}
		dir := a.snapshotDir(r.Snapshot)
		st, err := statSnapshot(dir, r.Snapshot)
		if err != nil {
			return nil, hvError("snapshot directory", err)
		}
		switch st {
		case snapComplete:
			return nil, status.Errorf(codes.AlreadyExists, "snapshot %s exists on host %s", r.Snapshot, a.cfg.Host)
		case snapForeign:
			return nil, status.Errorf(codes.FailedPrecondition, "snapshot %s: host %s has a directory of that name the agent did not make (%s): remove it or take another name",
				r.Snapshot, a.cfg.Host, dir)
		case snapPartial: // an aborted attempt's debris
			if err := os.RemoveAll(dir); err != nil {
				return nil, hvError("snapshot directory", err)
			}
		}
		if err := os.Mkdir(dir, 0o700); err != nil {
			// Made by someone else since statSnapshot looked, say: not
			// the agent's to remove.
			return nil, hvError("snapshot directory", err)
		}
		if err := a.markSnapshotDir(dir, r.Snapshot); err != nil {
			os.RemoveAll(dir) // the agent's: it made dir just now
			return nil, hvError("snapshot directory", err)
		}
		l := &lease{snapshot: r.Snapshot, epoch: r.Call.Epoch}
		l.ctx, l.cancel = context.WithCancel(a.ctx)
		a.lease = l
		return a.armLocked(l, r.TtlMillis), nil
	})
	if err != nil {
		return nil, err
	}
	return rep.(*clusterpb.LeaseReply), nil
}

// markSnapshotDir writes the owner marker into snapshot snap's directory
// dir, which the agent has just made, durably: from then on Cleanup may
// remove it (it is the agent's) until COMPLETE is in it. The marker is
// written in place, so a crash on the way leaves what statSnapshot still
// recognises as the agent's: an empty directory, or one holding a beginning
// of the marker alone.
func (a *Agent) markSnapshotDir(dir, snap string) error {
	f, err := os.OpenFile(filepath.Join(dir, ownerMarker), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	_, err = io.WriteString(f, ownerLine(snap))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := a.syncDir(dir); err != nil {
		return err
	}
	return a.syncDir(filepath.Dir(dir))
}

// armLocked (re)sets l's deadline to ttl from now.
func (a *Agent) armLocked(l *lease, ttlMillis int64) *clusterpb.LeaseReply {
	ttl := time.Duration(ttlMillis) * time.Millisecond
	l.deadline = a.clock.Now().Add(ttl)
	if l.timer != nil {
		l.timer.Stop()
	}
	l.timer = a.clock.AfterFunc(ttl, func() { a.expire(l) })
	return &clusterpb.LeaseReply{ExpiresUnixNano: l.deadline.UnixNano()}
}

// RenewLease extends the lease to ttl from now.
func (a *Agent) RenewLease(ctx context.Context, r *clusterpb.LeaseRequest) (*clusterpb.LeaseReply, error) {
	rep, err := a.calls.do(r.GetCall(), "RenewLease", func() (proto.Message, error) {
		if err := checkLease(r); err != nil {
			return nil, err
		}
		a.mu.Lock()
		defer a.mu.Unlock()
		l, err := a.leaseLocked(r.Snapshot)
		if err != nil {
			return nil, err
		}
		return a.armLocked(l, r.TtlMillis), nil
	})
	if err != nil {
		return nil, err
	}
	return rep.(*clusterpb.LeaseReply), nil
}

// EndSnapshot ends the lease: commit marks the snapshot's directory whole
// (every save must have ended), otherwise the saves are cancelled and the
// directory removed. The coordinator resumes the VMs itself.
func (a *Agent) EndSnapshot(ctx context.Context, r *clusterpb.EndSnapshotRequest) (*clusterpb.Ack, error) {
	return ack(a.calls.do(r.GetCall(), "EndSnapshot", func() (proto.Message, error) {
		if err := checkSnapshot("snapshot", r.Snapshot); err != nil {
			return nil, err
		}
		a.mu.Lock()
		l, err := a.leaseLocked(r.Snapshot)
		if err != nil {
			a.mu.Unlock()
			return nil, err
		}
		if r.Commit {
			defer a.mu.Unlock()
			if n := len(a.savesLocked(l.snapshot)); n > 0 {
				return nil, status.Errorf(codes.FailedPrecondition, "snapshot %s: %d saves still run", l.snapshot, n)
			}
			dir := a.snapshotDir(l.snapshot)
			if err := a.writeAtomic(filepath.Join(dir, completeMarker), func(w io.Writer) error { return nil }); err != nil {
				return nil, hvError("commit", err)
			}
			l.timer.Stop()
			l.cancel()
			a.lease = nil
			return &clusterpb.Ack{}, nil
		}
		a.lease = nil
		l.timer.Stop()
		a.mu.Unlock()
		a.discard(l)
		return &clusterpb.Ack{}, nil
	}))
}

// savesLocked returns the saves in progress for snapshot snap.
func (a *Agent) savesLocked(snap string) []*saveRun {
	var ss []*saveRun
	for _, v := range a.sortedVMsLocked() {
		if v.save != nil && v.save.snapshot == snap {
			ss = append(ss, v.save)
		}
	}
	return ss
}

// discard cancels l's saves, waits for them and removes its directory.
func (a *Agent) discard(l *lease) {
	l.cancel()
	a.mu.Lock()
	ss := a.savesLocked(l.snapshot)
	a.mu.Unlock()
	for _, s := range ss {
		<-s.done
	}
	if err := os.RemoveAll(a.snapshotDir(l.snapshot)); err != nil {
		a.log.Warn("remove discarded snapshot", "snapshot", l.snapshot, "err", err)
	}
}

// ErrLeaseExpired is what Config.OnLeaseExpired is told when a lease ran
// out and the agent ended the snapshot itself.
var ErrLeaseExpired = errors.New("agent: lease expired")

// expire ends a lease that ran out: the coordinator is dead or cut off.
// The agent cancels the snapshot's saves (a VM they paused stays paused),
// removes the partial images, then puts every VM on the snapshot's epoch
// (the epoch an abort leaves every VM on, core/doc.go) and resumes it: no
// VM is left paused, and a later snapshot starts from one epoch. The
// snapshot's epoch is over: no new call of it is accepted (calls.fence).
func (a *Agent) expire(l *lease) {
	a.mu.Lock()
	if a.lease != l {
		a.mu.Unlock()
		return // renewed into a new timer's care, or ended
	}
	if now := a.clock.Now(); now.Before(l.deadline) {
		// A renewal raced with this timer: its own timer is armed.
		a.mu.Unlock()
		return
	}
	a.lease = nil
	a.mu.Unlock()
	// Fenced first: a call of the dead coordinator that arrives from now
	// on is refused, and a PauseVM already past the fence undoes itself
	// (PauseVM), so resumeAll below leaves no VM paused.
	a.calls.fence(l.epoch)
	a.discard(l)
	err := a.resumeAll(l.epoch)
	a.log.Warn("lease expired: snapshot discarded, VMs resumed", "snapshot", l.snapshot, "epoch", l.epoch, "err", err)
	if f := a.cfg.OnLeaseExpired; f != nil {
		if err != nil {
			err = errors.Join(ErrLeaseExpired, err)
		} else {
			err = ErrLeaseExpired
		}
		f(l.snapshot, err)
	}
}

// resumeAll puts every VM's port on epoch e (unless it is there) and
// resumes every VM, trying all of them whatever fails.
func (a *Agent) resumeAll(e uint32) error {
	a.mu.Lock()
	sw := a.sw
	vms := a.sortedVMsLocked()
	a.mu.Unlock()
	var errs []error
	for _, v := range vms {
		if v.m == nil {
			continue
		}
		if sw != nil {
			if err := setEpoch(sw, v.id, e); err != nil {
				errs = append(errs, hvError("set epoch of "+v.name, err))
			}
		}
		if err := v.m.Resume(a.ctx); err != nil {
			errs = append(errs, hvError("resume "+v.name, err))
		}
	}
	return errors.Join(errs...)
}
