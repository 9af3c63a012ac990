package realbackend

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vnsnap/vnsnap/cluster/remote"
	"github.com/vnsnap/vnsnap/core"
	"github.com/vnsnap/vnsnap/qemubackend/guestimg"
	"github.com/vnsnap/vnsnap/realbackend/hv"
	"github.com/vnsnap/vnsnap/vne"
	"github.com/vnsnap/vnsnap/vnet"
)

// Options says how to run a VNE on this machine.
type Options struct {
	// Hypervisor runs the VMs (cmd/vnsnap picks it from the VNE file's
	// hypervisor field: qemubackend.NewHypervisor for qemu).
	Hypervisor Hypervisor
	// Image is the built-in guest image; needed only by built-in guests.
	Image guestimg.Image
	// Dir receives the runtime files: port sockets, frame logs, disk
	// overlays. It must exist and should be short (unix socket paths are
	// limited to 107 bytes).
	Dir string
	// Console, if set, returns the writer that receives a VM's console lines
	// (host-stamped). It is called from one goroutine at a time.
	Console func(vm string) io.Writer
	// HeartbeatInterval is the built-in guests' heartbeat; default 20ms.
	HeartbeatInterval time.Duration
	// Logger receives the switches' diagnostics; nil discards them.
	Logger *slog.Logger
	// VNE is the VNE file the user runs (vnsnap up FILE), if any. Restore
	// takes the kernel, initramfs and command line of a guest with its own
	// kernel from the VM of the same name in it, never from the snapshot,
	// and refuses to restore such a guest without it (see doc.go).
	VNE *vne.VNE
	// OnRestoreProgress, if set, receives each VM's progress during Restore
	// (phases restoring, loaded, resumed), as SnapshotOptions.OnProgress
	// does during a snapshot; Restore returns after its last call. The Env
	// a Restore returns does not keep it.
	OnRestoreProgress func(Progress)
	// Agents, if set, runs the VNE on agents (cluster mode, cluster.go):
	// Agents[i] is the agent of the VNE's i-th host, whose switch and VMs it
	// runs; Hypervisor is then the agents' own. Restore places the VMs on
	// the hosts of Options.VNE, which may differ from the snapshot's.
	Agents []*remote.Host
	// LeaseTTL is a clustered snapshot's lease on each agent
	// (DefaultLeaseTTL if zero).
	LeaseTTL time.Duration
}

// Layout is everything a restore needs to rebuild a VNE: the hosts, and per
// VM its host and the exact QEMU configuration it ran with. It is stored
// with every snapshot (the extra "layout.json").
type Layout struct {
	Name  string       `json:"name"`
	Hosts []HostLayout `json:"hosts"`
	VMs   []VMLayout   `json:"vms"`
}

// HostLayout is one host: the address its switch's tunnel listens on (an IP,
// which picks a free port, or host:port, as vne.CheckAddress accepts) and
// its memory-sink budget in bytes (0: unlimited; a VM that does not fit
// falls back to the disk sink).
type HostLayout struct {
	Name      string `json:"name"`
	Address   string `json:"address"`
	RAMBudget int64  `json:"ram_budget"`
}

// VMLayout is one VM: its host (index in Layout.Hosts) and QEMU settings.
// Disk, when set, is the image the VM runs on (in the hypervisor's disk
// format, hv.DiskImages; made by Boot, Restore or the last FreezeDisk).
type VMLayout struct {
	Name      string `json:"name"`
	Host      int    `json:"host"`
	MemoryMiB int    `json:"memory_mib"`
	VCPUs     int    `json:"vcpus"`
	Machine   string `json:"machine"`
	MAC       string `json:"mac"`
	Kernel    string `json:"kernel,omitempty"`
	Initrd    string `json:"initrd,omitempty"`
	Append    string `json:"append,omitempty"`
	Disk      string `json:"disk,omitempty"`
	// Heartbeat says the guest prints "HB n" lines (built-in guests).
	Heartbeat bool `json:"heartbeat"`
}

// LayoutOf turns a VNE description into a layout. Built-in guests get the
// image in o.Image, a heartbeat and, for the programs that talk to their
// peers (tcpstream, npb, swarm), the -peers and -self of every VM of the same
// network running the same program (unless the args set them).
func LayoutOf(v *vne.VNE, o Options) (*Layout, error) {
	l := &Layout{Name: v.Name}
	hostIdx := map[string]int{}
	for i, h := range v.Hosts {
		hostIdx[h.Name] = i
		l.Hosts = append(l.Hosts, HostLayout{Name: h.Name, Address: h.Address, RAMBudget: h.RAMBudget})
	}
	hb := o.HeartbeatInterval
	if hb == 0 {
		hb = 20 * time.Millisecond
	}
	subnets := make(map[string]netip.Prefix, len(v.Networks))
	for _, nw := range v.Networks {
		subnets[nw.Name] = nw.Subnet
	}
	peers := peerLists(v)
	for i, vm := range v.VMs {
		field := fmt.Sprintf("%s: vms[%d] (%s)", v.File, i, vm.Name)
		if vm.Memory%(1<<20) != 0 {
			return nil, fmt.Errorf("%s.memory: %d bytes is not a whole number of MiB (QEMU -m)", field, vm.Memory)
		}
		machine := ""
		if o.Hypervisor != nil {
			machine = o.Hypervisor.Info().Machine
		}
		vl := VMLayout{
			Name: vm.Name, Host: hostIdx[vm.Host], MemoryMiB: int(vm.Memory >> 20), VCPUs: vm.VCPUs,
			Machine: machine, MAC: vm.MAC.String(),
		}
		g := vm.Guest
		switch g.Kind() {
		case vne.BuiltinGuest:
			if o.Image.Kernel == "" {
				return nil, fmt.Errorf("%s.guest.builtin: no built-in guest image given", field)
			}
			vl.Kernel, vl.Initrd, vl.Heartbeat = o.Image.Kernel, o.Image.Initrd, true
			progs := []guestimg.Program{{Name: "heartbeat", Args: []string{"-interval=" + hb.String()}}}
			switch g.Builtin {
			case "idle", "heartbeat":
			default:
				args := g.Args
				if peerPrograms[g.Builtin] {
					args = peerArgs(peers[g.Builtin][vm.Network], vm, g.Args)
				}
				progs = append(progs, guestimg.Program{Name: g.Builtin, Args: args})
			}
			ip := ""
			if vm.IP.IsValid() {
				ip = vm.IP.String() + "/" + strconv.Itoa(subnets[vm.Network].Bits())
			}
			vl.Append = guestimg.KernelArgs(ip, vl.MAC, progs...)
		case vne.KernelGuest:
			vl.Kernel, vl.Initrd, vl.Append = g.Kernel, g.Initrd, g.Cmdline
			vl.Disk = g.Disk // its disk, if any; Boot makes the image it runs on
		case vne.DiskGuest:
			vl.Disk = g.Disk // Boot puts an overlay on it
		default:
			return nil, fmt.Errorf("%s.guest: no guest", field)
		}
		l.VMs = append(l.VMs, vl)
	}
	return l, nil
}

// peerPrograms are the built-in programs that take -peers and -self.
var peerPrograms = map[string]bool{"tcpstream": true, "npb": true, "swarm": true}

// peerLists returns, per peer program (tcpstream, npb, swarm) and network, the
// -peers argument of its VMs: every such VM's IP, in file order (npb's rank
// order). It is computed once, so LayoutOf stays linear in the VNE apart
// from the peer lists themselves.
func peerLists(v *vne.VNE) map[string]map[string]string {
	ips := map[string]map[string][]string{}
	for _, o := range v.VMs {
		if p := o.Guest.Builtin; peerPrograms[p] && o.IP.IsValid() {
			if ips[p] == nil {
				ips[p] = map[string][]string{}
			}
			ips[p][o.Network] = append(ips[p][o.Network], o.IP.String())
		}
	}
	peers := make(map[string]map[string]string, len(ips))
	for p, byNet := range ips {
		peers[p] = make(map[string]string, len(byNet))
		for nw, l := range byNet {
			peers[p][nw] = "-peers=" + strings.Join(l, ",")
		}
	}
	return peers
}

func peerArgs(peers string, vm vne.VM, args []string) []string {
	joined := strings.Join(args, " ")
	out := append([]string(nil), args...)
	if !strings.Contains(joined, "-peers") {
		if peers == "" {
			peers = "-peers="
		}
		out = append(out, peers)
	}
	if !strings.Contains(joined, "-self") && vm.IP.IsValid() {
		out = append(out, "-self="+vm.IP.String())
	}
	return out
}

// Env is a running VNE: its switches (one per host, all in this process) and
// its QEMU VMs. Its methods are not safe for concurrent use; one snapshot or
// restore at a time.
type Env struct {
	Layout Layout
	// Source is the VNE file's content, stored with each snapshot; may be nil.
	Source []byte

	opts     Options
	switches []*vnet.Switch
	ctl      []vnet.Controller // per host: how SetColour reaches its switch
	logPaths []string          // per host: the switch's frame log file
	logFiles []*os.File
	vms      []hv.Machine
	hyps     []hv.Hypervisor // per host, in cluster mode
	epoch    core.Epoch      // every port's epoch
	runs     int             // how many switch generations Dir has seen (file names)
	closed   bool
}

// Boot starts the VNE v: switches, tunnels, ports and VMs. On error
// everything started is stopped again.
func Boot(ctx context.Context, v *vne.VNE, o Options) (*Env, error) {
	l, err := LayoutOf(v, o)
	if err != nil {
		return nil, err
	}
	src, _ := os.ReadFile(v.File) // stored with snapshots, for people
	return BootLayout(ctx, l, src, o)
}

// BootLayout starts the VNE described by l (see Boot); source, if not nil,
// is stored with every snapshot as the extra "vne.yaml". The layout must
// pass Layout.Check, and a disk guest's image must be an existing regular
// file.
func BootLayout(ctx context.Context, l *Layout, source []byte, o Options) (_ *Env, err error) {
	if err := l.Check(); err != nil {
		return nil, fmt.Errorf("boot %s: %w", l.Name, err)
	}
	e := &Env{Layout: *l, Source: source, opts: o}
	// The images made here go again if the boot fails: nothing
	// half-made stays in the state directory.
	var made []string
	defer func() {
		if err != nil {
			for _, p := range made {
				os.Remove(p)
			}
		}
	}()
	e.Layout.VMs = append([]VMLayout(nil), l.VMs...)
	for i := range e.Layout.VMs {
		vm := &e.Layout.VMs[i]
		if vm.Disk == "" {
			continue
		}
		// Never write the user's image: run on a new one made from it.
		if err := vne.CheckFile(vm.Disk); err != nil {
			return nil, fmt.Errorf("boot %s: disk: %w", vm.Name, err)
		}
		di, err := diskImages(o.Hypervisor, vm.Name)
		if err != nil {
			return nil, fmt.Errorf("boot %s: %w", l.Name, err)
		}
		ov := e.freshDisk(vm.Name, "boot", di.DiskFormat())
		if err := di.NewDisk(ctx, vm.Disk, ov); err != nil {
			return nil, fmt.Errorf("boot %s: %w", vm.Name, err)
		}
		made = append(made, ov)
		vm.Disk = ov
	}
	if e.clustered() {
		if err := e.connectAgents(ctx); err != nil {
			return nil, fmt.Errorf("boot %s: %w", l.Name, err)
		}
	}
	if err := e.startNet(ctx, 0); err != nil {
		e.Close()
		return nil, fmt.Errorf("boot %s: %w", l.Name, err)
	}
	if e.opts.Hypervisor == nil {
		e.Close()
		return nil, fmt.Errorf("boot %s: no hypervisor (Options.Hypervisor)", l.Name)
	}
	e.vms = make([]hv.Machine, len(e.Layout.VMs))
	for i := range e.Layout.VMs {
		vm, err := e.hypFor(i).Start(ctx, e.spec(i))
		if err != nil {
			e.Close()
			return nil, fmt.Errorf("boot %s: %w", l.Name, err)
		}
		e.vms[i] = vm
	}
	return e, nil
}

// freshDisk names a new disk image of VM vm in the state directory:
// VM.STEM.FORMAT, or VM.STEM-N.FORMAT (N from 2) if an image of that name
// is there: an earlier run of the VNE (a boot, its snapshots) left it, and
// a snapshot may name it as the image it froze, so it is never reused.
func (e *Env) freshDisk(vm, stem, format string) string {
	p := e.file(vm, "."+stem+"."+format)
	for n := 2; fileExists(p); n++ {
		p = e.file(vm, fmt.Sprintf(".%s-%d.%s", stem, n, format))
	}
	return p
}

// diskImages returns h's hv.DiskImages, which a disk guest (VM vm) needs.
func diskImages(h Hypervisor, vm string) (hv.DiskImages, error) {
	if h == nil {
		return nil, errors.New("no hypervisor (Options.Hypervisor)")
	}
	di, ok := h.(hv.DiskImages)
	if !ok || di.DiskFormat() == "" {
		return nil, fmt.Errorf("vm %s has a disk, and %s cannot run disk guests", vm, h.Info().Name)
	}
	if err := vne.CheckName("disk format", di.DiskFormat()); err != nil {
		return nil, fmt.Errorf("hypervisor %s: %w", h.Info().Name, err)
	}
	return di, nil
}

// startNet creates one switch per host with a frame log, a full mesh of
// tunnels, and a port per VM at epoch ep; in cluster mode the agents'
// switches (startClusterNet).
func (e *Env) startNet(ctx context.Context, ep core.Epoch) error {
	if e.clustered() {
		return e.startClusterNet(ctx, ep)
	}
	e.runs++
	for i, h := range e.Layout.Hosts {
		path := e.file(h.Name, fmt.Sprintf(".r%d.framelog", e.runs))
		f, err := os.Create(path)
		if err != nil {
			return err
		}
		e.logFiles = append(e.logFiles, f)
		e.logPaths = append(e.logPaths, path)
		sw, err := vnet.New(vnet.Config{
			ID: uint16(i + 1), TunnelAddr: tunnelAddr(h.Address), FrameLog: f,
			PortSendBuffer: 64 << 10, Logger: e.opts.Logger,
		})
		if err != nil {
			return fmt.Errorf("switch of host %s: %w", h.Name, err)
		}
		e.switches = append(e.switches, sw)
		e.ctl = append(e.ctl, sw)
	}
	for i, a := range e.switches {
		for j, b := range e.switches {
			if i != j {
				if err := a.AddTunnel(e.Layout.Hosts[j].Name, b.TunnelAddr()); err != nil {
					return err
				}
			}
		}
	}
	for i, vm := range e.Layout.VMs {
		sw := e.switches[vm.Host]
		if err := sw.AddPort(vnet.PortConfig{VM: core.VMID(i), Name: vm.Name, Path: e.sock(i)}); err != nil {
			return err
		}
		if ep > 0 {
			if err := sw.SetEpoch(core.VMID(i), ep); err != nil {
				return err
			}
		}
	}
	e.epoch = ep
	return nil
}

// tunnelAddr turns a host address (IP or IP:port) into a UDP listen address.
func tunnelAddr(a string) string {
	if ap, err := netip.ParseAddrPort(a); err == nil {
		return ap.String()
	}
	if ip, err := netip.ParseAddr(a); err == nil {
		return netip.AddrPortFrom(ip, 0).String()
	}
	return a
}

func (e *Env) sock(i int) string { return e.file(e.Layout.VMs[i].Name, ".sock") }

func (e *Env) spec(i int) hv.MachineSpec {
	vm := e.Layout.VMs[i]
	s := hv.MachineSpec{
		Name: vm.Name, MemoryMiB: vm.MemoryMiB, VCPUs: vm.VCPUs, Machine: vm.Machine,
		Kernel: vm.Kernel, Initrd: vm.Initrd, Append: vm.Append, Disk: vm.Disk,
		NetSocket: e.sock(i), MAC: vm.MAC,
	}
	if e.opts.Console != nil {
		s.ConsoleLog = e.opts.Console(vm.Name)
	}
	return s
}

// Machine returns the i-th VM (in Layout.VMs order) as its hypervisor runs
// it; a caller that knows the hypervisor may assert its own type.
func (e *Env) Machine(i int) Machine { return e.vms[i] }

// NumVMs returns the number of VMs.
func (e *Env) NumVMs() int { return len(e.vms) }

// Switch returns the switch of host h (in Layout.Hosts order).
func (e *Env) Switch(h int) *vnet.Switch { return e.switches[h] }

// Epoch returns the epoch of every port: that of the last snapshot taken of
// (or restored into) this VNE, 0 before any.
func (e *Env) Epoch() core.Epoch { return e.epoch }

// FrameLogs returns the paths of the switches' frame logs (flushed first),
// in host order: vnet.ReadLogs reads them together.
func (e *Env) FrameLogs() ([]string, error) {
	for _, sw := range e.switches {
		if err := sw.FlushLog(); err != nil {
			return nil, fmt.Errorf("flush frame log: %w", err)
		}
	}
	return append([]string(nil), e.logPaths...), nil
}

// Close kills every VM and stops every switch. It is safe to call more than
// once.
func (e *Env) Close() error {
	if e.closed {
		return nil
	}
	e.closed = true
	var wg sync.WaitGroup
	for _, vm := range e.vms {
		if vm != nil {
			wg.Add(1)
			go func() { defer wg.Done(); vm.Kill() }()
		}
	}
	wg.Wait()
	var errs []error
	for _, sw := range e.switches {
		errs = append(errs, sw.Close())
	}
	for _, f := range e.logFiles {
		errs = append(errs, f.Close())
	}
	return errors.Join(errs...)
}
