package realbackend

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/vnsnap/vnsnap/core"
	"github.com/vnsnap/vnsnap/realbackend/hv"
	"github.com/vnsnap/vnsnap/store"
	"github.com/vnsnap/vnsnap/vne"
	"github.com/vnsnap/vnsnap/vnet"
)

func mustJSON(v any) []byte {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		panic(fmt.Sprintf("realbackend: marshal %T: %v", v, err))
	}
	return b
}

func readFile(p string) ([]byte, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", p, err)
	}
	return b, nil
}

// readExtra reads a whole extra stream of a snapshot, refusing one longer
// than max bytes (by its recorded length and by what it yields).
func readExtra(s *store.Snapshot, name string, max int64) ([]byte, error) {
	r, err := s.ExtraReader(name)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	if r.Len() > max {
		return nil, fmt.Errorf("%s: %d bytes is more than the limit of %d", name, r.Len(), max)
	}
	var b bytes.Buffer
	if _, err := b.ReadFrom(io.LimitReader(r, max+1)); err != nil {
		return nil, err
	}
	if int64(b.Len()) > max {
		return nil, fmt.Errorf("%s: more than the limit of %d bytes", name, max)
	}
	return b.Bytes(), nil
}

// Limits of the extras Restore reads.
const (
	maxInTransit = 1 << 30
)

func fileExists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

// RestoreReport says what a restore did.
type RestoreReport struct {
	Epoch core.Epoch
	// Replayed is the number of in-transit frames queued for replay
	// (vnsnap-log).
	Replayed int
}

// errReader remembers the first error its reader returned, so that a
// damaged chunk is reported as such rather than as QEMU's load failure at
// the truncated stream.
type errReader struct {
	r   io.Reader
	mu  sync.Mutex
	err error
}

func (e *errReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF {
		e.mu.Lock()
		if e.err == nil {
			e.err = err
		}
		e.mu.Unlock()
	}
	return n, err
}

func (e *errReader) Err() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.err
}

// Restore rebuilds the VNE stored as snapshot name in the store at root:
// switches, tunnels and ports at the snapshot's epoch, every VM started with
// `-incoming defer` and loaded from the store, the in-transit log replayed
// into the ports (vnsnap-log), then every VM resumed at once. The returned
// Env runs the restored VNE. On error nothing is left running; an error
// from damaged data names the VM (or extra), stream and chunk
// (store.CorruptError). o.QEMU must have the snapshot's machine type.
func Restore(ctx context.Context, root, name string, o Options) (*Env, *RestoreReport, error) {
	e, rep, err := restore(ctx, root, name, o)
	if err != nil {
		return nil, nil, fmt.Errorf("restore %s: %w", name, err)
	}
	return e, rep, nil
}

func restore(ctx context.Context, root, name string, o Options) (*Env, *RestoreReport, error) {
	s, err := store.Open(root, name)
	if err != nil {
		return nil, nil, err
	}
	defer s.Close()
	m := s.Manifest()
	lb, err := readExtra(s, "layout.json", MaxLayoutSize)
	if err != nil {
		return nil, nil, err
	}
	// The store proves the layout intact, not who wrote it: check it with
	// the rules of a VNE file, then confine it (doc.go).
	sl, err := DecodeLayout(lb)
	if err != nil {
		return nil, nil, err
	}
	var hyps []hv.Hypervisor
	if len(o.Agents) > 0 {
		if hyps, err = agentHypervisors(ctx, o.Agents); err != nil {
			return nil, nil, err
		}
		o.Hypervisor = hyps[0]
	}
	if o.Hypervisor == nil {
		return nil, nil, errors.New("restore needs a hypervisor (Options.Hypervisor)")
	}
	in := o.Hypervisor.Info()
	if err := checkHypervisor(name, m.Labels, sl.VMs, in); err != nil {
		return nil, nil, err
	}
	if mt := m.Labels["machine"]; mt != "" && in.Machine != mt {
		return nil, nil, fmt.Errorf("snapshot needs machine type %s, this %s pins %s", mt, in.Name, in.Machine)
	}
	tl, err := trustLayout(sl, o)
	if err != nil {
		return nil, nil, err
	}
	l := *tl
	tb, err := readExtra(s, "intransit", maxInTransit)
	if err != nil {
		return nil, nil, err
	}
	frames, err := vnet.ReadInTransit(bytes.NewReader(tb))
	if err != nil {
		return nil, nil, fmt.Errorf("in-transit log: %w", err)
	}
	src, _ := readExtra(s, "vne.yaml", vne.MaxFileSize) // optional, for people
	if len(o.Agents) > 0 {
		if err := placeOn(&l, o.VNE); err != nil {
			return nil, nil, err
		}
	}
	e := &Env{Layout: l, Source: src, opts: o, hyps: hyps}
	e.opts.OnRestoreProgress = nil
	if e.clustered() {
		if err := e.checkAgents(); err != nil {
			return nil, nil, err
		}
	}
	tr := restoreTracker(o.OnRestoreProgress, s, l)
	defer tr.close()
	if tr != nil {
		stop := make(chan struct{})
		defer close(stop) // before tr.close: deferred calls run last first
		go tr.run(stop)
	}
	epoch := core.Epoch(m.Epoch)
	ok := false
	defer func() {
		if !ok {
			e.Close()
		}
	}()
	for i := range e.Layout.VMs {
		vm := &e.Layout.VMs[i]
		if vm.Disk == "" {
			continue
		}
		// Run on an overlay of the image frozen at the snapshot point, so
		// the snapshot can be restored again.
		// A fresh name: an earlier restore's overlay may be the image a
		// later snapshot froze.
		di, err := diskImages(o.Hypervisor, vm.Name)
		if err != nil {
			return nil, nil, err
		}
		ov := ""
		for n := 1; ov == "" || fileExists(ov); n++ {
			ov = e.file(vm.Name, fmt.Sprintf(".restore-e%d-%d.%s", epoch, n, di.DiskFormat()))
		}
		if err := di.NewDisk(ctx, vm.Disk, ov); err != nil {
			return nil, nil, fmt.Errorf("vm %s: %w", vm.Name, err)
		}
		vm.Disk = ov
	}
	if err := e.startNet(ctx, epoch); err != nil {
		return nil, nil, err
	}
	e.vms = make([]hv.Machine, len(l.VMs))
	errs := make([]error, len(l.VMs))
	specs := make([]hv.MachineSpec, len(l.VMs))
	for i := range specs {
		specs[i] = e.spec(i) // Options.Console is called from here only
	}
	var wg sync.WaitGroup
	for i := range l.VMs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e.vms[i], errs[i] = e.load(ctx, s, specs[i], tr, i)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, nil, err
	}
	rep := &RestoreReport{Epoch: epoch}
	for _, sw := range e.switches {
		n, err := sw.Replay(frames)
		if err != nil {
			return nil, nil, fmt.Errorf("replay in-transit frames: %w", err)
		}
		rep.Replayed += n
	}
	// Resume every VM together.
	for i, vm := range e.vms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := vm.Resume(ctx); err != nil {
				errs[i] = fmt.Errorf("resume %s: %w", l.VMs[i].Name, err)
				return
			}
			tr.phase(i, PhaseResumed, 0)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, nil, err
	}
	ok = true
	return e, rep, nil
}

// load starts the VM of spec paused and loads its image from the store.
func (e *Env) load(ctx context.Context, s *store.Snapshot, spec hv.MachineSpec, tr *tracker, i int) (hv.Machine, error) {
	name := spec.Name
	if _, err := s.Image(name, imageName); err == nil {
		return e.restoreImage(ctx, s, spec, s.Manifest().Labels[LabelImageFileFormat], tr, i)
	}
	r, err := s.Reader(name, "memory")
	if err != nil {
		return nil, err
	}
	defer r.Close()
	tr.phase(i, PhaseRestoring, 0)
	er := &errReader{r: tr.reader(i, r)}
	vm, err := e.hypFor(i).Restore(ctx, spec, er)
	if rerr := er.Err(); rerr != nil {
		if vm != nil {
			vm.Kill()
		}
		if errors.Is(rerr, store.ErrCorrupt) {
			return nil, rerr // names the VM, stream and chunk already
		}
		return nil, fmt.Errorf("vm %s: read image: %w", name, rerr)
	}
	if err != nil {
		return nil, err
	}
	tr.phase(i, PhaseLoaded, 0)
	return vm, nil
}
