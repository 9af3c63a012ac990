package realbackend

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"github.com/vnsnap/vnsnap/core"
	"github.com/vnsnap/vnsnap/realbackend/hv"
	"github.com/vnsnap/vnsnap/vnet"
)

// errLoopEnded is returned by a snapshot-point hook released because the
// snapshot ended (aborted) before CopyFinal.
var errLoopEnded = errors.New("snapshot ended")

// exec carries out one command in the loop goroutine, with ctx for the calls
// it makes itself. An error is reported to the coordinator (see run).
func (d *driver) exec(ctx context.Context, c core.Command) error {
	switch c := c.(type) {
	case core.StartLiveCopy:
		return d.startCopy(c.VM, c.Sink, true)
	case core.PauseVM:
		if err := d.vms[c.VM].vm.Pause(ctx); err != nil {
			return fmt.Errorf("pause %s: %w", d.vms[c.VM].name, err)
		}
		d.pending = append(d.pending, core.VMPaused{VM: c.VM})
		return nil
	case core.SetColour:
		host := d.env.Layout.VMs[c.VM].Host
		if err := d.env.ctl[host].SetEpoch(c.VM, c.Epoch); err != nil {
			return fmt.Errorf("set colour of %s: %w", d.vms[c.VM].name, err)
		}
		return nil
	case core.FreezeDisk:
		return d.freezeDisk(ctx, c.VM)
	case core.CopyFinal:
		v := d.vms[c.VM]
		if v.release != nil { // the pre-copy hook waits: let the save finish
			close(v.release)
			v.release = nil
			return nil
		}
		return d.startCopy(c.VM, c.Sink, false)
	case core.ProtectMemory:
		return d.protect(c.VM, c.Sink)
	case core.ResumeVM:
		if err := d.vms[c.VM].vm.Resume(ctx); err != nil {
			return fmt.Errorf("resume %s: %w", d.vms[c.VM].name, err)
		}
		d.pending = append(d.pending, core.VMResumed{VM: c.VM})
		return nil
	case core.ThrottleVM:
		// Observed mode never throttles: QEMU runs its own pre-copy loop
		// (and its own auto-converge, if enabled). Nothing to do.
		return nil
	case core.FlushImage:
		d.flush(c.VM)
		return nil
	case core.CancelCopy:
		return d.cancelCopy(ctx, d.vms[c.VM])
	case core.SetTimer:
		if t := d.timers[c.ID]; t != nil {
			t.Stop()
		}
		id := c.ID
		d.timers[id] = time.AfterFunc(max(0, c.At-d.clock.Now()), func() { d.post(core.TimerFired{ID: id}) })
		return nil
	case core.CancelTimer:
		if t := d.timers[c.ID]; t != nil {
			t.Stop()
			delete(d.timers, c.ID)
		}
		return nil
	case core.Commit:
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			if err := d.commitSnapshot(); err != nil {
				d.post(core.SnapshotFailed{Err: fmt.Errorf("commit: %w", err)})
				return
			}
			d.post(core.Committed{})
		}()
		return nil
	case core.Abort:
		d.aborted = true
		return d.w.Abort()
	case core.CopyRound:
		return errors.New("CopyRound in Observed mode")
	default:
		panic(fmt.Sprintf("realbackend: unknown command %T", c))
	}
}

// sink returns where vm's migration stream goes: its store stream (disk
// sink) or a fresh RAM buffer (memory sink).
func (d *driver) sink(v *vmRun, s core.Sink) (io.Writer, error) {
	if s == core.MemorySink {
		v.ram = &ramBuffer{}
		return countingWriter{v.ram, &d.moved, v.copied}, nil
	}
	sw, err := d.w.Stream(v.name, "memory")
	if err != nil {
		return nil, err
	}
	v.stream = sw
	return countingWriter{sw, &d.moved, v.copied}, nil
}

// countingWriter adds the bytes written through it to n, the progress a
// snapshot's stall check watches, and to vm, if set, the VM's progress
// counter (progress.go).
type countingWriter struct {
	w  io.Writer
	n  *atomic.Int64
	vm *atomic.Int64
}

func (c countingWriter) Write(p []byte) (int, error) {
	k, err := c.w.Write(p)
	c.n.Add(int64(k))
	if c.vm != nil {
		c.vm.Add(int64(k))
	}
	return k, err
}

// startCopy runs Machine.Save in a goroutine, live or not. For a live save
// the snapshot-point hook posts VMPaused and waits for CopyFinal; each pass
// is a RoundCopied.
func (d *driver) startCopy(id core.VMID, s core.Sink, live bool) error {
	v := d.vms[id]
	fs, paged := d.fileSaver(v)
	var w io.Writer
	if !paged {
		var err error
		if w, err = d.sink(v, s); err != nil {
			return err
		}
	}
	v.ctx, v.cancel = context.WithCancel(d.ctx)
	opts := hv.SaveOptions{Live: live}
	if live {
		release := make(chan struct{})
		v.release = release
		ctx := v.ctx
		opts.AtSnapshotPoint = func(context.Context) error {
			d.post(core.VMPaused{VM: id})
			select {
			case <-release:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			case <-d.quit:
				return errLoopEnded
			}
		}
		last := time.Now()
		opts.OnPass = func(n int, at time.Time) {
			d.post(core.RoundCopied{VM: id, Round: n, Elapsed: at.Sub(last)})
			last = at
		}
	}
	d.wg.Add(1)
	done := make(chan struct{})
	v.done = done
	go func() {
		defer d.wg.Done()
		defer close(done)
		var st hv.SaveStats
		var err error
		if paged {
			st, err = d.saveFile(v, fs, s, opts)
		} else {
			st, err = v.vm.Save(v.ctx, w, opts)
		}
		d.copied(id, v, st, err)
	}()
	return nil
}

// cancelCopy stops v's copy, if one runs, and waits until its goroutine has
// returned (the hypervisor's save is cancelled then), so that a ResumeVM
// after it finds the machine out of its save.
func (d *driver) cancelCopy(ctx context.Context, v *vmRun) error {
	if v.cancel == nil {
		return nil
	}
	v.cancel()
	if v.done == nil {
		return nil
	}
	select {
	case <-v.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("cancel copy of %s: %w", v.name, ctx.Err())
	}
}

// copied runs in a copy goroutine when a save returned: the disk sink's
// stream is closed (the image is then complete in the store) before
// FinalCopied is posted.
func (d *driver) copied(id core.VMID, v *vmRun, st hv.SaveStats, err error) {
	v.stats = st
	if v.file != nil {
		// A disk-sink image is on disk now, in the state directory: it is
		// stored in the background, before the commit (not during the
		// pause); a memory-sink one stays in tmpfs until FlushImage.
		switch {
		case err != nil:
			v.dropImageFile()
		case v.fileSink == core.DiskSink:
			d.ingestLater(v)
		}
	}
	if v.stream != nil {
		if err != nil {
			v.stream.CloseWithError(err)
		} else {
			err = v.stream.Close()
		}
	}
	if err != nil {
		d.post(core.Failed{VM: id, Err: err})
		return
	}
	d.post(core.FinalCopied{VM: id, Sent: st.MemoryCopied / core.PageSize})
}

// protect starts the background (copy-on-write) save of a paused VM and
// returns once the hypervisor has armed write protection, so that the
// ResumeVM the core orders next lets the VM run during the copy; the save
// never resumes the VM itself. A hypervisor without hv.BackgroundSaver
// cannot run the cow algorithm.
func (d *driver) protect(id core.VMID, s core.Sink) error {
	v := d.vms[id]
	bg, ok := v.vm.(hv.BackgroundSaver)
	if !ok {
		return fmt.Errorf("background save of %s: %s cannot save copy-on-write", v.name, d.env.opts.Hypervisor.Info().Name)
	}
	w, err := d.sink(v, s)
	if err != nil {
		return err
	}
	v.ctx, v.cancel = context.WithCancel(d.ctx)
	armed := make(chan struct{})
	done := make(chan struct{})
	v.done = done
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		defer close(done)
		st, err := bg.SaveBackground(v.ctx, w, func() { close(armed) })
		d.copied(id, v, st, err)
	}()
	// A few milliseconds normally; the bound only catches a hypervisor that
	// never gets its save going.
	ctx, cancel := context.WithTimeout(v.ctx, 30*time.Second)
	defer cancel()
	select {
	case <-armed:
		return nil
	case <-done:
		return nil // finished (or failed: Failed is posted) already
	case <-ctx.Done():
		return fmt.Errorf("background save of %s: write protection not armed: %w", v.name, ctx.Err())
	}
}

// flush writes a memory-sink image to the store in a goroutine: its page
// image file, or its RAM buffer as a stream.
func (d *driver) flush(id core.VMID) {
	v := d.vms[id]
	fc := d.track.flushCounter(int(id), v.imageLen())
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		err := func() error {
			if v.file != nil {
				return d.ingestFile(v, fc)
			}
			sw, err := d.w.Stream(v.name, "memory")
			if err != nil {
				return err
			}
			if _, err := v.ram.WriteTo(countingWriter{sw, &d.moved, fc}); err != nil {
				sw.CloseWithError(err)
				return fmt.Errorf("flush image of %s: %w", v.name, err)
			}
			return sw.Close()
		}()
		if v.ram != nil {
			v.ram.Reset()
		}
		if err != nil {
			d.post(core.Failed{VM: id, Err: err})
			return
		}
		d.post(core.ImageFlushed{VM: id})
	}()
}

// freezeDisk takes the disk's snapshot at the snapshot point: new writes go
// to a fresh overlay, so the image below is the disk as it was here. A guest
// without disk has nothing to freeze; a hypervisor without hv.DiskFreezer
// cannot freeze a disk guest's disk.
func (d *driver) freezeDisk(ctx context.Context, id core.VMID) error {
	v := d.vms[id]
	if v.disk == "" {
		v.frozen = "" // no disk: nothing to freeze
		return nil
	}
	fz, ok := v.vm.(hv.DiskFreezer)
	if !ok {
		return fmt.Errorf("freeze disk of %s: %s cannot freeze disks", v.name, d.env.opts.Hypervisor.Info().Name)
	}
	di, err := diskImages(d.env.opts.Hypervisor, v.name)
	if err != nil {
		return fmt.Errorf("freeze disk of %s: %w", v.name, err)
	}
	overlay := d.env.freshDisk(v.name, fmt.Sprintf("e%d", d.epoch), di.DiskFormat())
	frozen, err := fz.FreezeDisk(ctx, overlay)
	if err != nil {
		return err
	}
	v.frozen, v.disk = frozen, overlay
	// The VM writes to the overlay from now on, whatever becomes of the
	// snapshot.
	d.env.Layout.VMs[id].Disk = overlay
	return nil
}

// commitSnapshot waits for the disk-sink images being stored, then writes
// the extras and then the manifest.
func (d *driver) commitSnapshot() error {
	if err := d.ingested(); err != nil {
		return err
	}
	e := d.env
	l := e.Layout
	l.VMs = append([]VMLayout(nil), e.Layout.VMs...)
	for i := range l.VMs {
		if d.vms[i].frozen != "" {
			l.VMs[i].Disk = d.vms[i].frozen
		}
	}
	extras := map[string][]byte{"layout.json": mustJSON(l)}
	if e.Source != nil {
		extras["vne.yaml"] = e.Source
	}
	var frames []vnet.LoggedFrame
	for _, sw := range e.switches {
		frames = append(frames, sw.InTransit(d.epoch)...)
	}
	var b bytes.Buffer
	if err := vnet.WriteInTransit(&b, frames); err != nil {
		return fmt.Errorf("in-transit log: %w", err)
	}
	extras["intransit"] = b.Bytes()
	if e.clustered() {
		// The frame logs stay on the agents, in their snapshot directories.
		if err := e.flushCluster(d.ctx, d.opts.Name); err != nil {
			return err
		}
	}
	logs, err := e.FrameLogs()
	if err != nil {
		return err
	}
	for i, p := range logs {
		data, err := readFile(p)
		if err != nil {
			return err
		}
		extras["framelog."+e.Layout.Hosts[i].Name] = data
	}
	for _, name := range sortedKeys(extras) {
		sw, err := d.w.Extra(name)
		if err != nil {
			return err
		}
		if _, err := sw.Write(extras[name]); err != nil {
			sw.CloseWithError(err)
			return err
		}
		if err := sw.Close(); err != nil {
			return err
		}
	}
	if err := d.w.Commit(); err != nil {
		return err
	}
	return nil
}
