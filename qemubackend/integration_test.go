package qemubackend

import (
	"bufio"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vnsnap/vnsnap/qemubackend/guestimg"
	"github.com/vnsnap/vnsnap/qemubackend/qemutest/gate"
	"github.com/vnsnap/vnsnap/qemubackend/qemutest/progress"
)

// testIdle and testContext are qemutest.Idle and qemutest.Context for
// qemubackend's own tests, which cannot import qemutest (it imports this
// package): a test's deadline derives from progress. It ends after testIdle
// in which no QEMU process of the test got CPU time (a running guest keeps
// its QEMU on the CPU however loaded the machine is; a paused, hung or dead
// one does not), or at hardCap, a safety net against a guest spinning
// without end. Wrap errors with progress.Why(ctx, err).
const testIdle = 2 * time.Minute

func testContext(t *testing.T, hardCap time.Duration) context.Context {
	t.Helper()
	ctx, cancel := progress.Watch(context.Background(), "QEMU CPU time", testIdle, hardCap, progress.DescendantCPU())
	t.Cleanup(cancel)
	return ctx
}

// requireQEMU is qemutest.RequireQEMU for qemubackend's own tests (the
// gate of package gate).
func requireQEMU(t *testing.T) *Host {
	t.Helper()
	var h *Host
	gate.QEMU(t, func() (err error) {
		h, err = Probe(context.Background(), "")
		return err
	}, ErrNoQEMU)
	return h
}

// guestImage builds (or reuses) the guest image in <module>/.cache/guest.
func guestImage(t *testing.T) guestimg.Image {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	img, err := guestimg.Build(context.Background(), guestimg.Config{
		CacheDir:   filepath.Join(root, ".cache", "guest"),
		ModuleRoot: root,
	})
	if err != nil {
		t.Fatalf("build guest image: %v", err)
	}
	t.Logf("guest image %s (rebuilt=%v) in %v", img.Initrd, img.Rebuilt, time.Since(start).Round(time.Millisecond))
	return img
}

// startVM boots a VM and arranges for it to be killed when the test ends.
func startVM(ctx context.Context, t *testing.T, h *Host, spec Spec) *VM {
	t.Helper()
	vm, err := Start(ctx, h, spec)
	if err != nil {
		t.Fatal(progress.Why(ctx, err))
	}
	t.Cleanup(vm.Kill)
	return vm
}

// consoleLog writes a VM's console to a file in the test's temp dir, shown
// when the test fails.
func consoleLog(t *testing.T, name string) *os.File {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), name+".console"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		f.Close()
		if t.Failed() {
			b, _ := os.ReadFile(f.Name())
			if len(b) > 4000 {
				b = b[len(b)-4000:]
			}
			t.Logf("console of %s (tail):\n%s", name, b)
		}
	})
	return f
}

// startDirtier boots a VM named name with memMiB MiB of RAM running the
// heartbeat and the built-in dirtier with args, its console logged (see
// consoleLog), and waits for the console line starting with ready. It
// returns the spec it booted (for restores of the VM) and the VM, killed
// when the test ends.
func startDirtier(ctx context.Context, t *testing.T, h *Host, img guestimg.Image, name string, memMiB int, ready string, args ...string) (Spec, *VM) {
	t.Helper()
	spec := Spec{
		Name: name, MemoryMiB: memMiB, Kernel: img.Kernel, Initrd: img.Initrd,
		Append: guestimg.KernelArgs("", "",
			guestimg.Program{Name: "heartbeat"},
			guestimg.Program{Name: "dirtier", Args: args}),
		ConsoleLog: consoleLog(t, name),
	}
	vm := startVM(ctx, t, h, spec)
	if _, _, err := vm.Console.WaitPrefix(ctx, 0, ready); err != nil {
		t.Fatalf("waiting for the dirtier's %q: %v%s", ready, progress.Why(ctx, err), vm.stderrTail())
	}
	return spec, vm
}

func isHeartbeat(l Line) bool { _, ok := l.Heartbeat(); return ok }

type snap struct {
	method Method
	path   string
	stats  Stats
	mapped bool // a mapped-ram file (RestoreFile), not a stream
}

func TestSnapshotRestore(t *testing.T) {
	h := requireQEMU(t)
	img := guestImage(t)
	ctx := testContext(t, 15*time.Minute)

	bootStart := time.Now()
	spec, vm := startDirtier(ctx, t, h, img, "vm1", 128, "DIRTIER OK", "-rate=8", "-ws=16")
	// The console from its start: the first heartbeat, before or after the
	// dirtier's first sweep.
	first, _, err := vm.Console.WaitFor(ctx, 0, isHeartbeat)
	if err != nil {
		t.Fatalf("waiting for the first heartbeat: %v%s", progress.Why(ctx, err), vm.stderrTail())
	}
	t.Logf("boot to first heartbeat: %v (QEMU %s, machine %s)", first.At.Sub(bootStart).Round(time.Millisecond), h.Version, h.Machine)

	dir := t.TempDir()
	var snaps []snap
	for _, m := range []Method{Precopy, StopCopy, Background} {
		path := filepath.Join(dir, m.String()+".vmstate")
		var events []string
		var hookStatus string
		var hook func(context.Context) error
		if m != Background {
			hook = func(ctx context.Context) error {
				var err error
				hookStatus, err = vm.Status(ctx)
				return err
			}
		}
		st := takeSnapshot(ctx, t, vm, path, Options{
			Method:          m,
			Resume:          true,
			AtSnapshotPoint: hook,
			OnEvent: func(e SnapshotEvent) {
				switch e := e.(type) {
				case PassStarted:
					events = append(events, "pass")
				case VMPaused:
					events = append(events, "paused")
				case VMResumed:
					events = append(events, "resumed")
				case SnapshotPointReached:
					events = append(events, "point")
				case MigrationStatusChanged:
					events = append(events, e.Status)
				default:
					panic("unknown event")
				}
			},
		})
		t.Logf("%-10s status-at-point=%q pause(outside)=%v qemu-downtime=%v passes=%d bytes=%d duration=%v point-hb=%d events=%s",
			m, hookStatus, st.Pause.Gap.Round(time.Millisecond), st.QEMUDowntime, st.Passes, st.Bytes,
			st.Duration.Round(time.Millisecond), st.PointHeartbeat, strings.Join(events, ","))
		if !st.HavePoint || st.Pause.Count == 0 {
			t.Fatalf("%s: no heartbeat measured around the snapshot: %+v", m, st)
		}
		if m == Precopy && !strings.Contains(strings.Join(events, ","), "pre-switchover,point") {
			t.Errorf("precopy events %v: want pre-switchover then the snapshot point", events)
		}
		if hook != nil && (hookStatus == "" || hookStatus == "running") {
			t.Errorf("%s: VM status at the snapshot point = %q, want paused", m, hookStatus)
		}
		snaps = append(snaps, snap{method: m, path: path, stats: st})
		// The original keeps running its workload.
		n := vm.Console.Len()
		if _, _, err := vm.Console.WaitFor(ctx, n, isHeartbeat); err != nil {
			t.Fatalf("after %s snapshot the VM does not run: %v", m, progress.Why(ctx, err))
		}
	}
	pre, sc := snaps[0].stats.Pause.Gap, snaps[1].stats.Pause.Gap
	t.Logf("pause seen from outside: stop-copy/precopy = %.1f (%v / %v), background %v",
		float64(sc)/float64(pre), sc.Round(time.Millisecond), pre.Round(time.Millisecond),
		snaps[2].stats.Pause.Gap.Round(time.Millisecond))
	checkNoFail(t, vm, "original")
	vm.Kill()

	runs := []snap{snaps[0], snaps[0], snaps[0], snaps[1], snaps[2]}
	for i, s := range runs {
		t.Run(s.method.String(), func(t *testing.T) {
			restoreAndCheck(ctx, t, h, spec, s, i)
		})
	}
}

func takeSnapshot(ctx context.Context, t *testing.T, vm *VM, path string, opts Options) Stats {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var w io.Writer = f // QEMU writes a mapped-ram file itself
	bw := bufio.NewWriterSize(f, 1<<20)
	if !opts.MappedRAM {
		w = bw
	}
	st, err := vm.Snapshot(ctx, w, opts)
	if err != nil {
		t.Fatal(progress.Why(ctx, err))
	}
	if err := bw.Flush(); err != nil {
		t.Fatal(err)
	}
	return st
}

func restoreAndCheck(ctx context.Context, t *testing.T, h *Host, spec Spec, s snap, i int) {
	f, err := os.Open(s.path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	spec.Name = "restored" + string(rune('0'+i))
	spec.ConsoleLog = consoleLog(t, spec.Name)
	start := time.Now()
	var vm *VM
	if s.mapped {
		vm, err = RestoreFile(ctx, h, spec, f)
	} else {
		vm, err = Restore(ctx, h, spec, bufio.NewReaderSize(f, 1<<20))
	}
	if err != nil {
		t.Fatal(progress.Why(ctx, err))
	}
	defer vm.Kill()
	checkRestored(ctx, t, vm, s, time.Since(start))
}

// checkRestored checks that vm, restored from s and paused, runs on from
// s's snapshot point with every page of the dirtier intact.
func checkRestored(ctx context.Context, t *testing.T, vm *VM, s snap, loaded time.Duration) {
	t.Helper()
	if st, err := vm.Status(ctx); err != nil || st != "paused" {
		t.Fatalf("restored VM status %q, %v; want paused", st, progress.Why(ctx, err))
	}
	if err := vm.Cont(ctx); err != nil {
		t.Fatal(progress.Why(ctx, err))
	}
	l, _, err := vm.Console.WaitFor(ctx, 0, isHeartbeat)
	if err != nil {
		t.Fatalf("no heartbeat after restore: %v%s", progress.Why(ctx, err), vm.stderrTail())
	}
	n, _ := l.Heartbeat()
	t.Logf("%s: loaded in %v; first heartbeat %d, snapshot point %d", s.method, loaded.Round(time.Millisecond), n, s.stats.PointHeartbeat)
	// The guest continues from its snapshot point; lines still in flight
	// when the host saw the pause make it start a few counts later.
	if p := s.stats.PointHeartbeat; n+2 < p+1 || n > p+30 {
		t.Errorf("first heartbeat after restore = %d, want about %d (continuing from the snapshot point)", n, p+1)
	}
	// Two full sweeps of the dirtier after the restore: every page checked.
	from := 0
	for k := 0; k < 2; k++ {
		l, idx, err := vm.Console.WaitFor(ctx, from, func(l Line) bool {
			return strings.HasPrefix(l.Text, "DIRTIER OK") || strings.HasPrefix(l.Text, "DIRTIER FAIL")
		})
		if err != nil {
			t.Fatalf("waiting for the dirtier: %v", progress.Why(ctx, err))
		}
		if !strings.HasPrefix(l.Text, "DIRTIER OK") {
			t.Fatalf("dirtier self-check after restore: %q", l.Text)
		}
		from = idx + 1
	}
	checkNoFail(t, vm, vm.Spec.Name)
}

func checkNoFail(t *testing.T, vm *VM, name string) {
	t.Helper()
	for _, l := range vm.Console.Lines() {
		if strings.Contains(l.Text, "FAIL") || strings.Contains(l.Text, "panic") {
			t.Errorf("%s console: %q", name, l.Text)
		}
	}
}
