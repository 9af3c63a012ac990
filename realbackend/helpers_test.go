package realbackend

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/vnsnap/vnsnap/core"
	"github.com/vnsnap/vnsnap/core/cut"
	"github.com/vnsnap/vnsnap/qemubackend"
	"github.com/vnsnap/vnsnap/qemubackend/guestimg"
	"github.com/vnsnap/vnsnap/qemubackend/qemutest"
	"github.com/vnsnap/vnsnap/qemubackend/qemutest/progress"
	"github.com/vnsnap/vnsnap/vne"
	"github.com/vnsnap/vnsnap/vnet"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func requireQEMU(t *testing.T) *qemubackend.Host { return qemutest.RequireQEMU(t) }

// qvm returns the QEMU VM behind env's i-th machine.
func qvm(env *Env, i int) *qemubackend.VM { return env.Machine(i).(*qemubackend.Machine).VM() }

func guestImage(t *testing.T) guestimg.Image { return qemutest.GuestImage(t, "..") }

// shortDir returns a fresh directory with a short path (unix socket paths
// are limited to 107 bytes; t.TempDir's can be long), removed at cleanup.
func shortDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "vnsr-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// consoles writes every VM's console to a file per VM in dir and prints the
// tails when the test fails.
func consoles(t *testing.T, dir string) func(string) (w *os.File) {
	t.Helper()
	var files []*os.File
	t.Cleanup(func() {
		for _, f := range files {
			f.Close()
			if t.Failed() {
				b, _ := os.ReadFile(f.Name())
				t.Logf("console %s (tail, heartbeats left out):\n%s", filepath.Base(f.Name()), consoleTail(b, 3000))
			}
		}
	})
	return func(vm string) *os.File {
		f, err := os.Create(filepath.Join(dir, fmt.Sprintf("%s.%d.console", vm, len(files))))
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
		return f
	}
}

// consoleTail returns the last max bytes of a console log written by
// consoles, its heartbeat lines left out but for the last and a count: a
// guest that beats every 20 ms would fill any tail with them and hide the
// lines that say what went wrong.
func consoleTail(b []byte, max int) string {
	var keep []string
	var beats int
	var last string
	for _, l := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
		// "15:04:05.000000 HB 12": the host's stamp, then the line.
		if _, text, ok := strings.Cut(l, " "); ok && isHeartbeat(qemubackend.Line{Text: text}) {
			beats++
			last = l
			continue
		}
		keep = append(keep, l)
	}
	if last != "" {
		keep = append(keep, fmt.Sprintf("(%d heartbeats; the last: %s)", beats, last))
	}
	s := strings.Join(keep, "\n")
	if len(s) > max {
		s = "..." + s[len(s)-max:]
	}
	return s
}

const vneYAML = `name: trio
hosts:
  - name: h1
  - name: h2
vms:
  - name: a
    host: h1
    memory: %[1]dMiB
    ip: 10.0.0.1
    guest: {builtin: tcpstream, args: ["-bytes=%[2]d", "-progress=250ms"]}
  - name: b
    host: h1
    memory: %[1]dMiB
    ip: 10.0.0.2
    guest: {builtin: tcpstream, args: ["-bytes=%[2]d", "-progress=250ms"]}
  - name: c
    host: h2
    memory: %[1]dMiB
    ip: 10.0.0.3
    guest: {builtin: tcpstream, args: ["-bytes=%[2]d", "-progress=250ms"]}
`

// loadVNE writes the test VNE (three tcpstream VMs on two hosts) and loads it.
func loadVNE(t *testing.T, dir string, memMiB int, bytes int) *vne.VNE {
	t.Helper()
	return writeVNE(t, filepath.Join(dir, "trio.yaml"), fmt.Sprintf(vneYAML, memMiB, bytes))
}

// writeVNE writes a VNE file with text at path and loads it.
func writeVNE(t *testing.T, path, text string) *vne.VNE {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	v, err := vne.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// checkCut reads the frame logs of env's switches and checks the cut of
// epoch e.
func checkCut(t *testing.T, env *Env, e core.Epoch) cut.Result {
	t.Helper()
	paths, err := env.FrameLogs()
	if err != nil {
		t.Fatal(err)
	}
	return checkLogs(t, paths, e, env.NumVMs())
}

// checkLogs reads the frame logs at paths and checks the cut of epoch e of
// n VMs.
func checkLogs(t *testing.T, paths []string, e core.Epoch, n int) cut.Result {
	t.Helper()
	var rs []io.Reader
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		rs = append(rs, f)
	}
	recs, err := vnet.ReadLogs(rs...)
	if err != nil {
		t.Fatalf("read frame logs: %v", err)
	}
	ch := cut.NewChecker(e, n)
	for _, r := range recs {
		if err := ch.Observe(r); err != nil {
			t.Fatalf("checker: %v", err)
		}
	}
	return ch.Result()
}

// waitAll waits on every VM's console for a line with prefix, after line
// index from.
func waitAll(ctx context.Context, t *testing.T, env *Env, prefix string) []qemubackend.Line {
	t.Helper()
	var out []qemubackend.Line
	for i := 0; i < env.NumVMs(); i++ {
		vm := qvm(env, i)
		// A workload that failed prints no more: its failure ends the
		// wait, not the deadline.
		l, _, err := vm.Console.WaitFor(ctx, 0, func(l qemubackend.Line) bool {
			return strings.HasPrefix(l.Text, prefix) || failLine(l.Text)
		})
		if err != nil {
			t.Fatalf("%s: waiting for %q: %v%s", vm.Spec.Name, prefix, progress.Why(ctx, err), tail(vm.Stderr()))
		}
		if !strings.HasPrefix(l.Text, prefix) {
			t.Fatalf("%s: waiting for %q: %q", vm.Spec.Name, prefix, l.Text)
		}
		out = append(out, l)
	}
	return out
}

func tail(s string) string {
	s = strings.TrimSpace(s)
	if s == "" {
		return ""
	}
	if len(s) > 1000 {
		s = s[len(s)-1000:]
	}
	return "\nqemu stderr: " + s
}

// waitProgress waits until every VM reports having received data.
func waitProgress(ctx context.Context, t *testing.T, env *Env, minRx uint64) {
	t.Helper()
	for i := 0; i < env.NumVMs(); i++ {
		vm := qvm(env, i)
		_, _, err := vm.Console.WaitFor(ctx, 0, func(l qemubackend.Line) bool {
			var rx, tx uint64
			_, err := fmt.Sscanf(l.Text, "TCPSTREAM PROGRESS rx=%d tx=%d", &rx, &tx)
			return err == nil && rx >= minRx
		})
		if err != nil {
			t.Fatalf("%s: workload makes no progress: %v", vm.Spec.Name, progress.Why(ctx, err))
		}
	}
}

// noFail reports console lines with FAIL or panic.
func noFail(t *testing.T, env *Env, what string) {
	t.Helper()
	for i := 0; i < env.NumVMs(); i++ {
		for _, l := range qvm(env, i).Console.Lines() {
			if failLine(l.Text) {
				t.Errorf("%s %s console: %q", what, qvm(env, i).Spec.Name, l.Text)
			}
		}
	}
}

// failLine reports whether a console line says a guest program failed.
func failLine(s string) bool { return strings.Contains(s, "FAIL") || strings.Contains(s, "panic") }

func since(t time.Time) time.Duration { return time.Since(t).Round(time.Millisecond) }

// qcow2 creates an empty qcow2 image of size (qemu-img's form, "32M") at path.
func qcow2(t *testing.T, path, size string) {
	t.Helper()
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", path, size).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img: %v: %s", err, out)
	}
}

// bootDiskGuest boots VNE name with one built-in heartbeat guest "d" of
// memMiB on a fresh qcow2 disk base (of diskSize), its state in dir, and
// waits for its first heartbeat. It returns the VNE (closed when the test
// ends) with the options and the layout it was booted from.
func bootDiskGuest(ctx context.Context, t *testing.T, h *qemubackend.Host, img guestimg.Image, name string, memMiB int, dir, base, diskSize string) (*Env, Options, *Layout) {
	t.Helper()
	qcow2(t, base, diskSize)
	console := consoles(t, t.TempDir())
	o := Options{Hypervisor: qemubackend.NewHypervisor(h), Image: img, Dir: dir, Console: func(vm string) io.Writer { return console(vm) }}
	l := &Layout{
		Name:  name,
		Hosts: []HostLayout{{Name: "h1", Address: "127.0.0.1"}},
		VMs: []VMLayout{{
			Name: "d", MemoryMiB: memMiB, VCPUs: 1, Machine: h.Machine, MAC: qemubackend.MACFor("d"),
			Kernel: img.Kernel, Initrd: img.Initrd, Disk: base, Heartbeat: true,
			Append: guestimg.KernelArgs("", "", guestimg.Program{Name: "heartbeat", Args: []string{"-interval=20ms"}}),
		}},
	}
	env, err := BootLayout(ctx, l, nil, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { env.Close() })
	if _, _, err := qvm(env, 0).Console.WaitFor(ctx, 0, isHeartbeat); err != nil {
		t.Fatalf("no heartbeat: %v", progress.Why(ctx, err))
	}
	return env, o, l
}

// workloadContext returns a context derived from ctx for a wait on the
// workload of env's VMs: it ends after qemutest.Idle without a new line from
// the workload. The VMs print heartbeats and use CPU whether their workload
// moves or not, so ctx (QEMU's CPU time) would hold a stuck workload until
// its cap; a line the same as the VM's last workload line (a progress line
// whose counters have not moved) is no progress either.
func workloadContext(t *testing.T, ctx context.Context, env *Env) context.Context {
	wctx, cancel := progress.Watch(ctx, "the workload's console lines", qemutest.Idle, 30*time.Minute, workloadLines(env))
	t.Cleanup(cancel)
	return wctx
}

// workloadLines is a probe of the number of env's console lines that are
// neither heartbeats nor repeats of the same VM's previous such line.
func workloadLines(env *Env) progress.Probe {
	type seen struct {
		next int
		last string
	}
	vms := make([]seen, env.NumVMs())
	var n int64
	return func() int64 {
		for i := range vms {
			c := qvm(env, i).Console
			lines := c.Lines()
			for _, l := range lines[vms[i].next:] {
				if !isHeartbeat(l) && l.Text != vms[i].last {
					vms[i].last = l.Text
					n++
				}
			}
			vms[i].next = len(lines)
		}
		return n
	}
}

// isHeartbeat reports whether a console line is a heartbeat.
func isHeartbeat(l qemubackend.Line) bool { _, ok := l.Heartbeat(); return ok }
