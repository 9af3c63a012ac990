package realbackend

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vnsnap/vnsnap/core"
	"github.com/vnsnap/vnsnap/qemubackend"
	"github.com/vnsnap/vnsnap/realbackend/hv"
	"github.com/vnsnap/vnsnap/store"
)

// TestNoBackendImports: realbackend reaches hypervisors only through its
// port; cmd/vnsnap picks the backend. The port package imports only the
// standard library. (qemubackend/guestimg builds the built-in guest image,
// a kernel and initramfs for any hypervisor; it does not import qemubackend.)
func TestNoBackendImports(t *testing.T) {
	for pkg, allowed := range map[string]func(string) bool{
		".": func(p string) bool {
			return p != "github.com/vnsnap/vnsnap/qemubackend" && !strings.Contains(p, "/xenbackend")
		},
		"./hv": func(p string) bool { return p == "github.com/vnsnap/vnsnap/realbackend/hv" },
	} {
		// Every dependency outside the standard library.
		out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", pkg).CombinedOutput()
		if err != nil {
			t.Fatalf("go list -deps %s: %v\n%s", pkg, err, out)
		}
		deps := strings.Fields(string(out))
		if len(deps) == 0 {
			t.Fatalf("go list -deps %s: %q, want a list of packages", pkg, out)
		}
		for _, d := range deps {
			if !allowed(d) {
				t.Errorf("%s depends on %s", pkg, d)
			}
		}
	}
}

// fakeHV is a hypervisor in memory that keeps the port's contract and
// records what the driver asks of its machines.
type fakeHV struct {
	info hv.Info
	mu   sync.Mutex
	vms  map[string]*fakeMachine
}

func newFakeHV(name string) *fakeHV {
	return &fakeHV{info: hv.Info{Name: name, Version: "1.2.3", ImageFormat: name + "-image-v1", Machine: testMachine}, vms: map[string]*fakeMachine{}}
}

func (f *fakeHV) Info() hv.Info { return f.info }

func (f *fakeHV) Start(_ context.Context, s hv.MachineSpec) (hv.Machine, error) {
	m := &fakeMachine{name: s.Name, running: true}
	f.mu.Lock()
	f.vms[s.Name] = m
	f.mu.Unlock()
	return m, nil
}

func (f *fakeHV) Restore(_ context.Context, s hv.MachineSpec, r io.Reader) (hv.Machine, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	if want := "image of " + s.Name; string(b) != want {
		return nil, fmt.Errorf("restore %s: image %q, want %q", s.Name, b, want)
	}
	m := &fakeMachine{name: s.Name, restored: true} // paused
	f.mu.Lock()
	f.vms[s.Name] = m
	f.mu.Unlock()
	return m, nil
}

type fakeMachine struct {
	name     string
	mu       sync.Mutex
	running  bool
	restored bool
	saving   bool // between the snapshot point and the end of a save
	// slowCancel, if set, makes a save wait for its cancel and then end
	// only after this long (a Xen live save giving its domain back).
	slowCancel time.Duration
	log        []string
	bad        []string // contract violations seen
}

var (
	_ hv.Hypervisor      = (*fakeHV)(nil)
	_ hv.Machine         = (*fakeMachine)(nil)
	_ hv.BackgroundSaver = (*fakeMachine)(nil)
)

func (m *fakeMachine) note(s string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.log = append(m.log, s)
}

func (m *fakeMachine) Pause(context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.running = false
	m.log = append(m.log, "pause")
	return nil
}

func (m *fakeMachine) Resume(ctx context.Context) error {
	if err := ctx.Err(); err != nil { // as a real machine's monitor call
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.saving {
		m.bad = append(m.bad, "resumed during its save's final copy")
	}
	m.running = true
	m.log = append(m.log, "resume")
	return nil
}

func (m *fakeMachine) Kill() {}

func (m *fakeMachine) image(w io.Writer) (hv.SaveStats, error) {
	n, err := io.WriteString(w, "image of "+m.name)
	return hv.SaveStats{Bytes: int64(n), Passes: 2, MemoryCopied: 8 * core.PageSize, Downtime: time.Millisecond}, err
}

func (m *fakeMachine) Save(ctx context.Context, w io.Writer, o hv.SaveOptions) (hv.SaveStats, error) {
	if m.slowCancel > 0 {
		m.note("save until cancelled")
		<-ctx.Done()
		time.Sleep(m.slowCancel)
		return hv.SaveStats{}, ctx.Err()
	}
	if o.Live {
		m.note("live save")
		if o.OnPass != nil {
			o.OnPass(1, time.Now())
		}
	}
	m.mu.Lock()
	m.running, m.saving = false, true // the snapshot point
	m.mu.Unlock()
	m.note("snapshot point")
	defer func() {
		m.mu.Lock()
		m.saving = false
		m.mu.Unlock()
	}()
	if o.AtSnapshotPoint != nil {
		if err := o.AtSnapshotPoint(ctx); err != nil {
			return hv.SaveStats{}, err
		}
	}
	st, err := m.image(w)
	m.note("saved")
	return st, err // paused: the core resumes it
}

func (m *fakeMachine) SaveBackground(_ context.Context, w io.Writer, armed func()) (hv.SaveStats, error) {
	m.mu.Lock()
	if m.running {
		m.bad = append(m.bad, "background save of a running machine")
	}
	m.mu.Unlock()
	m.note("background save")
	armed()
	return m.image(w)
}

// TestFakeHypervisorSnapshotRestore runs every algorithm over a fake
// hypervisor: the driver goes through the port alone, the manifest names
// the hypervisor, version and image format, every machine runs afterwards
// and was resumed by the core, never during its save, and the snapshot
// restores on the same hypervisor (machines restored paused, then resumed)
// but not on another.
func TestFakeHypervisorSnapshotRestore(t *testing.T) {
	te := newTrustEnv(t)
	f := newFakeHV("fakehv")
	te.o.Hypervisor = f
	l := goodLayout(te.dir)
	l.VMs = l.VMs[:1]
	l.VMs[0].Kernel, l.VMs[0].Initrd = te.kernel, te.initrd
	env, err := BootLayout(context.Background(), l, nil, te.o)
	if err != nil {
		t.Fatal(err)
	}
	defer env.Close()
	root := t.TempDir()
	for i, algo := range []core.Algorithm{core.VNsnap, core.StopCopy, core.COW, core.SyncFreeze, core.VNsnapLog} {
		name := fmt.Sprintf("s%d", i)
		rep, err := env.Snapshot(context.Background(), SnapshotOptions{Store: root, Name: name, Algorithm: algo, Sink: core.MemorySink})
		if err != nil {
			t.Fatalf("%s: %v", algo, err)
		}
		m := f.vms["a"]
		m.mu.Lock()
		t.Logf("%s: %v", algo, m.log)
		if !m.running || len(m.bad) > 0 || m.log[len(m.log)-1] != "resume" {
			t.Errorf("%s: running %v, violations %v, log %v: want running, resumed last by the core", algo, m.running, m.bad, m.log)
		}
		m.log = nil
		m.mu.Unlock()
		if got := rep.VMs[0].Save.Bytes; got != int64(len("image of a")) {
			t.Errorf("%s: report's bytes %d, want %d", algo, got, len("image of a"))
		}
		s, err := store.Open(root, name)
		if err != nil {
			t.Fatal(err)
		}
		labels := s.Manifest().Labels
		s.Close()
		for k, want := range map[string]string{LabelHypervisor: "fakehv", LabelHypervisorVersion: "1.2.3", LabelImageFormat: "fakehv-image-v1"} {
			if labels[k] != want {
				t.Errorf("%s: manifest label %s = %q, want %q", algo, k, labels[k], want)
			}
		}
	}
	env.Close()

	renv, _, err := Restore(context.Background(), root, "s0", te.o)
	if err != nil {
		t.Fatal(err)
	}
	m := f.vms["a"]
	if !m.restored || !m.running || strings.Join(m.log, ",") != "resume" {
		t.Errorf("restored machine: restored %v running %v log %v, want restored paused, then resumed once", m.restored, m.running, m.log)
	}
	renv.Close()

	other := te.o
	other.Hypervisor = newFakeHV("otherhv")
	_, _, err = Restore(context.Background(), root, "s0", other)
	want := "restore s0: snapshot made by another hypervisor: snapshot s0 (VMs a) was made by fakehv 1.2.3 (image format fakehv-image-v1); this backend is otherhv 1.2.3 (image format otherhv-image-v1)"
	if !errors.Is(err, ErrWrongHypervisor) || err.Error() != want {
		t.Errorf("restore on another hypervisor: got %v, want %s", err, want)
	}
}

// TestCleanupBudgetPerCommand: an abort whose first cleanup command, the
// cancel of a copy, outlasts its budget (a Xen live save slow to give its
// domain back) still resumes every VM: each cleanup command has its own
// budget (with one budget for the batch, the resumes after it failed at
// once and left both VMs paused). The cancel's timeout is in the error.
func TestCleanupBudgetPerCommand(t *testing.T) {
	te := newTrustEnv(t)
	f := newFakeHV("fakehv")
	te.o.Hypervisor = f
	l := goodLayout(te.dir)
	l.VMs[0].Kernel, l.VMs[0].Initrd = te.kernel, te.initrd
	l.VMs[1] = l.VMs[0]
	l.VMs[1].Name, l.VMs[1].Host, l.VMs[1].MAC = "b", 1, "52:54:00:00:00:02"
	env, err := BootLayout(context.Background(), l, nil, te.o)
	if err != nil {
		t.Fatal(err)
	}
	defer env.Close()
	const budget = 50 * time.Millisecond
	f.vms["a"].slowCancel = 4 * budget
	o := SnapshotOptions{Store: t.TempDir(), Name: "s", Algorithm: core.StopCopy, Sink: core.MemorySink,
		fault: failCommand(1, core.CopyFinal{}), cleanupTimeout: budget}
	_, err = env.Snapshot(context.Background(), o)
	if !errors.Is(err, ErrAborted) || !contains(err, "cancel copy of a: "+context.DeadlineExceeded.Error()) {
		t.Errorf("got %v, want ErrAborted naming a's cancel that timed out", err)
	}
	for _, name := range []string{"a", "b"} {
		m := f.vms[name]
		m.mu.Lock()
		if !m.running || len(m.bad) > 0 {
			t.Errorf("vm %s after the abort: running %v, violations %v, log %v; want running", name, m.running, m.bad, m.log)
		}
		m.mu.Unlock()
	}
}

// TestRestoreRefusesOtherHypervisor: a snapshot whose manifest names Xen, or
// an unknown image format, or no hypervisor at all, is refused before any
// QEMU starts, naming the snapshot, the VMs and both hypervisors.
func TestRestoreRefusesOtherHypervisor(t *testing.T) {
	te := newTrustEnv(t)
	bin, log := fakeQEMU(t)
	te.o.Hypervisor.(*qemubackend.Hypervisor).Host().Binary = bin
	b := mustJSON(goodLayout(te.dir))
	for _, tc := range []struct {
		name   string
		labels map[string]string
		want   string
	}{
		{"xen", map[string]string{LabelHypervisor: "xen", LabelHypervisorVersion: "4.17.5", LabelImageFormat: "libxl-stream-v2"},
			"snapshot evil (VMs a, b) was made by xen 4.17.5 (image format libxl-stream-v2); this backend is qemu 0.0.0 (image format qemu-migration-v3)"},
		{"unknown format", map[string]string{LabelHypervisor: "qemu", LabelHypervisorVersion: "10.0.2", LabelImageFormat: "qemu-migration-v9"},
			"was made by qemu 10.0.2 (image format qemu-migration-v9); this backend is qemu"},
		{"no labels", map[string]string{},
			"snapshot evil (VMs a, b) was made by an unknown hypervisor (image format unknown); this backend is qemu"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.labels["machine"] = testMachine
			root := craftStoreLabels(t, b, tc.labels)
			env, _, err := Restore(context.Background(), root, "evil", te.o)
			if env != nil {
				env.Close()
			}
			if !errors.Is(err, ErrWrongHypervisor) || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "restore evil: ") {
				t.Errorf("Restore: got %v, want ErrWrongHypervisor with %q", err, tc.want)
			}
			if _, err := os.Stat(log); err == nil {
				t.Error("QEMU was started for another hypervisor's snapshot")
				os.Remove(log)
			}
		})
	}
}

// TestCheckHypervisorLegacy: snapshots written before the manifest named its
// hypervisor carry the QEMU version as "qemu" and are QEMU's.
func TestCheckHypervisorLegacy(t *testing.T) {
	in := hv.Info{Name: "qemu", Version: "10.0.2", ImageFormat: qemubackend.ImageFormat}
	if err := checkHypervisor("old", map[string]string{"qemu": "9.2.0"}, nil, in); err != nil {
		t.Errorf("legacy QEMU snapshot: %v, want accepted", err)
	}
	xen := hv.Info{Name: "xen", Version: "4.17.5", ImageFormat: "libxl-stream-v2"}
	if err := checkHypervisor("old", map[string]string{"qemu": "9.2.0"}, []VMLayout{{Name: "a"}}, xen); err == nil ||
		!strings.Contains(err.Error(), "snapshot old (VMs a) was made by qemu 9.2.0") {
		t.Errorf("legacy QEMU snapshot on xen: got %v, want refused naming qemu 9.2.0", err)
	}
}
