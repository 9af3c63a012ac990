package qemubackend

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/vnsnap/vnsnap/realbackend/hv"
)

// ImageFormat names the images this backend writes: QEMU's migration
// stream (magic QEVM, version 3).
const ImageFormat = "qemu-migration-v3"

// Hypervisor is QEMU behind realbackend's hypervisor port (package hv).
type Hypervisor struct {
	host *Host
	// AutoConverge turns on QEMU's auto-converge in live saves (vCPUs
	// throttled while a guest dirties faster than the copy). Off by
	// default: with it on, QEMU 10.0.2 under TCG segfaulted when a live
	// save was cancelled mid-copy (realbackend's abort test, two runs of
	// two). E9 and calibrate turn it on, as the simulator's QEMU model
	// assumes.
	AutoConverge bool
	// Logger receives the backend's diagnostics (a restore that falls
	// back from running on its image's file, RestoreRAMFile); nil
	// discards them.
	Logger *slog.Logger
}

// Machine is one QEMU VM behind the port. Besides hv.Machine it has the
// capabilities hv.BackgroundSaver, hv.DiskFreezer and hv.Heartbeats.
type Machine struct {
	vm           *VM
	autoConverge bool // Hypervisor.AutoConverge

	// fallback is why RestoreRAMFile restored the machine with QEMU
	// reading the whole image rather than on its file (nil if it did not).
	fallback error

	mu      sync.Mutex // guards disk, node, freezes
	disk    string     // the qcow2 image on top (Spec.Disk, then overlays)
	node    string     // its block node name
	freezes int
}

var (
	_ hv.Hypervisor      = (*Hypervisor)(nil)
	_ hv.Machine         = (*Machine)(nil)
	_ hv.BackgroundSaver = (*Machine)(nil)
	_ hv.DiskFreezer     = (*Machine)(nil)
	_ hv.Heartbeats      = (*Machine)(nil)
	_ hv.FileSaver       = (*Machine)(nil)
	_ hv.FileRestorer    = (*Hypervisor)(nil)
	_ hv.RAMFileRestorer = (*Hypervisor)(nil)
)

// NewHypervisor returns the port of the probed QEMU host (Probe).
func NewHypervisor(host *Host) *Hypervisor { return &Hypervisor{host: host} }

// Host returns the QEMU installation behind h.
func (h *Hypervisor) Host() *Host { return h.host }

// Info names QEMU, its version, ImageFormat and the pinned machine type.
func (h *Hypervisor) Info() hv.Info {
	return hv.Info{Name: "qemu", Version: h.host.Version.String(), ImageFormat: ImageFormat, Machine: h.host.Machine}
}

// spec turns the port's description of a VM into QEMU's.
func (h *Hypervisor) spec(s hv.MachineSpec) Spec {
	return Spec{
		Name: s.Name, MemoryMiB: s.MemoryMiB, VCPUs: s.VCPUs, Machine: s.Machine,
		Kernel: s.Kernel, Initrd: s.Initrd, Append: s.Append, Disk: s.Disk,
		NetSocket: s.NetSocket, ReconnectMs: 50, MAC: s.MAC, ConsoleLog: s.ConsoleLog,
	}
}

func (h *Hypervisor) newMachine(vm *VM) *Machine {
	return &Machine{vm: vm, autoConverge: h.AutoConverge, disk: vm.Spec.Disk, node: "disk0"} // node as on the command line (Args)
}

// Start boots a QEMU VM.
func (h *Hypervisor) Start(ctx context.Context, s hv.MachineSpec) (hv.Machine, error) {
	vm, err := Start(ctx, h.host, h.spec(s))
	if err != nil {
		return nil, err
	}
	return h.newMachine(vm), nil
}

// Restore starts a QEMU VM with -incoming defer and loads the image; the VM
// is left paused (Restore).
func (h *Hypervisor) Restore(ctx context.Context, s hv.MachineSpec, r io.Reader) (hv.Machine, error) {
	vm, err := Restore(ctx, h.host, h.spec(s), r)
	if err != nil {
		return nil, err
	}
	return h.newMachine(vm), nil
}

// FileFormat is MappedRAMFormat: the files Machine.SaveFile writes.
func (h *Hypervisor) FileFormat() string { return MappedRAMFormat }

// RestoreFile starts a QEMU VM with -incoming defer and, concurrently,
// calls open for the mapped-ram file to load (RestoreFileFrom); the VM is
// left paused.
func (h *Hypervisor) RestoreFile(ctx context.Context, s hv.MachineSpec, open func() (*os.File, error)) (hv.Machine, error) {
	vm, err := RestoreFileFrom(ctx, h.host, h.spec(s), open)
	if err != nil {
		return nil, err
	}
	return h.newMachine(vm), nil
}

// RestoreRAMFile starts a QEMU VM whose RAM is the RAM block's pages in
// img.File while img.Fill writes them, then loads the rest of the file
// (RestoreOnFile); the VM is left paused. An image whose layout
// RestoreOnFile does not take (ErrBadMappedRAM, ErrNoGuestRAM, found
// before anything started: fallsBack) is restored as RestoreFile does
// instead, QEMU reading it all and checking it itself. That fallback is
// logged as a warning (Logger) with its reason, and the machine's
// RestoreFallback returns the reason.
func (h *Hypervisor) RestoreRAMFile(ctx context.Context, s hv.MachineSpec, img hv.RAMImage) (hv.Machine, error) {
	filled := false
	fill := func() error { filled = true; return img.Fill() }
	vm, err := RestoreOnFile(ctx, h.host, h.spec(s), RAMImage{File: img.File, Image: img.Image, Size: img.Size, Fill: fill})
	if err == nil {
		return h.newMachine(vm), nil
	}
	if !fallsBack(err, filled) {
		return nil, err
	}
	h.log().Warn("restore not on the image's file: QEMU loads the whole file", "vm", s.Name, "reason", err)
	vm, ferr := RestoreFileFrom(ctx, h.host, h.spec(s), func() (*os.File, error) {
		if err := img.Fill(); err != nil {
			return nil, err
		}
		return img.File, nil
	})
	if ferr != nil {
		return nil, ferr
	}
	m := h.newMachine(vm)
	m.fallback = err
	return m, nil
}

// fallsBack reports whether RestoreRAMFile restores the image the other
// way after RestoreOnFile failed with err: only if the image's layout was
// refused before the image was written (filled: Fill was called), and so
// before QEMU started. Any other failure is the restore's.
func fallsBack(err error, filled bool) bool {
	return !filled && (errors.Is(err, ErrBadMappedRAM) || errors.Is(err, ErrNoGuestRAM))
}

func (h *Hypervisor) log() *slog.Logger {
	if h.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return h.Logger
}

// RestoreFallback returns why RestoreRAMFile restored m with QEMU loading
// the whole image rather than with its RAM on the image's file; nil for a
// machine restored on its file (m.VM().RAMOnFile()) or not by
// RestoreRAMFile.
func (m *Machine) RestoreFallback() error { return m.fallback }

// VM returns the QEMU VM behind m.
func (m *Machine) VM() *VM { return m.vm }

// Pause sends `stop` (a no-op for a paused VM).
func (m *Machine) Pause(ctx context.Context) error { return m.vm.Stop(ctx) }

// Resume sends `cont` until QEMU reports the VM running. A VM may be in
// postmigrate (after a snapshot), paused, finishing a migration, or
// already running (then nothing is sent).
func (m *Machine) Resume(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for confirmed := false; ; {
		st, err := m.vm.Status(ctx)
		if err != nil {
			return err
		}
		if st == "running" {
			if confirmed {
				return nil
			}
			// A background snapshot's restore of its saved run state may
			// land just after our cont and pause the VM again: look once
			// more.
			confirmed = true
		} else if st != "finish-migrate" {
			if err := m.vm.Cont(ctx); err != nil {
				return err
			}
			confirmed = false
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("resume %s: %w", m.vm.Spec.Name, ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// Kill kills the QEMU process.
func (m *Machine) Kill() { m.vm.Kill() }

func neutral(st Stats) hv.SaveStats {
	return hv.SaveStats{
		Bytes: st.Bytes, Passes: st.Passes, MemoryCopied: st.RAMTransferred,
		Downtime: st.QEMUDowntime, Total: st.QEMUTotal, LiveBytes: st.LiveBytes, LiveTime: st.LiveTime,
	}
}

// Save is VM.Snapshot by pre-copy (o.Live) or stop-and-copy, leaving the VM
// paused. QEMU's MIGRATION_PASS n>1 before the pause is reported as
// OnPass(n-1): the dirty-bitmap sync after the pause belongs to the final
// copy.
func (m *Machine) Save(ctx context.Context, w io.Writer, o hv.SaveOptions) (hv.SaveStats, error) {
	return m.save(ctx, w, o, false)
}

// SaveFile is Save in the mapped-ram format (Options.MappedRAM) into f,
// which QEMU writes itself.
func (m *Machine) SaveFile(ctx context.Context, f *os.File, o hv.SaveOptions) (hv.SaveStats, error) {
	return m.save(ctx, f, o, true)
}

func (m *Machine) save(ctx context.Context, w io.Writer, o hv.SaveOptions, mapped bool) (hv.SaveStats, error) {
	opts := Options{Method: StopCopy, AtSnapshotPoint: o.AtSnapshotPoint, MappedRAM: mapped}
	if o.Live {
		opts.Method = Precopy
		opts.AutoConverge = m.autoConverge
		paused := false
		opts.OnEvent = func(e SnapshotEvent) {
			switch e := e.(type) {
			case VMPaused, SnapshotPointReached:
				paused = true
			case PassStarted:
				if e.Pass > 1 && !paused && o.OnPass != nil {
					o.OnPass(e.Pass-1, e.At)
				}
			}
		}
	}
	st, err := m.vm.Snapshot(ctx, w, opts)
	return neutral(st), err
}

// SaveBackground is QEMU's background-snapshot of a paused VM. QEMU 10
// leaves a VM that was paused paused after the background snapshot's own
// stop, and a `cont` sent before that stop would move the snapshot point:
// armed is called once the migration is active and QEMU has saved its
// first RAM page, which shows the device state saved and write protection
// armed.
func (m *Machine) SaveBackground(ctx context.Context, w io.Writer, armed func()) (hv.SaveStats, error) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	started := false
	opts := Options{Method: Background, OnEvent: func(e SnapshotEvent) {
		if s, ok := e.(MigrationStatusChanged); ok && s.Status == "active" && !started {
			started = true
			wg.Add(1)
			go func() {
				defer wg.Done()
				if m.waitArmed(ctx) {
					armed()
				}
			}()
		}
	}}
	st, err := m.vm.Snapshot(ctx, w, opts)
	return neutral(st), err
}

// waitArmed polls query-migrate until the background snapshot has saved a
// page or ended (true), or ctx ends (false).
func (m *Machine) waitArmed(ctx context.Context) bool {
	for {
		var info struct {
			Status string `json:"status"`
			RAM    struct {
				Normal    int64 `json:"normal"`
				Duplicate int64 `json:"duplicate"`
			} `json:"ram"`
		}
		if err := m.vm.QMP.Execute(ctx, "query-migrate", nil, &info); err != nil {
			return false
		}
		if info.Status != "active" || info.RAM.Normal+info.RAM.Duplicate > 0 {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// FreezeDisk takes the disk's snapshot (blockdev-snapshot-sync to a new
// qcow2 overlay): new writes go to overlay, the image below stays the disk
// as it was now.
func (m *Machine) FreezeDisk(ctx context.Context, overlay string) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.disk == "" {
		return "", nil
	}
	m.freezes++
	node := fmt.Sprintf("disk-f%d", m.freezes)
	args := map[string]any{
		"node-name": m.node, "snapshot-file": overlay, "snapshot-node-name": node, "format": "qcow2",
	}
	if err := m.vm.QMP.Execute(ctx, "blockdev-snapshot-sync", args, nil); err != nil {
		return "", fmt.Errorf("freeze disk of %s: qmp blockdev-snapshot-sync: %w", m.vm.Spec.Name, err)
	}
	frozen := m.disk
	m.disk, m.node = overlay, node
	return frozen, nil
}

// LastHeartbeat returns the console's last heartbeat before t.
func (m *Machine) LastHeartbeat(t time.Time) (hv.Heartbeat, bool) {
	l, n, ok := m.vm.Console.LastHeartbeat(t)
	return hv.Heartbeat{At: l.At, N: n}, ok
}

// WaitHeartbeatAfter waits for a heartbeat arriving after t (see
// HeartbeatSilence).
func (m *Machine) WaitHeartbeatAfter(ctx context.Context, t time.Time, silence time.Duration) (hv.Heartbeat, error) {
	l, err := m.vm.Console.WaitHeartbeatAfter(ctx, t, silence)
	if err != nil {
		return hv.Heartbeat{}, err
	}
	n, _ := l.Heartbeat()
	return hv.Heartbeat{At: l.At, N: n}, nil
}

// MaxHeartbeatGap returns the largest heartbeat gap in [from, to].
func (m *Machine) MaxHeartbeatGap(from, to time.Time) hv.HeartbeatGap {
	return m.vm.Console.MaxHeartbeatGap(from, to)
}
