package sim

import (
	"fmt"
	"time"

	"github.com/vnsnap/vnsnap/core"
)

// Host is a simulated physical host.
type Host struct {
	ID   int
	Disk *Resource
	Mem  *Resource // the memory bus as seen by the memory sink's copies
}

// World is a built VNE: hosts, network, VMs and their applications.
type World struct {
	Eng     *Engine
	Cfg     Config
	Hosts   []*Host
	Net     *Network
	VMs     []*VM
	Streams []*Stream
	UDP     []*Datagrams
	conns   [][]*Conn // per VM, in a fixed order
	apps    []App     // per VM, nil where a workload runs none
	load    Instance  // the workload, if any
	// nextFlow numbers TCP flows; Connect takes two per connection.
	nextFlow uint32
}

// build makes the world of cfg on engine eng. Flow ids, connection order and
// random streams are fixed by cfg, so an original run and a restored run
// build identical topologies.
func build(cfg Config, eng *Engine) (*World, error) {
	w := &World{Eng: eng, Cfg: cfg}
	hostOf := make([]int, cfg.VMs)
	for i := range hostOf {
		hostOf[i] = i % cfg.Hosts
	}
	w.Net = NewNetwork(eng, NetConfig{
		Algorithm: cfg.Algorithm, Link: cfg.Host.Link, Downlink: cfg.Host.downlink(), Local: cfg.Host.Local, TCP: cfg.TCP,
		SwitchLatency: 10 * time.Microsecond, MaxHeld: 4096, admit: cfg.admit,
	}, hostOf, cfg.Hosts)
	for h := 0; h < cfg.Hosts; h++ {
		w.Hosts = append(w.Hosts, &Host{
			ID:   h,
			Disk: NewResource(eng, "disk", cfg.Host.DiskBandwidth),
			Mem:  NewResource(eng, "membus", cfg.Host.MemoryBandwidth),
		})
	}
	pages := cfg.MemBytes / core.PageSize
	hot := cfg.HotBytes / core.PageSize
	if hot == 0 {
		hot = max(pages/8, 1)
	}
	vrng := eng.Rand()
	for i := 0; i < cfg.VMs; i++ {
		m := NewMemory(pages, hot, cfg.HotFrac)
		m.Full = fullPages(&cfg, pages, hot)
		m.Reseed(cfg.Seed ^ uint64(i+1)*0x9e3779b97f4a7c15)
		f := 1 + cfg.DirtySpread*(2*vrng.Float64()-1)
		m.SetRate(eng.Now(), cfg.DirtyRate*f/core.PageSize)
		w.VMs = append(w.VMs, newVM(eng, w.Net, core.VMID(i), hostOf[i], m))
	}
	w.conns = make([][]*Conn, cfg.VMs)
	w.apps = make([]App, cfg.VMs)
	w.Net.onTCP = cfg.OnTCP
	if cfg.Workload != nil {
		inst, err := cfg.Workload.Build(w)
		if err != nil {
			return nil, fmt.Errorf("workload %s: %w", cfg.Workload.Name(), err)
		}
		w.load = inst
		return w, nil
	}
	pairs, _ := pairsFor(cfg.Traffic, cfg.VMs)
	rng := eng.Rand()
	for _, p := range pairs {
		a, b := w.VMs[p[0]], w.VMs[p[1]]
		ca, cb := w.Connect(a.ID, b.ID)
		s := &Stream{
			Src: a.ID, Dst: b.ID, Out: ca, In: cb, Rate: cfg.FlowRate,
			Tick: 10 * time.Millisecond, SendBuffer: 512 << 10, stopAt: 1 << 62,
		}
		// Stagger the first write so flows do not tick in lockstep.
		s.phase = Time(rng.IntN(10000)) * time.Microsecond
		w.Streams = append(w.Streams, s)
	}
	if cfg.UDP && cfg.VMs > 1 {
		every := cfg.UDPInterval
		if every == 0 {
			every = 50 * time.Millisecond
		}
		flow := w.nextFlow
		for i := 0; i < cfg.VMs; i++ {
			flow++
			w.UDP = append(w.UDP, &Datagrams{
				Src: core.VMID(i), Dst: core.VMID((i + 1) % cfg.VMs), Flow: flow, Size: 512,
				Interval: every, vm: w.VMs[i], stopAt: 1 << 62,
			})
		}
		w.nextFlow = flow
	}
	return w, nil
}

// startApps starts every application.
func (w *World) startApps() {
	for _, s := range w.Streams {
		s.start()
	}
	for _, d := range w.UDP {
		d.vm.After(0, d, 0, 0)
	}
	for _, a := range w.apps {
		if a != nil {
			a.Start()
		}
	}
}

// done reports whether the applications have finished: the workload's, or
// every stream of the simple traffic generator.
func (w *World) done() bool {
	if w.load != nil {
		_, ok := w.load.Finished()
		return ok
	}
	return w.streamsDone()
}

// workloadResult fills the workload's fields of a result.
func (w *World) workloadResult(res *Result) {
	res.AppDoneMS = -1
	if w.load == nil {
		res.AppOK = res.StreamsOK
		if res.StreamsOK {
			res.AppDoneMS = ms(w.Eng.Now())
		}
		return
	}
	res.Workload = w.Cfg.Workload.Name()
	if at, ok := w.load.Finished(); ok {
		res.AppDoneMS = ms(at)
	}
	if err := w.load.Verify(); err != nil {
		res.AppError = err.Error()
	} else {
		res.AppOK = true
	}
	w.load.Report(res)
}

// stopApps makes every application stop writing at t.
func (w *World) stopApps(t Time) {
	for _, s := range w.Streams {
		s.stopAt = t
	}
	for _, d := range w.UDP {
		d.stopAt = t
	}
}

// streamsDone reports whether every stream has delivered everything.
func (w *World) streamsDone() bool {
	now := w.Eng.Now()
	for _, s := range w.Streams {
		if !s.Done(now) {
			return false
		}
	}
	return true
}

// image is one VM's state at its snapshot point.
// image is a VM's state at its snapshot point besides memory, whose image
// the copy builds (driver.imgMem).
type image struct {
	point Time
	conns []tcpState
	app   any
}

func (w *World) capture(vm core.VMID) image {
	im := image{point: w.Eng.Now()}
	for _, c := range w.conns[vm] {
		im.conns = append(im.conns, c.snapshot())
	}
	if a := w.apps[vm]; a != nil {
		im.app = a.Capture()
	}
	return im
}

// fullPages is what a copy of a whole VM sends (Config.PopulatedBytes):
// every page, or the populated ones and the working set the config names
// (HotBytes: a program that allocated and filled it, whether or not it
// still writes it), the working set falling on populated and zero pages
// alike.
func fullPages(cfg *Config, pages, hot int64) int64 {
	if cfg.PopulatedBytes == 0 {
		return pages
	}
	pop := cfg.PopulatedBytes / core.PageSize
	ws := int64(0)
	if cfg.HotBytes > 0 {
		ws = hot
	}
	return min(pages, ws+int64(float64(pop)*float64(pages-ws)/float64(pages)))
}
