package xentest

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// This file is the harness's view of a machine whose console has fallen
// silent: QEMU's human monitor (HMP) on a unix socket, QEMU's own CPU use,
// and, once a run, two pokes to see what wakes the machine (input on the
// serial line, then an NMI). Its lines go to BootConfig.Log, marked
// DiagPrefix; they are not console lines and do not feed the stall deadline.

// DiagPrefix marks the harness's diagnostic lines in BootConfig.Log.
const DiagPrefix = "XENTEST-DIAG "

// hmpPrompt ends every answer of QEMU's human monitor.
const hmpPrompt = "(qemu) "

// ansiEscape matches the terminal sequences HMP's line editor echoes.
var ansiEscape = regexp.MustCompile("\x1b\\[[0-9;]*[A-Za-z]")

// Monitor runs one command on QEMU's human monitor (BootConfig.Monitor)
// and returns its answer without the echoed command and the prompt.
func (m *Machine) Monitor(cmd string) (string, error) {
	if m.monitor == "" {
		return "", fmt.Errorf("xen monitor %q: no monitor socket (BootConfig.Monitor)", cmd)
	}
	c, err := net.DialTimeout("unix", m.monitor, 10*time.Second)
	if err != nil {
		return "", fmt.Errorf("xen monitor %q: %w", cmd, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	r := bufio.NewReader(c)
	if _, err := readPrompt(r); err != nil {
		return "", fmt.Errorf("xen monitor %q: greeting: %w", cmd, err)
	}
	if _, err := fmt.Fprintf(c, "%s\n", cmd); err != nil {
		return "", fmt.Errorf("xen monitor %q: %w", cmd, err)
	}
	out, err := readPrompt(r)
	if err != nil {
		return out, fmt.Errorf("xen monitor %q: %w", cmd, err)
	}
	out = strings.ReplaceAll(ansiEscape.ReplaceAllString(out, ""), "\r", "")
	// The first line is the echoed command.
	if i := strings.IndexByte(out, '\n'); i >= 0 {
		out = out[i+1:]
	}
	return strings.TrimRight(out, "\n"), nil
}

// readPrompt reads up to and without the next HMP prompt.
func readPrompt(r *bufio.Reader) (string, error) {
	var b strings.Builder
	for {
		c, err := r.ReadByte()
		if err != nil {
			return b.String(), err
		}
		b.WriteByte(c)
		if s := b.String(); strings.HasSuffix(s, hmpPrompt) {
			return strings.TrimSuffix(s, hmpPrompt), nil
		}
	}
}

// diagLog writes lines to the boot's log, each marked DiagPrefix.
func (m *Machine) diagLog(format string, args ...any) {
	if m.log == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, l := range strings.Split(fmt.Sprintf(format, args...), "\n") {
		fmt.Fprintln(m.log, DiagPrefix+l)
	}
}

// threadTimes returns the CPU time (utime+stime, in clock ticks) of each
// thread of process pid, keyed "tid name".
func threadTimes(pid int) map[string]int64 {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stat", pid))
	out := map[string]int64{}
	for _, p := range tasks {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		s := string(b)
		open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || end < open {
			continue
		}
		tid := strings.TrimSpace(s[:open])
		f := strings.Fields(s[end+1:])
		// After the name: state(0) ppid pgrp session tty tpgid flags minflt
		// cminflt majflt cmajflt utime(11) stime(12).
		if len(f) < 13 {
			continue
		}
		u, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		out[tid+" "+s[open+1:end]] = u + st
	}
	return out
}

// cpuUse samples QEMU's threads over d and returns one line per thread with
// its CPU use in percent of one core (clock ticks taken as 100 a second).
func (m *Machine) cpuUse(d time.Duration) string {
	if m.cmd.Process == nil {
		return "no process"
	}
	pid := m.cmd.Process.Pid
	a := threadTimes(pid)
	time.Sleep(d)
	b := threadTimes(pid)
	keys := make([]string, 0, len(b))
	for k := range b {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var total int64
	var lines []string
	for _, k := range keys {
		dt := b[k] - a[k]
		total += dt
		if dt > 0 || strings.Contains(k, "CPU") {
			lines = append(lines, fmt.Sprintf("  thread %s: %.0f%%", k, float64(dt)/d.Seconds()))
		}
	}
	return fmt.Sprintf("qemu pid %d over %v: %.0f%% of a core\n%s", pid, d, float64(total)/d.Seconds(), strings.Join(lines, "\n"))
}

// dump logs what the machine is doing: QEMU's CPU use, then the monitor's
// view of the vCPUs, their registers and the interrupt controllers.
func (m *Machine) dump(why string) {
	m.diagLog("---- %s (uptime %v, console silent %v)", why, m.Uptime().Round(time.Second), m.silent().Round(time.Second))
	m.diagLog("%s", m.cpuUse(5*time.Second))
	if m.monitor == "" {
		return
	}
	for _, cmd := range []string{"info cpus", "info registers -a", "info lapic", "info pic", "info irq"} {
		out, err := m.Monitor(cmd)
		if err != nil {
			m.diagLog("%s: %v", cmd, err)
			continue
		}
		if strings.HasPrefix(cmd, "info registers") {
			out = dropLines(out, "FPR", "XMM", "DR", "ES =", "FS =", "GS =", "DS =", "LDT=", "TR =", "FCW=")
		}
		m.diagLog("%s:\n%s", cmd, out)
	}
	// A second look at the instruction pointers: do they move?
	if out, err := m.Monitor("info registers -a"); err == nil {
		var rips []string
		for _, l := range strings.Split(out, "\n") {
			if strings.HasPrefix(l, "RIP=") || strings.HasPrefix(l, "EIP=") || strings.HasPrefix(l, "CPU#") {
				rips = append(rips, l)
			}
		}
		m.diagLog("again: %s", strings.Join(rips, " | "))
	}
}

// dropLines returns s without the lines that start with any of prefixes.
func dropLines(s string, prefixes ...string) string {
	var keep []string
	for _, l := range strings.Split(s, "\n") {
		drop := false
		for _, p := range prefixes {
			drop = drop || strings.HasPrefix(l, p)
		}
		if !drop {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}

func (m *Machine) silent() time.Duration {
	m.mu.Lock()
	defer m.mu.Unlock()
	return time.Since(m.last)
}

// watch runs until QEMU exits. When the console has been silent for
// m.diagAfter, it dumps the machine's state, once per silence; a silence
// that lasts 30 s past that gets, once per silence, Xen's debug keys on the
// serial line (Ctrl-A three times switches the serial input to Xen; then
// 'a' timer queues, 'r' run queues, 't' clock info, 'd' registers; Ctrl-A
// three times gives it back to dom0): an interrupt from the UART, and Xen's
// own account if it wakes (it did: the silence is a halted vCPU whose
// pending APIC timer interrupt QEMU 7.2's TCG does not deliver, see the
// package doc, and a UART interrupt wakes it). A silence that lasts another 60 s gets, once a
// run, an NMI on every CPU. Each poke is followed by a dump.
func (m *Machine) watch() {
	var dumped, poked time.Time // m.last of the silence last dumped, poked
	nmi := false
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	for range tick.C {
		m.mu.Lock()
		last, exited := m.last, m.exited
		m.mu.Unlock()
		if exited {
			return
		}
		silent := time.Since(last)
		switch {
		case silent < m.diagAfter:
		case !dumped.Equal(last):
			dumped = last
			m.dump("console silent")
		case !poked.Equal(last) && silent >= m.diagAfter+30*time.Second:
			poked = last
			m.diagLog("---- poke: Xen debug keys a r t d on the serial line")
			if err := m.Send("\x01\x01\x01"); err != nil {
				m.diagLog("send: %v", err)
			}
			time.Sleep(2 * time.Second)
			_ = m.Send("a")
			time.Sleep(2 * time.Second)
			_ = m.Send("r")
			time.Sleep(2 * time.Second)
			_ = m.Send("t")
			time.Sleep(2 * time.Second)
			_ = m.Send("d")
			time.Sleep(2 * time.Second)
			_ = m.Send("\x01\x01\x01")
			time.Sleep(10 * time.Second)
			m.dump("after the serial poke")
		case poked.Equal(last) && !nmi && silent >= m.diagAfter+90*time.Second:
			nmi = true
			out, err := m.Monitor("nmi")
			m.diagLog("---- poke: nmi: %q %v", out, err)
			time.Sleep(10 * time.Second)
			m.dump("after the nmi")
		}
	}
}
