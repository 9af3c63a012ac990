package agent

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/vnsnap/vnsnap/cluster/clusterpb"
	"github.com/vnsnap/vnsnap/realbackend/hv"
)

// saveRun is one VM's save in progress.
type saveRun struct {
	snapshot string
	cancel   context.CancelFunc
	done     chan struct{} // closed when the save has returned
	release  chan struct{} // closed by ReleaseSave
	once     sync.Once
}

// SaveVM saves a VM into the lease's snapshot directory as NAME.img,
// streaming each live pass, the snapshot point and the end (with the
// image's SHA-256). The save runs under the lease: when the lease ends or
// the stream breaks, the save is cancelled, and a VM it paused stays
// paused (hv contract) until a ResumeVM or the lease's expiry resumes it. A
// retry of a save that completed gets its Saved event again; one of a save
// in progress waits for it.
func (a *Agent) SaveVM(r *clusterpb.SaveVMRequest, stream clusterpb.Agent_SaveVMServer) error {
	ran := false
	var mu sync.Mutex // Send is not safe for concurrent use
	send := func(ev *clusterpb.SaveEvent) {
		mu.Lock()
		defer mu.Unlock()
		if err := stream.Send(ev); err != nil {
			a.log.Debug("save event not sent", "vm", r.Vm, "err", err)
		}
	}
	rep, err := a.calls.do(r.GetCall(), "SaveVM", func() (proto.Message, error) {
		ran = true
		return a.save(stream.Context(), r, send)
	})
	if err != nil {
		return err
	}
	if !ran {
		send(rep.(*clusterpb.SaveEvent))
	}
	return nil
}

func (a *Agent) save(sctx context.Context, r *clusterpb.SaveVMRequest, send func(*clusterpb.SaveEvent)) (proto.Message, error) {
	if err := checkSnapshot("snapshot", r.Snapshot); err != nil {
		return nil, err
	}
	v, err := a.running(r.Vm)
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	l, err := a.leaseLocked(r.Snapshot)
	if err == nil && v.save != nil {
		err = status.Errorf(codes.FailedPrecondition, "vm %d (%s): a save runs already", v.id, v.name)
	}
	if err == nil && r.ColourEpoch != 0 && a.sw == nil {
		err = status.Errorf(codes.FailedPrecondition, "vm %d (%s): colour_epoch without a switch", v.id, v.name)
	}
	if err != nil {
		a.mu.Unlock()
		return nil, err
	}
	ctx, cancel := context.WithCancel(l.ctx)
	stopAfter := context.AfterFunc(sctx, cancel)
	s := &saveRun{snapshot: r.Snapshot, cancel: cancel, done: make(chan struct{}), release: make(chan struct{})}
	v.save = s
	sw := a.sw
	a.mu.Unlock()
	defer func() {
		stopAfter()
		cancel()
		a.mu.Lock()
		v.save = nil
		a.mu.Unlock()
		close(s.done)
	}()

	atPoint := func(ctx context.Context) error {
		var ep uint32
		if r.ColourEpoch != 0 {
			if err := setEpoch(sw, v.id, r.ColourEpoch); err != nil {
				return fmt.Errorf("colour at snapshot point: %w", err)
			}
			ep = r.ColourEpoch
		}
		send(&clusterpb.SaveEvent{Event: &clusterpb.SaveEvent_SnapshotPoint{SnapshotPoint: &clusterpb.SnapshotPoint{Epoch: ep, AtUnixNano: time.Now().UnixNano()}}})
		if !r.Hold {
			return nil
		}
		select {
		case <-s.release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	opts := hv.SaveOptions{Live: r.Live}
	if r.Live {
		opts.AtSnapshotPoint = atPoint
		opts.OnPass = func(n int, at time.Time) {
			send(&clusterpb.SaveEvent{Event: &clusterpb.SaveEvent_Pass{Pass: &clusterpb.Pass{N: int32(n), AtUnixNano: at.UnixNano()}}})
		}
	} else {
		// The snapshot point of a stop-and-copy save is at its start.
		if err := v.m.Pause(ctx); err != nil {
			return nil, hvError("pause "+v.name, err)
		}
		if err := atPoint(ctx); err != nil {
			return nil, hvError("save "+v.name, err)
		}
	}

	dir := a.snapshotDir(r.Snapshot)
	part := filepath.Join(dir, v.name+partExt)
	f, err := os.OpenFile(part, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, hvError("image", err)
	}
	h := sha256.New()
	bw := bufio.NewWriterSize(io.MultiWriter(f, h), 1<<20)
	st, err := v.m.Save(ctx, bw, opts)
	if err == nil {
		err = bw.Flush()
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	sum := hex.EncodeToString(h.Sum(nil))
	if err == nil {
		err = a.finishImage(part, filepath.Join(dir, v.name), sum, st.Bytes)
	}
	if err != nil {
		os.Remove(part)
		return nil, hvError("save "+v.name, err)
	}
	ev := &clusterpb.SaveEvent{Event: &clusterpb.SaveEvent_Saved{Saved: &clusterpb.Saved{
		Bytes: st.Bytes, Passes: int32(st.Passes), MemoryCopied: st.MemoryCopied,
		DowntimeNanos: int64(st.Downtime), TotalNanos: int64(st.Total), Sha256: sum,
	}}}
	send(ev)
	return ev, nil
}

// finishImage records a written image's checksum (stem.img.sha256) and
// renames stem.img.part to stem.img: an image is there only when whole, and
// durably so once finishImage returns.
func (a *Agent) finishImage(part, stem, sum string, size int64) error {
	fi, err := os.Stat(part)
	if err != nil {
		return err
	}
	if size > 0 && fi.Size() != size {
		return fmt.Errorf("image %s: %d bytes written, the hypervisor counted %d", part, fi.Size(), size)
	}
	if err := a.writeAtomic(stem+sumExt, func(w io.Writer) error {
		_, err := fmt.Fprintf(w, "%s %d\n", sum, fi.Size())
		return err
	}); err != nil {
		return err
	}
	if err := os.Rename(part, stem+imgExt); err != nil {
		return err
	}
	return a.syncDir(filepath.Dir(stem))
}

// ReleaseSave lets a save held at its snapshot point write the rest.
func (a *Agent) ReleaseSave(ctx context.Context, r *clusterpb.VMRequest) (*clusterpb.Ack, error) {
	return ack(a.calls.do(r.GetCall(), "ReleaseSave", func() (proto.Message, error) {
		s, err := a.saveOf(r.Vm)
		if err != nil {
			return nil, err
		}
		s.once.Do(func() { close(s.release) })
		return &clusterpb.Ack{}, nil
	}))
}

// CancelSave cancels a VM's save and waits until it has returned; a VM it
// paused stays paused. Cancelling a VM without a save changes nothing.
func (a *Agent) CancelSave(ctx context.Context, r *clusterpb.VMRequest) (*clusterpb.Ack, error) {
	return ack(a.calls.do(r.GetCall(), "CancelSave", func() (proto.Message, error) {
		s, err := a.saveOf(r.Vm)
		if status.Code(err) == codes.FailedPrecondition {
			return &clusterpb.Ack{}, nil
		}
		if err != nil {
			return nil, err
		}
		s.cancel()
		select {
		case <-s.done:
			return &clusterpb.Ack{}, nil
		case <-ctx.Done():
			return nil, hvError("cancel save", ctx.Err())
		}
	}))
}

func (a *Agent) saveOf(vm int32) (*saveRun, error) {
	v, err := a.running(vm)
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if v.save == nil {
		return nil, status.Errorf(codes.FailedPrecondition, "vm %d (%s): no save runs", v.id, v.name)
	}
	return v.save, nil
}
