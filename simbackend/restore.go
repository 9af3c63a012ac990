package sim

import (
	"fmt"
	"time"

	"github.com/vnsnap/vnsnap/core"
)

// restoreGen is the content generation applications write after a restore:
// a restored VM need not repeat what it did after its snapshot point, so
// data written after the point differs from what the original run wrote.
const restoreGen = 1

// restoreRun rebuilds the VNE from the snapshot taken in the original world
// (each VM at its snapshot point, TCP state included, frames in flight gone
// unless logged), resumes every VM together, runs on, and checks that every
// TCP stream completes with every byte delivered once, in order and with the
// content its sender's restored history says.
func restoreRun(cfg Config, orig *World, sr *snapshotRun, res *Result) {
	ok := false
	res.RestoreOK = &ok
	if sr == nil {
		res.RestoreError = "no committed snapshot to restore"
		return
	}
	drv := sr.drv
	rcfg := cfg
	rcfg.Seed = cfg.Seed ^ 0x5deece66d
	rcfg.OnTCP, rcfg.admit = nil, nil
	eng := NewEngine(rcfg.Seed)
	t0 := orig.Eng.Now() + time.Second
	eng.now = t0
	w, err := build(rcfg, eng)
	if err != nil {
		res.RestoreError = err.Error()
		return
	}
	for i, vm := range w.VMs {
		im, have := drv.images[core.VMID(i)]
		if !have {
			res.RestoreError = fmt.Sprintf("vm %d has no image", i)
			return
		}
		mem := drv.imgMem[core.VMID(i)]
		if mem == nil {
			res.RestoreError = fmt.Sprintf("vm %d has no complete memory image", i)
			return
		}
		// The restored VM's memory is its image, as copied.
		seed := vm.Mem.seed
		vm.Mem = mem.Clone()
		vm.Mem.Reseed(seed)
		vm.Mem.last = t0
		vm.Mem.SetSpeed(t0, vm.Speed())
		for j, c := range w.conns[i] {
			c.restore(im.conns[j], im.point, restoreGen)
		}
		if a := w.apps[i]; a != nil && im.app != nil {
			a.Restore(im.app)
		}
		w.Net.ports[i].SetEpoch(sr.epoch)
	}
	for _, s := range w.Streams {
		s.measure = t0
		s.last = t0
		s.ResumeMark = t0
	}
	w.stopApps(t0 + cfg.RunOn)
	// Resume all together, then replay the logged channel state.
	w.startApps()
	for dst, frames := range orig.Net.Log {
		for _, lf := range frames {
			if lf.epoch != sr.epoch {
				continue
			}
			g := *lf.f
			g.Replayed = true
			g.To = connFor(w, core.VMID(dst), &g)
			if g.To != nil {
				w.VMs[dst].deliver(&g)
			}
		}
	}
	limit := t0 + cfg.RunOn + 3*MaxRTO + time.Minute
	if w.load != nil {
		limit = max(limit, t0+cfg.TimeLimit)
	}
	eng.RunUntil(limit, w.done)
	res.RestoreEvents = eng.Fired()
	res.RestoreGoodputMBps = w.Net.goodputMBps(int(t0 / GoodputBin))
	var needed uint64
	var recover Time
	for _, s := range w.Streams {
		needed += s.In.Stats.NeededRetx
		if s.progressed {
			recover = max(recover, s.FirstAfter-t0)
		}
	}
	res.RestoreRetx = &needed
	r := ms(recover)
	res.RecoverMS = &r
	for _, s := range w.Streams {
		if problem := VerifyStream(s.Out, s.In); problem != "" {
			res.RestoreError = fmt.Sprintf("stream vm%d->vm%d: %s", s.Src, s.Dst, problem)
			return
		}
	}
	if w.load != nil {
		at, done := w.load.Finished()
		if !done {
			res.RestoreError = "the workload did not finish after the restore"
			return
		}
		if err := w.load.Verify(); err != nil {
			res.RestoreError = "workload: " + err.Error()
			return
		}
		d := ms(at - t0)
		res.RestoreAppDoneMS = &d
	}
	// UDP users accept loss: nothing to verify for datagrams.
	ok = true
}

// connFor finds the restored endpoint a logged frame was addressed to.
func connFor(w *World, dst core.VMID, f *Frame) Receiver {
	for _, c := range w.conns[dst] {
		if c.flowIn == f.Flow {
			return c
		}
	}
	for _, d := range w.UDP {
		if d.Flow == f.Flow {
			return d
		}
	}
	return nil
}
