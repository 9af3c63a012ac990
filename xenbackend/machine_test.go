package xenbackend

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/vnsnap/vnsnap/realbackend/hv"
)

// receiverEnv makes the test binary act as "vnsnap xen-receive SOCKET".
const receiverEnv = "XENBACKEND_TEST_RECEIVER"

func TestMain(m *testing.M) {
	if os.Getenv(receiverEnv) != "" {
		if err := RelayReceiver(os.Args[len(os.Args)-1], os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// fakeDom is a domain of the fake toolstack.
type fakeDom struct {
	name      string
	pauses    int  // controller pauses
	suspended bool // shut down for suspend (a migration's final phase)
}

// xenSim is a fake xl with domains: enough of xl's behaviour (pause counts,
// save -p, restore -p, and the sender's side of xl migrate, played against
// the real receiver command) to check the Machine's contract.
type xenSim struct {
	fakeXL
	t      *testing.T
	mu     sync.Mutex
	doms   map[DomID]*fakeDom
	next   DomID
	stream []byte // what save and migrate send
	// atGo, if set, is called when the sender has sent its go.
	atGo func()
	// breakStream sends a malformed stream.
	breakStream bool
	// failDomID makes "xl domid" fail (as xl crashing would).
	failDomID bool
	// failBadly: after the receiver's ready, xl renames the domain and
	// fails without sending its go, leaving it NAME--migratedaway and
	// suspended (as a failed suspend of the sender's xl can).
	failBadly bool
	// atHalf, if set, is called when half the stream is sent.
	atHalf   func()
	restored []byte
	// onSave, if set, is called by a stop-and-copy save (xl save -p or
	// without -p) while the domain runs before it suspends; s.mu is held.
	onSave func()
}

func newSim(t *testing.T) *xenSim {
	s := &xenSim{t: t, doms: map[DomID]*fakeDom{0: {name: "Domain-0"}}, next: 1}
	s.stream, _ = testStream()
	s.answer = s.run
	return s
}

func (s *xenSim) dom(arg string) (*fakeDom, error) {
	n, err := strconv.ParseUint(arg, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("bad domain ID %q", arg)
	}
	d := s.doms[DomID(n)]
	if d == nil {
		return nil, fmt.Errorf("domain %s not found", arg)
	}
	return d, nil
}

func (s *xenSim) state(id DomID) (fakeDom, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.doms[id]
	if d == nil {
		return fakeDom{}, false
	}
	return *d, true
}

var cfgName = regexp.MustCompile(`(?m)^name = "([^"]*)"$`)

func (s *xenSim) run(args []string, stdin io.Reader, stdout io.Writer) (string, error) {
	if args[0] == "migrate" {
		return "", s.migrate(args, stdout)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch args[0] {
	case "create", "restore":
		cfg, err := os.ReadFile(args[len(args)-2+boolInt(args[0] == "create")])
		if err != nil {
			return "", err
		}
		name := cfgName.FindSubmatch(cfg)[1]
		for _, d := range s.doms {
			if d.name == string(name) {
				return "", fmt.Errorf("domain %s exists", name)
			}
		}
		d := &fakeDom{name: string(name)}
		if args[0] == "restore" {
			b, err := io.ReadAll(stdin)
			if err != nil {
				return "", fmt.Errorf("reading image: %w", err)
			}
			s.restored = b
			d.pauses = 1
		}
		s.doms[s.next] = d
		s.next++
	case "domid":
		if s.failDomID {
			return "", errors.New("signal: segmentation fault")
		}
		for id, d := range s.doms {
			if d.name == args[1] {
				return fmt.Sprintf("%d\n", id), nil
			}
		}
		return "", fmt.Errorf("domain %s not found", args[1])
	case "list":
		var b strings.Builder
		b.WriteString("Name                                        ID   Mem VCPUs\tState\tTime(s)\n")
		for id := DomID(0); id < s.next; id++ {
			d := s.doms[id]
			if d == nil {
				continue
			}
			st := []byte("-b----")
			if d.pauses > 0 {
				st[2] = 'p'
			}
			if d.suspended {
				st[3], st[4] = 's', 's'
			}
			fmt.Fprintf(&b, "%-40s %5d   128     1     %s       1.0\n", d.name, id, st)
		}
		return b.String(), nil
	case "rename":
		d, err := s.dom(args[1])
		if err != nil {
			return "", err
		}
		d.name = args[2]
	case "pause", "unpause", "destroy", "save":
		if args[0] == "destroy" {
			for id, d := range s.doms {
				if d.name == args[1] {
					delete(s.doms, id)
					return "", nil
				}
			}
		}
		d, err := s.dom(args[len(args)-1-boolInt(args[0] == "save")])
		if err != nil {
			return "", err
		}
		switch args[0] {
		case "pause":
			d.pauses++
		case "unpause":
			if d.pauses == 0 {
				return "", errors.New("libxl: unpausing a domain that is not paused: Invalid argument")
			}
			d.pauses--
		case "destroy":
			id, _ := strconv.Atoi(args[1])
			delete(s.doms, DomID(id))
		case "save":
			if d.suspended && args[1] == "-c" {
				// libxl's resume (suspend_cancel) after the save.
				d.suspended = false
				return "", nil
			}
			if d.pauses > 0 {
				return "", errors.New("guest did not respond to the suspend request (it is paused)")
			}
			if s.onSave != nil {
				s.onSave()
			}
			if err := os.WriteFile(args[3], s.stream, 0o644); err != nil {
				return "", err
			}
			if args[1] == "-p" {
				d.pauses++
			}
		}
	default:
		return "", fmt.Errorf("fake xl: unknown command %q", args)
	}
	return "", nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// migrate plays xl migrate's sender against the receiver command.
func (s *xenSim) migrate(args []string, stdout io.Writer) error {
	s.mu.Lock()
	d, err := s.dom(args[3])
	s.mu.Unlock()
	if err != nil {
		return err
	}
	cmd := exec.Command("sh", "-c", args[4])
	cmd.Env = append(os.Environ(), receiverEnv+"=1")
	toRecv, _ := cmd.StdinPipe()
	fromRecv, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	defer cmd.Wait()
	defer toRecv.Close()
	expect := func(msg string) error {
		b := make([]byte, len(msg))
		if _, err := io.ReadFull(fromRecv, b); err != nil {
			return err
		}
		if string(b) != msg {
			return fmt.Errorf("got %q, want %q", b, msg)
		}
		return nil
	}
	resume := func(err error) error {
		s.mu.Lock()
		d.suspended = false
		s.mu.Unlock()
		return fmt.Errorf("migration failed, resuming at sender: %w", err)
	}
	if err := expect(msgBanner); err != nil {
		return resume(err)
	}
	stream := s.stream
	if s.breakStream {
		stream = append([]byte("not an xl stream"), make([]byte, 4096)...)
	}
	half := len(stream) / 2
	if _, err := toRecv.Write(stream[:half]); err != nil {
		return resume(err)
	}
	if s.atHalf != nil {
		s.atHalf()
	}
	s.mu.Lock()
	d.suspended = true // the final phase
	s.mu.Unlock()
	if _, err := toRecv.Write(stream[half:]); err != nil {
		return resume(err)
	}
	if err := expect(msgReady); err != nil {
		return resume(err)
	}
	s.mu.Lock()
	name := d.name
	d.name += MigratedAway
	failBadly := s.failBadly
	s.mu.Unlock()
	if failBadly {
		return errors.New("failed badly: domain left renamed and suspended")
	}
	if _, err := io.WriteString(toRecv, msgGo); err != nil {
		return errors.New("failed badly: domain left renamed")
	}
	if s.atGo != nil {
		s.atGo()
	}
	if err := expect(msgReport); err != nil {
		return errors.New("failed badly: no report, domain left renamed")
	}
	var st [1]byte
	if _, err := io.ReadFull(fromRecv, st[:]); err != nil {
		return errors.New("failed badly: no status, domain left renamed")
	}
	if st[0] == 0 {
		s.mu.Lock()
		for id, dd := range s.doms {
			if dd == d {
				delete(s.doms, id)
			}
		}
		s.mu.Unlock()
		return nil
	}
	if err := expect(msgGo); err != nil {
		return errors.New("failed badly")
	}
	s.mu.Lock()
	d.name, d.suspended = name, false
	s.mu.Unlock()
	return errors.New("migration target reported failure; resumed at sender")
}

func newTestHypervisor(t *testing.T, s *xenSim) *Hypervisor {
	t.Helper()
	h, err := New(Config{Runner: s, Dir: t.TempDir(), Receiver: []string{os.Args[0]}, Version: "4.17.5", Xenstore: noXenstore{}})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// noXenstore is an empty xenstore: the fake xl needs no acknowledgement.
type noXenstore struct{}

func (noXenstore) Read(context.Context, string) (string, error) {
	return "", errors.New("xenstore-read: no such path")
}
func (noXenstore) Write(context.Context, string, string) error { return nil }

var testSpec = hv.MachineSpec{Name: "a", MemoryMiB: 128, VCPUs: 1, Kernel: "/k/vmlinuz", Initrd: "/k/initrd.gz", Append: "quiet"}

// startTestMachine starts testSpec on a hypervisor over s and kills it
// when the test ends.
func startTestMachine(t *testing.T, s *xenSim) *Machine {
	t.Helper()
	m, err := newTestHypervisor(t, s).Start(context.Background(), testSpec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Kill() })
	return m.(*Machine)
}

func TestStartPauseResumeKill(t *testing.T) {
	s := newSim(t)
	h := newTestHypervisor(t, s)
	ctx := context.Background()
	m, err := h.Start(ctx, testSpec)
	if err != nil {
		t.Fatal(err)
	}
	xm := m.(*Machine)
	cfg, err := os.ReadFile(xm.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(cfg), "extra = \"quiet console=hvc0\"\n") || !strings.Contains(string(cfg), "type = \"pvh\"\n") {
		t.Errorf("domain config:\n%s\nwant a PVH domain on hvc0", cfg)
	}
	for range 2 {
		if err := m.Pause(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if d, _ := s.state(xm.DomID()); d.pauses != 1 {
		t.Errorf("after two Pauses: %d controller pauses, want 1", d.pauses)
	}
	for range 2 {
		if err := m.Resume(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if d, _ := s.state(xm.DomID()); d.pauses != 0 {
		t.Errorf("after two Resumes: %d controller pauses, want 0", d.pauses)
	}
	m.Kill()
	m.Kill()
	if _, ok := s.state(xm.DomID()); ok {
		t.Error("domain still there after Kill")
	}
	want := [][]string{
		{"create", "-e", xm.cfg}, {"domid", "a"},
		{"pause", "1"}, {"unpause", "1"},
		{"list"}, {"destroy", "1"}, {"list"},
	}
	if d := cmp.Diff(want, s.argvs()); d != "" {
		t.Errorf("xl argv (-want +got):\n%s", d)
	}
}

// A live save through the receiver: AtSnapshotPoint runs while the source is
// suspended and renamed; Save returns with the domain still held; Resume
// hands it back under its name, running.
func TestLiveSaveHoldsUntilResume(t *testing.T) {
	s := newSim(t)
	ctx := context.Background()
	m := startTestMachine(t, s)
	id := m.DomID()
	var img bytes.Buffer
	var passes []int
	var atPoint fakeDom
	st, err := m.Save(ctx, &img, hv.SaveOptions{
		Live:   true,
		OnPass: func(n int, _ time.Time) { passes = append(passes, n) },
		AtSnapshotPoint: func(context.Context) error {
			atPoint, _ = s.state(id)
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if atPoint.name != "a"+MigratedAway || !atPoint.suspended {
		t.Errorf("at the snapshot point: domain %+v, want it suspended as a--migratedaway", atPoint)
	}
	if !bytes.Equal(img.Bytes(), s.stream) {
		t.Errorf("image: %d bytes, want the %d of the stream, equal", img.Len(), len(s.stream))
	}
	if st.Bytes != int64(len(s.stream)) || st.Passes != 2 || st.MemoryCopied != 4*pageSize {
		t.Errorf("stats %+v: want %d bytes, 2 passes, 4 pages", st, len(s.stream))
	}
	if d := cmp.Diff([]int{1}, passes); d != "" {
		t.Errorf("OnPass (-want +got):\n%s", d)
	}
	if d, _ := s.state(id); !d.suspended {
		t.Errorf("after Save: domain %+v, want it still suspended (held until Resume)", d)
	}
	if err := m.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	if err := m.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	if d, _ := s.state(id); d.name != "a" || d.suspended || d.pauses != 0 {
		t.Errorf("after Resume: domain %+v, want a, running", d)
	}
	if err := m.Resume(ctx); err != nil {
		t.Fatalf("second Resume: %v", err)
	}
}

// Kill of a machine a live save still holds leaves no domain, renamed or not.
func TestKillWhileHeld(t *testing.T) {
	s := newSim(t)
	h := newTestHypervisor(t, s)
	ctx := context.Background()
	m, err := h.Start(ctx, testSpec)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Save(ctx, io.Discard, hv.SaveOptions{Live: true}); err != nil {
		t.Fatal(err)
	}
	m.Kill()
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, d := range s.doms {
		if id != 0 {
			t.Errorf("after Kill: domain %d %+v left", id, d)
		}
	}
}

// A failing AtSnapshotPoint fails Save but the domain stays held (paused)
// until Resume.
func TestLiveSaveHookErrorKeepsPaused(t *testing.T) {
	s := newSim(t)
	ctx := context.Background()
	m := startTestMachine(t, s)
	id := m.DomID()
	boom := errors.New("colour flip failed")
	_, err := m.Save(ctx, io.Discard, hv.SaveOptions{Live: true, AtSnapshotPoint: func(context.Context) error { return boom }})
	if !errors.Is(err, boom) {
		t.Fatalf("got %v, want the hook's error", err)
	}
	if d, _ := s.state(id); !d.suspended {
		t.Errorf("after the failed Save: %+v, want it still paused", d)
	}
	if err := m.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	if d, _ := s.state(id); d.name != "a" || d.suspended {
		t.Errorf("after Resume: %+v, want a, running", d)
	}
}

// A malformed stream fails the save before the go: xl resumes its domain,
// which keeps its name and runs.
func TestLiveSaveBadStream(t *testing.T) {
	s := newSim(t)
	s.breakStream = true
	ctx := context.Background()
	m := startTestMachine(t, s)
	called := false
	_, err := m.Save(ctx, io.Discard, hv.SaveOptions{Live: true, AtSnapshotPoint: func(context.Context) error { called = true; return nil }})
	var se *StreamError
	if !errors.As(err, &se) {
		t.Fatalf("got %v, want a StreamError", err)
	}
	if called {
		t.Error("AtSnapshotPoint called for a failed stream")
	}
	if d, _ := s.state(m.DomID()); d.name != "a" || d.suspended || d.pauses != 0 {
		t.Errorf("after the failed Save: %+v, want a, running", d)
	}
	if err := m.Resume(ctx); err != nil {
		t.Fatalf("Resume of a running machine: %v", err)
	}
}

// xl failing after it renamed the domain but before its go leaves
// NAME--migratedaway suspended: the failed Save brings it back with
// RecoverDomain, renamed and running, with the same ID; it is not destroyed.
func TestLiveSaveFailedAfterRenameRecovers(t *testing.T) {
	s := newSim(t)
	s.failBadly = true
	ctx := context.Background()
	m := startTestMachine(t, s)
	id := m.DomID()
	_, err := m.Save(ctx, io.Discard, hv.SaveOptions{Live: true})
	if err == nil || !strings.Contains(err.Error(), "failed badly") {
		t.Fatalf("Save: got %v, want xl's failure", err)
	}
	d, ok := s.state(id)
	if !ok {
		t.Fatalf("domain %d destroyed after the failed save, want it recovered", id)
	}
	if d.name != "a" || d.suspended || d.pauses != 0 {
		t.Errorf("after the failed Save: %+v, want a, running (renamed back and resumed)", d)
	}
	if err := m.Resume(ctx); err != nil {
		t.Fatalf("Resume of the recovered machine: %v", err)
	}
	s.failBadly = false
	if _, err := m.Save(ctx, io.Discard, hv.SaveOptions{Live: true}); err != nil {
		t.Fatalf("a second live save of the recovered machine: %v", err)
	}
	if err := m.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	if d, _ := s.state(id); d.name != "a" || d.suspended {
		t.Errorf("after the second save: %+v, want a, running", d)
	}
}

// Stop-and-copy of a paused machine: it is unpaused for xl save -p (a Xen
// domain suspends itself), left paused by it, and Resume unpauses it.
func TestStopCopySaveOfPausedMachine(t *testing.T) {
	s := newSim(t)
	ctx := context.Background()
	m := startTestMachine(t, s)
	id := m.DomID()
	if err := m.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	var img bytes.Buffer
	points := 0
	st, err := m.Save(ctx, &img, hv.SaveOptions{AtSnapshotPoint: func(context.Context) error {
		points++
		if d, _ := s.state(id); d.pauses != 1 {
			t.Errorf("at the snapshot point: %d pauses, want 1", d.pauses)
		}
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(img.Bytes(), s.stream) || st.Bytes != int64(len(s.stream)) || st.Passes != 1 || points != 1 {
		t.Errorf("stop-and-copy: %d bytes (stats %+v), %d snapshot points; want the stream, 1 pass, 1 point", img.Len(), st, points)
	}
	if d, _ := s.state(id); d.pauses != 1 {
		t.Errorf("after Save: %d pauses, want 1 (paused)", d.pauses)
	}
	if err := m.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	if d, _ := s.state(id); d.pauses != 0 {
		t.Errorf("after Resume: %d pauses, want 0", d.pauses)
	}
	calls := s.argvs()
	var saves [][]string
	for _, c := range calls {
		if c[0] == "save" || c[0] == "pause" || c[0] == "unpause" {
			saves = append(saves, c)
		}
	}
	want := [][]string{{"pause", "1"}, {"unpause", "1"}, {"save", "-p", "1", m.h.cfg.Dir + "/a.save"}, {"unpause", "1"}}
	if d := cmp.Diff(want, saves); d != "" {
		t.Errorf("xl pause/save argv (-want +got):\n%s", d)
	}
	if _, err := os.Stat(m.h.cfg.Dir + "/a.save"); !os.IsNotExist(err) {
		t.Errorf("stop-and-copy file left in the runtime dir: %v", err)
	}
}

// Restore passes the image to xl restore -p exactly, with our config, and the
// machine stays paused until Resume; a malformed image fails with a
// StreamError and leaves no domain.
func TestRestore(t *testing.T) {
	s := newSim(t)
	h := newTestHypervisor(t, s)
	ctx := context.Background()
	stream, _ := testStream()
	m, err := h.Restore(ctx, testSpec, bytes.NewReader(append(append([]byte(nil), stream...), "trailing junk"...)))
	if err != nil {
		t.Fatal(err)
	}
	id := m.(*Machine).DomID()
	if !bytes.Equal(s.restored, stream) {
		t.Errorf("xl restore read %d bytes, want the %d of the image and not one past its end", len(s.restored), len(stream))
	}
	if d, _ := s.state(id); d.pauses != 1 {
		t.Errorf("after Restore: %+v, want paused", d)
	}
	if err := m.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	m.Kill()
	if c := s.argvs()[0]; c[0] != "restore" || c[1] != "-p" || c[3] != m.(*Machine).cfg || c[4] != stdinPath {
		t.Errorf("xl argv %q, want restore -p -e CONFIG %s", c, stdinPath)
	}

	bad := append([]byte(nil), stream...)
	bad[len(XLMagic)+1] ^= 0xff // the byte order
	_, err = h.Restore(ctx, hv.MachineSpec{Name: "b", MemoryMiB: 128, VCPUs: 1, Kernel: "/k/vmlinuz"}, bytes.NewReader(bad))
	var se *StreamError
	if !errors.As(err, &se) {
		t.Fatalf("bad image: got %v, want a StreamError", err)
	}
	if _, err := s.run([]string{"domid", "b"}, nil, nil); err == nil {
		t.Error("a domain b is left after the failed restore")
	}
}

func TestSpecRefusals(t *testing.T) {
	s := newSim(t)
	h := newTestHypervisor(t, s)
	for name, spec := range map[string]hv.MachineSpec{
		"disk":          {Name: "a", MemoryMiB: 128, VCPUs: 1, Kernel: "/k", Disk: "/d.qcow2"},
		"quoted name":   {Name: `a"`, MemoryMiB: 128, VCPUs: 1, Kernel: "/k"},
		"bad mac":       {Name: "a", MemoryMiB: 128, VCPUs: 1, Kernel: "/k", NetSocket: "/s", MAC: "ff:ff:ff:ff:ff:ff"},
		"relative kern": {Name: "a", MemoryMiB: 128, VCPUs: 1, Kernel: "k"},
	} {
		if _, err := h.Start(context.Background(), spec); err == nil {
			t.Errorf("%s: Start succeeded", name)
		}
	}
	if c := s.argvs(); len(c) != 0 {
		t.Errorf("xl ran for refused specs: %q", c)
	}
}

// A save cancelled before the stream is complete fails with the context's
// error, and xl (its receiver gone) resumes the domain under its own name.
func TestLiveSaveCancelledMidStream(t *testing.T) {
	s := newSim(t)
	s.stream = append(s.stream[:0:0], s.stream...)
	// Make the stream long enough that the second half cannot sit in the
	// pipe buffers: a PAGE_DATA record of many pages before the ENDs.
	var e enc
	e.record(libxcPageData, pageBody(manyPages(300)))
	end := len(s.stream) - 16 // libxc's and libxl's END records
	s.stream = append(append(s.stream[:end:end], e.Bytes()...), s.stream[end:]...)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s.atHalf = func() { cancel(); time.Sleep(100 * time.Millisecond) }
	h := newTestHypervisor(t, s)
	m, err := h.Start(context.Background(), testSpec)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Kill()
	called := false
	_, err = m.Save(ctx, io.Discard, hv.SaveOptions{Live: true, AtSnapshotPoint: func(context.Context) error { called = true; return nil }})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
	if called {
		t.Error("AtSnapshotPoint called for a cancelled save")
	}
	if d, _ := s.state(m.(*Machine).DomID()); d.name != "a" || d.suspended {
		t.Errorf("after the cancelled Save: %+v, want a, running", d)
	}
}

func manyPages(n int) []testPage {
	p := make([]testPage, n)
	for i := range p {
		p[i] = testPage{pfn: uint64(0x20000 + i), fill: byte(i)}
	}
	return p
}

// A Start whose domain ID cannot be read leaves no domain: it is destroyed
// by name.
func TestStartFailureLeavesNoDomain(t *testing.T) {
	s := newSim(t)
	s.failDomID = true
	h := newTestHypervisor(t, s)
	if _, err := h.Start(context.Background(), testSpec); err == nil {
		t.Fatal("Start succeeded without a domain ID")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, d := range s.doms {
		if id != 0 {
			t.Errorf("domain %d %+v left after the failed Start", id, d)
		}
	}
	if s.doms[0] == nil {
		t.Error("dom0 destroyed by the cleanup of a failed Start")
	}
}
