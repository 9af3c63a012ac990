package xentest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// CPUFlags is the -cpu model: each removed feature avoids a crash of Xen or
// dom0 seen under TCG.
const CPUFlags = "max,-smap,-smep,-rdtscp,-avx,-avx2,-fma,-f16c"

// BootConfig says how to boot the environment. The zero value of every field
// but Initrd selects a default.
type BootConfig struct {
	// Initrd is the dom0 initramfs (BuildDom0Initrd). Required.
	Initrd string
	// MemMiB is the machine's memory; default 3072.
	MemMiB int
	// Dom0MemMiB is dom0's memory; default 1536. The rest is for domUs.
	Dom0MemMiB int
	// CPUs is the number of emulated CPUs; default 2.
	CPUs int
	// XenArgs and Dom0Args are appended to the hypervisor's and dom0's
	// command lines.
	XenArgs, Dom0Args []string
	// Stall bounds how long the console may stay silent during a Wait;
	// default 5 minutes (Xen and dom0 print steadily while they boot, and a
	// script should print while it works).
	Stall time.Duration
	// Log, if set, receives every console line as it arrives.
	Log io.Writer
	// Nice is the niceness QEMU runs at, so that it yields the shared cores;
	// default 10.
	Nice int
	// Monitor, if set, is the path of a unix socket where QEMU serves its
	// human monitor (Machine.Monitor).
	Monitor string
	// Diag, if set, is how long the console may be silent before the
	// machine's state is written to Log (diag.go); it does not change the
	// stall deadline.
	Diag time.Duration
	// QEMUArgs are appended to QEMU's command line (experiments: -icount).
	QEMUArgs []string
	// Wake is how long the console may be silent, once Xen has handed the
	// serial input to dom0, before the harness wakes the machine; default
	// 15 s, negative for never. A wake is Ctrl-A six times on the serial
	// line: Xen eats them (three switch the input to Xen, three back to
	// dom0; nothing reaches dom0) and the UART's interrupt wakes a vCPU that
	// QEMU 7.2's TCG left halted with an APIC timer interrupt pending (the
	// package doc). Xen's two "Serial input to" lines in answer do not
	// count as console output for the stall deadline.
	Wake time.Duration
}

// Machine is a running Xen-in-QEMU machine. Its console is read into lines
// as it arrives; Wait consumes them in order.
type Machine struct {
	cmd   *exec.Cmd
	in    io.WriteCloser // the serial console's input
	stall time.Duration
	start time.Time

	monitor   string        // BootConfig.Monitor
	diagAfter time.Duration // BootConfig.Diag
	wakeAfter time.Duration // BootConfig.Wake
	log       io.Writer     // BootConfig.Log, written under mu
	sendMu    sync.Mutex    // one writer of the serial input at a time

	mu       sync.Mutex
	lines    []string
	last     time.Time // when the console last printed
	exited   bool
	exitErr  error
	notify   chan struct{} // closed and replaced on every change
	next     int           // the next line Wait looks at
	toDom0   bool          // Xen's last "Serial input to" line named dom0
	seenDom0 bool          // Xen has given the serial input to dom0 once
	wakes    int           // wakes sent
	killOnce sync.Once
}

// Args returns the QEMU command line (after the wrapper) for cfg.
//
// Xen switches FPU state eagerly (spec-ctrl=eager-fpu): with its default on
// this CPU model, lazy switching (CR0.TS and #NM), dom0's processes compute
// wrong results as soon as a domU runs beside them under QEMU 7.2's TCG
// (libxc's XZ decoder rejects a kernel whose file is intact, ld.so and
// busybox segfault, a second domU triple-faults at boot from a corrupted
// kernel): the guest's and dom0's SSE registers leak into each other.
func (e Env) Args(cfg BootConfig) []string {
	xenArgs := append([]string{
		"console=com1", "com1=115200,8n1", "loglvl=all", "guest_loglvl=all",
		fmt.Sprintf("dom0_mem=%dM,max:%dM", cfg.Dom0MemMiB, cfg.Dom0MemMiB), "dom0_max_vcpus=1", "noreboot=0",
		"spec-ctrl=eager-fpu",
	}, cfg.XenArgs...)
	dom0Args := append([]string{"console=hvc0", "earlyprintk=xen", "rdinit=/init", "loglevel=4"}, cfg.Dom0Args...)
	// -initrd takes "FILE ARGS" modules separated by commas; a comma
	// inside the arguments is doubled.
	mod := func(file string, args []string) string {
		return strings.ReplaceAll(file+" "+strings.Join(args, " "), ",", ",,")
	}
	args := []string{
		"-accel", "tcg", "-cpu", CPUFlags,
		"-m", strconv.Itoa(cfg.MemMiB), "-smp", strconv.Itoa(cfg.CPUs),
		"-nodefaults", "-no-reboot", "-display", "none", "-serial", "stdio",
		"-kernel", e.Xen(), "-append", strings.Join(xenArgs, " "),
		"-initrd", mod(e.Kernel(), dom0Args) + "," + mod(cfg.Initrd, nil),
	}
	if cfg.Monitor != "" {
		// Named threads ("CPU 0/TCG") for the diagnostics' CPU use.
		args = append(args, "-name", "xen,debug-threads=on",
			"-monitor", "unix:"+strings.ReplaceAll(cfg.Monitor, ",", ",,")+",server=on,wait=off")
	}
	return append(args, cfg.QEMUArgs...)
}

func (c *BootConfig) defaults() {
	if c.MemMiB == 0 {
		c.MemMiB = 3072
	}
	if c.Dom0MemMiB == 0 {
		c.Dom0MemMiB = 1536
	}
	if c.CPUs == 0 {
		c.CPUs = 2
	}
	if c.Stall == 0 {
		c.Stall = 5 * time.Minute
	}
	if c.Nice == 0 {
		c.Nice = 10
	}
	if c.Wake == 0 {
		c.Wake = 15 * time.Second
	}
}

// Boot starts QEMU on the environment. QEMU runs in its own process group;
// the caller must call Kill (a test: t.Cleanup(m.Kill)), which also works
// after QEMU has exited.
func Boot(env Env, cfg BootConfig) (*Machine, error) {
	if cfg.Initrd == "" {
		return nil, errors.New("xentest boot: BootConfig.Initrd is required")
	}
	cfg.defaults()
	args := append([]string{"-n", strconv.Itoa(cfg.Nice), env.QEMU()}, env.Args(cfg)...)
	cmd := exec.Command("nice", args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("xentest boot: %w", err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("xentest boot: %w", err)
	}
	cmd.Stderr = cmd.Stdout // one stream: QEMU's own errors show in the console
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("xentest boot: %w", err)
	}
	now := time.Now()
	m := &Machine{cmd: cmd, in: in, stall: cfg.Stall, start: now, last: now, notify: make(chan struct{}),
		monitor: cfg.Monitor, diagAfter: cfg.Diag, wakeAfter: cfg.Wake, log: cfg.Log}
	go m.read(out, cfg.Log)
	if cfg.Diag > 0 {
		go m.watch()
	}
	if cfg.Wake > 0 {
		go m.wake()
	}
	return m, nil
}

// read collects console lines until QEMU closes its output, then reaps it.
// Any byte counts as progress, also inside a line (xl's save and restore
// draw their progress bars with carriage returns only), but Xen's lines in
// answer to a wake (wake.go) do not.
func (m *Machine) read(r io.Reader, log io.Writer) {
	buf := make([]byte, 64<<10)
	var partial []byte
	for {
		n, err := r.Read(buf)
		if n > 0 {
			m.mu.Lock()
			partial = append(partial, buf[:n]...)
			progress := buf[n-1] != '\n' // a line's first bytes, or a progress bar's
			for {
				i := bytes.IndexByte(partial, '\n')
				if i < 0 && len(partial) < 1<<20 {
					break
				}
				if i < 0 {
					i = len(partial) - 1
				}
				line := strings.TrimRight(string(partial[:i+1]), "\r\n")
				partial = partial[i+1:]
				if log != nil {
					fmt.Fprintln(log, line)
				}
				m.lines = append(m.lines, line)
				if to, ok := serialSwitch(line); ok {
					m.toDom0 = to
					m.seenDom0 = m.seenDom0 || to
				} else {
					progress = true
				}
			}
			if progress {
				m.last = time.Now()
			}
			m.changed()
			m.mu.Unlock()
		}
		if err != nil {
			break
		}
	}
	err := m.cmd.Wait()
	m.mu.Lock()
	if len(partial) > 0 {
		m.lines = append(m.lines, strings.TrimRight(string(partial), "\r\n"))
	}
	m.exited, m.exitErr = true, err
	m.changed()
	m.mu.Unlock()
}

func (m *Machine) changed() {
	close(m.notify)
	m.notify = make(chan struct{})
}

// ErrStalled reports a console silent for longer than BootConfig.Stall.
var ErrStalled = errors.New("xen console stalled")

// ErrExited reports that QEMU exited before the awaited marker.
var ErrExited = errors.New("qemu exited")

// ErrFailed reports a failure line on the console: dom0's init printed
// MarkerFail, or Xen or dom0's kernel panicked.
var ErrFailed = errors.New("xen machine failed")

// Wait returns the first console line not yet consumed that contains
// marker, consuming it and every line before it. It fails with ErrFailed on
// a failure line, ErrExited when QEMU ends, ErrStalled when the console is
// silent for BootConfig.Stall, or ctx's error.
func (m *Machine) Wait(ctx context.Context, marker string) (string, error) {
	for {
		m.mu.Lock()
		for m.next < len(m.lines) {
			line := m.lines[m.next]
			m.next++
			if strings.Contains(line, marker) {
				m.mu.Unlock()
				return line, nil
			}
			if failed(line) {
				m.mu.Unlock()
				return "", fmt.Errorf("waiting for %q: %w: %s", marker, ErrFailed, line)
			}
		}
		exited, exitErr, silent, ch := m.exited, m.exitErr, time.Since(m.last), m.notify
		m.mu.Unlock()
		if exited {
			return "", fmt.Errorf("waiting for %q: %w (%v)", marker, ErrExited, exitErr)
		}
		if silent >= m.stall {
			return "", fmt.Errorf("waiting for %q: %w: no output for %v", marker, ErrStalled, silent.Round(time.Second))
		}
		t := time.NewTimer(m.stall - silent)
		select {
		case <-ch:
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return "", fmt.Errorf("waiting for %q: %w", marker, ctx.Err())
		}
		t.Stop()
	}
}

// Send writes s to the serial console. Xen passes serial input to dom0's
// console (hvc0), where init's stdin is; dom0's tty echoes it unless the
// script runs "stty -echo".
func (m *Machine) Send(s string) error {
	m.sendMu.Lock()
	defer m.sendMu.Unlock()
	if _, err := io.WriteString(m.in, s); err != nil {
		return fmt.Errorf("xen console send: %w", err)
	}
	return nil
}

// failed reports a console line that ends the machine's usefulness: dom0's
// init failing, Xen panicking, or dom0's kernel panicking.
func failed(line string) bool {
	for _, p := range []string{MarkerFail, "Panic on CPU", "Kernel panic - not syncing"} {
		if strings.Contains(line, p) {
			return true
		}
	}
	return false
}

// Lines returns a copy of every console line so far.
func (m *Machine) Lines() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.lines...)
}

// Tail returns the last n console lines joined, for error messages.
func (m *Machine) Tail(n int) string {
	l := m.Lines()
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

// Uptime is the time since Boot.
func (m *Machine) Uptime() time.Duration { return time.Since(m.start) }

// Kill ends QEMU's whole process group and waits for it to be reaped. It is
// safe to call more than once and after QEMU has exited.
func (m *Machine) Kill() {
	m.killOnce.Do(func() {
		if m.cmd.Process != nil {
			_ = syscall.Kill(-m.cmd.Process.Pid, syscall.SIGKILL)
		}
	})
	m.mu.Lock()
	ch, exited := m.notify, m.exited
	m.mu.Unlock()
	for !exited {
		<-ch
		m.mu.Lock()
		ch, exited = m.notify, m.exited
		m.mu.Unlock()
	}
}

// Exited reports whether QEMU has ended.
func (m *Machine) Exited() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.exited
}
