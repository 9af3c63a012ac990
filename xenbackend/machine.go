package xenbackend

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/vnsnap/vnsnap/realbackend/hv"
)

// ImageFormat names the images this backend writes: an xl save file (xl's
// header, the libxl stream v2 with the libxc stream v3 in it), as "xl save"
// writes it and "xl restore" reads it.
const ImageFormat = "xl-save-libxl2"

// VifScript is the hotplug script the domains' vifs get: libxl runs it in
// dom0 with the vif's name in $vif and its xenstore path in $XENBUS_PATH. It
// brings the interface up and reports it connected; the relay does the
// rest (no bridge).
const VifScript = `#!/bin/sh
# written by vnsnap (xenbackend): a vif joined to a vnet switch port by vnsnap's relay
case "$1" in
online|add)
	ip link set "$vif" up || exit 1
	xenstore-write "$XENBUS_PATH/hotplug-status" connected ;;
esac
exit 0
`

// Config says how the backend reaches Xen.
type Config struct {
	// XL is the xl binary; default DefaultXL. Ignored when Runner is set.
	XL string
	// Runner runs xl; default ExecRunner{XL}.
	Runner Runner
	// Dir receives the runtime files (domain configs, the vif script, the
	// live-snapshot receivers' sockets, stop-and-copy images); it must
	// exist, and be short (unix socket paths are limited to 107 bytes).
	Dir string
	// Receiver is the command xl migrate runs as the live-snapshot
	// receiver, before its socket argument: vnsnap's own binary and its
	// "xen-receive" subcommand (RelayReceiver).
	Receiver []string
	// ConsoleDir is where xenconsoled writes a domain's console log
	// (guest-NAME.log, with xenconsoled --log=guest); default
	// /var/log/xen/console. A machine's MachineSpec.ConsoleLog receives the
	// lines appended there.
	ConsoleDir string
	// Version is Xen's version for Info (Probe reads it from xl info).
	Version string
	// Xenstore is what RecoverDomain acknowledges a suspend request with
	// when a failed live save left a domain suspended; default
	// ExecXenstore{} (dom0's xenstore-read and xenstore-write).
	Xenstore Xenstore
}

// Hypervisor is Xen, driven through xl, behind realbackend's hypervisor
// port. It runs in dom0.
type Hypervisor struct {
	cfg Config
	xl  XL
}

var (
	_ hv.Hypervisor   = (*Hypervisor)(nil)
	_ hv.FileRestorer = (*Hypervisor)(nil)
	_ hv.Machine      = (*Machine)(nil)
	_ hv.FileSaver    = (*Machine)(nil)
)

// New returns the backend for cfg and writes its vif and block scripts into
// cfg.Dir.
func New(cfg Config) (*Hypervisor, error) {
	if cfg.XL == "" {
		cfg.XL = DefaultXL
	}
	if cfg.Runner == nil {
		cfg.Runner = ExecRunner{Path: cfg.XL}
	}
	if cfg.Xenstore == nil {
		cfg.Xenstore = ExecXenstore{}
	}
	if cfg.ConsoleDir == "" {
		cfg.ConsoleDir = "/var/log/xen/console"
	}
	if err := checkPath("xen runtime dir", cfg.Dir); err != nil {
		return nil, err
	}
	if len(cfg.Receiver) == 0 {
		return nil, errors.New("xenbackend: Config.Receiver (the live-snapshot receiver command) is required")
	}
	if err := os.WriteFile(filepath.Join(cfg.Dir, "vif-vnsnap"), []byte(VifScript), 0o755); err != nil {
		return nil, fmt.Errorf("xenbackend: vif script: %w", err)
	}
	if err := os.WriteFile(filepath.Join(cfg.Dir, "block-vnsnap"), []byte(BlockScript), 0o755); err != nil {
		return nil, fmt.Errorf("xenbackend: block script: %w", err)
	}
	return &Hypervisor{cfg: cfg, xl: XL{R: cfg.Runner}}, nil
}

// Probe reads Xen's version from "xl info" (xen_major.xen_minor.xen_extra).
func Probe(ctx context.Context, r Runner) (string, error) {
	out, err := r.Run(ctx, Command{Args: []string{"info"}})
	if err != nil {
		return "", err
	}
	f := map[string]string{}
	for _, l := range strings.Split(string(out), "\n") {
		k, v, ok := strings.Cut(l, ":")
		if ok {
			f[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	if f["xen_major"] == "" || f["xen_minor"] == "" {
		return "", fmt.Errorf("xl info: no xen_major/xen_minor in %q", firstLine(out))
	}
	return f["xen_major"] + "." + f["xen_minor"] + f["xen_extra"], nil
}

// Info names Xen, its version and ImageFormat; Xen has no machine types.
func (h *Hypervisor) Info() hv.Info {
	return hv.Info{Name: "xen", Version: h.cfg.Version, ImageFormat: ImageFormat}
}

// Machine is one PVH domU behind the port. It is safe for concurrent use.
type Machine struct {
	h    *Hypervisor
	spec hv.MachineSpec
	cfg  string // its domain config file

	mu     sync.Mutex
	id     DomID
	hasID  bool // id is the domain's (attach got it)
	relay  *relay
	paused bool      // paused by us (xl pause, restore -p, save -p)
	held   *liveHold // a live save handed back later (see Save)
	killed bool
	disk   string   // the image the domain runs on (spec.Disk, then FreezeDisk's overlays)
	loop   *loopDev // the loop device on it, held until Kill
	// freezeTo is the overlay of a FreezeDisk of a paused domain, made at
	// the next stop-and-copy save's snapshot point or by Resume.
	freezeTo string

	console *consoleFollower
}

// Start writes the domain config and runs xl create; the domain runs when
// Start returns, its vif joined to spec.NetSocket.
func (h *Hypervisor) Start(ctx context.Context, spec hv.MachineSpec) (hv.Machine, error) {
	m, err := h.newMachine(spec)
	if err != nil {
		return nil, err
	}
	if err := h.xl.Create(ctx, m.cfg); err != nil {
		h.cleanupName(spec.Name)
		m.loop.detach()
		return nil, fmt.Errorf("start %s: %w", spec.Name, err)
	}
	if err := m.attach(ctx); err != nil {
		m.Kill()
		h.cleanupName(spec.Name)
		return nil, fmt.Errorf("start %s: %w", spec.Name, err)
	}
	m.releaseNet()
	return m, nil
}

// Restore rebuilds the domain from the image read from r with "xl restore
// -p", from a config file of ours (the config inside the image is not
// trusted), and leaves it paused. The image is parsed as it passes to xl, so
// a malformed one fails here with a StreamError, and xl reads no byte past
// its end.
func (h *Hypervisor) Restore(ctx context.Context, spec hv.MachineSpec, r io.Reader) (hv.Machine, error) {
	return h.restore(ctx, spec, func(pw io.Writer) error {
		_, err := ReadStream(io.TeeReader(r, pw), nil)
		if err != nil {
			err = fmt.Errorf("image: %w", err)
		}
		return err
	})
}

// FileFormat is PageFileFormat: the files SaveFile writes.
func (h *Hypervisor) FileFormat() string { return PageFileFormat }

// RestoreFile is Restore from a page file (PageFileFormat): the file is
// checked (OpenPageFile), then the stream it holds is rebuilt and fed to xl
// restore, parsed again on its way as Restore parses its image.
func (h *Hypervisor) RestoreFile(ctx context.Context, spec hv.MachineSpec, open func() (*os.File, error)) (hv.Machine, error) {
	var openErr error
	m, err := h.restore(ctx, spec, func(pw io.Writer) error {
		f, err := open()
		if err != nil {
			openErr = err
			return err
		}
		fi, err := f.Stat()
		if err != nil {
			return fmt.Errorf("image: %w", err)
		}
		p, err := OpenPageFile(f, fi.Size())
		if err != nil {
			return fmt.Errorf("image: %w", err)
		}
		pr, ppw := io.Pipe()
		go func() { _, err := p.WriteStream(ppw); ppw.CloseWithError(err) }()
		_, err = ReadStream(io.TeeReader(bufio.NewReaderSize(pr, 1<<20), pw), nil)
		pr.CloseWithError(errors.New("stream parsed"))
		if err != nil {
			return fmt.Errorf("image: rebuilt stream: %w", err)
		}
		return nil
	})
	if openErr != nil { // restore failed with it and left nothing running
		return nil, openErr
	}
	return m, err
}

// restore runs xl restore -p of our config with the stream that feed writes
// (feed runs in a goroutine of its own; its error fails the restore).
func (h *Hypervisor) restore(ctx context.Context, spec hv.MachineSpec, feed func(io.Writer) error) (hv.Machine, error) {
	m, err := h.newMachine(spec)
	if err != nil {
		return nil, err
	}
	pr, pw := io.Pipe()
	parsed := make(chan error, 1)
	go func() {
		err := feed(pw)
		pw.CloseWithError(err)
		parsed <- err
	}()
	err = h.xl.Restore(ctx, m.cfg, stdinPath, pr)
	pr.CloseWithError(errors.New("xl restore ended"))
	if perr := <-parsed; perr != nil {
		err = errors.Join(perr, err)
	}
	if err != nil {
		h.cleanupName(spec.Name)
		m.loop.detach()
		return nil, fmt.Errorf("restore %s: %w", spec.Name, err)
	}
	m.paused = true
	if err := m.attach(ctx); err != nil {
		m.Kill()
		h.cleanupName(spec.Name)
		return nil, fmt.Errorf("restore %s: %w", spec.Name, err)
	}
	return m, nil
}

// stdinPath is the file xl restore opens to read its stdin. Not /dev/stdin:
// that is a symlink udev or an init makes, and a minimal dom0 (the test
// harness's) has none; procfs is there wherever xl runs.
const stdinPath = "/proc/self/fd/0"

func (h *Hypervisor) newMachine(spec hv.MachineSpec) (*Machine, error) {
	if spec.Disk != "" && spec.Kernel == "" {
		return nil, fmt.Errorf("machine %s: a PVH domU boots from a kernel: give its guest a kernel (and initrd) beside its disk: %w", spec.Name, ErrBadValue)
	}
	dc := DomainConfig{
		Name: spec.Name, Kernel: spec.Kernel, Ramdisk: spec.Initrd,
		// A PVH domain's console is hvc0; the last console= wins.
		Extra:     strings.TrimSpace(spec.Append + " console=hvc0"),
		MemoryMiB: spec.MemoryMiB, VCPUs: max(spec.VCPUs, 1),
	}
	if spec.NetSocket != "" {
		dc.MAC, dc.VifScript = spec.MAC, filepath.Join(h.cfg.Dir, "vif-vnsnap")
	}
	m := &Machine{h: h, spec: spec, cfg: filepath.Join(h.cfg.Dir, spec.Name+".cfg"), disk: spec.Disk}
	if spec.Disk != "" {
		if err := checkPath("disk", spec.Disk); err != nil {
			return nil, fmt.Errorf("machine %s: %w", spec.Name, err)
		}
		l, err := attachLoop(spec.Disk)
		if err != nil {
			return nil, fmt.Errorf("machine %s: %w", spec.Name, err)
		}
		m.loop = l
		dc.Disk, dc.DiskScript = l.path, filepath.Join(h.cfg.Dir, "block-vnsnap")
	}
	text, err := dc.Render()
	if err == nil {
		err = os.WriteFile(m.cfg, []byte(text), 0o644)
	}
	if err != nil {
		m.loop.detach()
		return nil, fmt.Errorf("machine %s: %w", spec.Name, err)
	}
	return m, nil
}

// cleanupName destroys whatever domain a failed create or restore left under
// name: by name, as its ID may be what failed to come back, and until xl
// lists none (a few tries: the failure may be xl's own).
func (h *Hypervisor) cleanupName(name string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for try := 0; try < 3; try++ {
		doms, err := h.xl.List(ctx)
		if err == nil && !slices.ContainsFunc(doms, func(d Domain) bool { return d.Name == name }) {
			return
		}
		_ = h.xl.DestroyName(ctx, name)
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

// attach finds the new domain's ID, starts its console follower and joins
// its vif to the switch port (held: see releaseNet).
func (m *Machine) attach(ctx context.Context) error {
	id, err := m.h.xl.DomIDOf(ctx, m.spec.Name)
	if err != nil {
		return err
	}
	m.mu.Lock()
	m.id, m.hasID = id, true
	m.mu.Unlock()
	if m.spec.ConsoleLog != nil {
		m.console = followConsole(filepath.Join(m.h.cfg.ConsoleDir, "guest-"+m.spec.Name+".log"), m.spec.ConsoleLog)
	}
	if m.spec.NetSocket == "" {
		return nil
	}
	r, err := startRelay(fmt.Sprintf("vif%d.0", id), m.spec.NetSocket)
	if err != nil {
		return err
	}
	m.mu.Lock()
	m.relay = r
	m.mu.Unlock()
	return nil
}

func (m *Machine) holdNet() {
	if m.relay != nil {
		m.relay.hold()
	}
}

func (m *Machine) releaseNet() {
	if m.relay != nil {
		m.relay.release()
	}
}

// DomID returns the machine's domain ID.
func (m *Machine) DomID() DomID {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.id
}

// Pause pauses the domain (xl pause) unless it is paused already: Xen counts
// pauses, so the machine remembers its own.
func (m *Machine) Pause(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.paused || m.held != nil {
		return nil
	}
	m.holdNet()
	if err := m.h.xl.Pause(ctx, m.id); err != nil {
		m.releaseNet()
		return fmt.Errorf("pause %s: %w", m.spec.Name, err)
	}
	m.paused = true
	return nil
}

// Resume lets the domain run: a live save still holding it is handed back
// (xl resumes its source domain), a pause of ours is undone (xl unpause). A
// running domain is left alone.
func (m *Machine) Resume(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.held != nil {
		if err := m.handBack(ctx); err != nil {
			return fmt.Errorf("resume %s: %w", m.spec.Name, err)
		}
	}
	// A freeze no save made: the domain was paused since FreezeDisk.
	ferr := m.freezePending(ctx)
	if m.paused {
		if err := m.h.xl.Unpause(ctx, m.id); err != nil {
			return errors.Join(fmt.Errorf("resume %s: %w", m.spec.Name, err), ferr)
		}
		m.paused = false
	}
	m.releaseNet()
	if ferr != nil {
		return fmt.Errorf("resume %s: it runs, but: %w", m.spec.Name, ferr)
	}
	return nil
}

// Kill destroys the domain, and any NAME--migratedaway a failed live save
// left, and stops its relay. It is safe to call more than once.
func (m *Machine) Kill() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.killed {
		return
	}
	m.killed = true
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if m.held != nil {
		m.held.abandon()
		m.held = nil
	}
	if m.hasID {
		if _, ok, err := m.h.xl.Lookup(ctx, m.id); err == nil && ok {
			_ = m.h.xl.Destroy(ctx, m.id)
		}
	}
	if away, err := m.h.xl.MigratedAwayOf(ctx, m.spec.Name); err == nil {
		for _, d := range away {
			_ = m.h.xl.Destroy(ctx, d.ID)
		}
	}
	if m.relay != nil {
		_ = m.relay.close()
	}
	if m.console != nil {
		m.console.stop()
	}
	m.loop.detach() // after the domain: blkback has let it go
	_ = os.Remove(m.cfg)
}

// Save writes the domain's image to w and leaves the machine paused.
//
// Live (o.Live): through xl's own live migration, to our receiver (see
// saveLive). Stop-and-copy: "xl save -p" to a file in the runtime dir, then
// copied to w. A domain must run to suspend itself, so a machine paused by
// Pause is unpaused for the save (its relay drops what it sends then, as
// from a paused VM); xl leaves it paused afterwards, and AtSnapshotPoint is
// called then.
func (m *Machine) Save(ctx context.Context, w io.Writer, o hv.SaveOptions) (hv.SaveStats, error) {
	o.Progress = nil // Save's bytes pass through w
	if o.Live {
		return m.saveLive(ctx, w, nil, o)
	}
	cw := &countWriter{w: w}
	return m.saveStopped(ctx, o, func(r io.Reader) (int64, StreamInfo, error) {
		info, err := ReadStream(io.TeeReader(r, cw), nil)
		return cw.n, info, err
	})
}

// SaveFile is Save into f as a page file (PageFileFormat): live, the
// receiver writes the stream into f as it arrives; stop-and-copy, xl's save
// file is converted into f once the domain is paused.
func (m *Machine) SaveFile(ctx context.Context, f *os.File, o hv.SaveOptions) (hv.SaveStats, error) {
	if o.Live {
		return m.saveLive(ctx, nil, f, o)
	}
	return m.saveStopped(ctx, o, func(r io.Reader) (int64, StreamInfo, error) {
		st, err := WritePageFile(r, f, nil)
		return st.Size, st.Stream, err
	})
}

// saveStopped is the stop-and-copy save: xl save -p into a file, which emit
// then copies (returning the bytes it wrote).
func (m *Machine) saveStopped(ctx context.Context, o hv.SaveOptions, emit func(io.Reader) (int64, StreamInfo, error)) (hv.SaveStats, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.held != nil {
		return hv.SaveStats{}, fmt.Errorf("save %s: a live save still holds the domain (Resume first)", m.spec.Name)
	}
	start := time.Now()
	m.holdNet()
	if m.paused {
		if err := m.h.xl.Unpause(ctx, m.id); err != nil {
			return hv.SaveStats{}, fmt.Errorf("save %s: %w", m.spec.Name, err)
		}
		m.paused = false
	}
	file := filepath.Join(m.h.cfg.Dir, m.spec.Name+".save")
	defer os.Remove(file)
	// xl writes the save file itself: its growth is the save's progress
	// (the conversion that follows is local and not counted again).
	stopWatch := watchSize(file, o.Progress)
	err := m.h.xl.Save(ctx, m.id, file, LeavePaused)
	stopWatch()
	if d, ok, lerr := m.h.xl.Lookup(context.WithoutCancel(ctx), m.id); lerr == nil && ok && d.Paused() {
		m.paused = true // xl save -p paused it (even when it failed later)
	} else if err != nil {
		// A failed save resumed the domain: pause it again, as the
		// contract wants a machine that was paused to stay paused.
		if perr := m.h.xl.Pause(context.WithoutCancel(ctx), m.id); perr == nil {
			m.paused = true
		}
	}
	if err != nil {
		return hv.SaveStats{}, fmt.Errorf("save %s: %w", m.spec.Name, err)
	}
	if !m.paused {
		return hv.SaveStats{}, fmt.Errorf("save %s: xl save -p left domain %d running", m.spec.Name, m.id)
	}
	// The domain suspended itself: its snapshot point, and its disk's.
	if err := m.freezePending(ctx); err != nil {
		return hv.SaveStats{}, fmt.Errorf("save %s: %w", m.spec.Name, err)
	}
	if o.AtSnapshotPoint != nil {
		if err := o.AtSnapshotPoint(ctx); err != nil {
			return hv.SaveStats{}, fmt.Errorf("save %s: %w", m.spec.Name, err)
		}
	}
	f, err := os.Open(file)
	if err != nil {
		return hv.SaveStats{}, fmt.Errorf("save %s: %w", m.spec.Name, err)
	}
	defer f.Close()
	n, info, err := emit(bufio.NewReaderSize(f, 1<<20))
	if err != nil {
		return hv.SaveStats{}, fmt.Errorf("save %s: %w", m.spec.Name, err)
	}
	return hv.SaveStats{Bytes: n, Passes: 1, MemoryCopied: info.Pages * pageSize, Total: time.Since(start)}, nil
}

// progressReader reports the bytes read through it.
type progressReader struct {
	r      io.Reader
	report func(int64)
}

func (p progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if n > 0 {
		p.report(int64(n))
	}
	return n, err
}

// watchSize reports the growth of the file at path every 100 ms until stop
// is called, and once more then; with report nil it does nothing.
func watchSize(path string, report func(int64)) (stop func()) {
	if report == nil {
		return func() {}
	}
	done, finished := make(chan struct{}), make(chan struct{})
	var last int64
	check := func() {
		if fi, err := os.Stat(path); err == nil && fi.Size() > last {
			report(fi.Size() - last)
			last = fi.Size()
		}
	}
	go func() {
		defer close(finished)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				check()
				return
			case <-t.C:
				check()
			}
		}
	}()
	return func() { close(done); <-finished }
}

// countWriter counts what passes to w.
type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
