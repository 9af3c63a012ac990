package main

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/vnsnap/vnsnap/cluster/remote"
	"github.com/vnsnap/vnsnap/core"
	"github.com/vnsnap/vnsnap/qemubackend/guestimg"
	"github.com/vnsnap/vnsnap/realbackend"
	"github.com/vnsnap/vnsnap/vne"
	"github.com/vnsnap/vnsnap/xenbackend"
)

// runUp boots a VNE and supervises it in the foreground until `vnsnap down`,
// SIGINT or SIGTERM. Its state directory holds the control socket, its pid,
// the VMs' port sockets, consoles and frame logs.
func runUp(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("up", flag.ContinueOnError)
	fs.SetOutput(stderr)
	state := fs.String("state", "", "state directory (default .vnsnap/<vne name>)")
	root := fs.String("store", defaultStore, "snapshot store directory (for --restore)")
	var bf backendFlags
	fs.StringVar(&bf.qemu, "qemu", "", "qemu-system-x86_64 binary (default: on PATH)")
	fs.StringVar(&bf.xl, "xl", "", "xl binary, for hypervisor: xen (default "+xenbackend.DefaultXL+")")
	from := fs.String("restore", "", "start from this snapshot instead of booting")
	certDir := fs.String("certs", "", "cluster mode (hosts name agents): directory with ca.pem and the coordinator's certificate (vnsnap certs)")
	moduleRoot := fs.String("module-root", "", "vnsnap source tree, to build the built-in guest image (default: found from the working directory)")
	fs.Usage = func() { fmt.Fprintln(stderr, "usage: vnsnap up [flags] VNE.yaml"); fs.PrintDefaults() }
	file, err := oneArg(fs, args, "VNE file")
	if err != nil {
		return err
	}
	v, err := vne.Load(file)
	if err != nil {
		return err // names file, line and field
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	sup, err := newSupervisor(ctx, v, *state, bf, *certDir, *moduleRoot, stderr)
	if err != nil {
		return err
	}
	defer sup.close()
	if *from != "" {
		storeRoot, err := storeDir(*root)
		if err != nil {
			return err
		}
		if _, _, err := sup.restore(ctx, storeRoot, *from, nil); err != nil {
			return err
		}
	} else if err := sup.boot(ctx); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "VNE %s up: %d VMs on %d hosts; state in %s (vnsnap down --state %s)\n",
		v.Name, len(v.VMs), len(v.Hosts), sup.dir, sup.dir)
	return sup.serve(ctx)
}

// supervisor owns one running VNE and serves control requests one at a time.
type supervisor struct {
	v      *vne.VNE
	dir    string
	opts   realbackend.Options
	stderr io.Writer
	ln     net.Listener

	mu   sync.Mutex // serialises requests; guards env
	env  *realbackend.Env
	down chan struct{}
	once sync.Once
	logs []*os.File
}

func newSupervisor(ctx context.Context, v *vne.VNE, dir string, bf backendFlags, certDir, moduleRoot string, stderr io.Writer) (*supervisor, error) {
	if dir == "" {
		dir = filepath.Join(".vnsnap", v.Name)
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	var hyp realbackend.Hypervisor
	var agents []*remote.Host
	if v.Clustered() {
		agents, err = connectAgents(v, certDir) // the agents own the hypervisors
	} else {
		// before any other state is made
		hyp, err = hypervisorFor(ctx, v, bf, filepath.Join(dir, "xen"), slog.New(slog.NewTextHandler(stderr, nil)))
	}
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			closeAgents(agents)
		}
	}()
	if err := os.MkdirAll(filepath.Join(dir, "run"), 0o755); err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	sock := filepath.Join(dir, "control.sock")
	if c, err := net.Dial("unix", sock); err == nil {
		c.Close()
		return nil, fmt.Errorf("VNE in %s is already up (vnsnap down --state %s)", dir, dir)
	}
	_ = os.Remove(sock)
	s := &supervisor{v: v, dir: dir, stderr: stderr, down: make(chan struct{})}
	s.opts = realbackend.Options{Hypervisor: hyp, Dir: filepath.Join(dir, "run"), Console: s.console, VNE: v, Agents: agents}
	if needsImage(v) {
		img, err := buildImage(ctx, moduleRoot, v.Hypervisor)
		if err != nil {
			return nil, err
		}
		s.opts.Image = img
	}
	if s.ln, err = net.Listen("unix", sock); err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "pid"), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		s.ln.Close()
		return nil, err
	}
	ok = true
	return s, nil
}

func needsImage(v *vne.VNE) bool {
	for _, vm := range v.VMs {
		if vm.Guest.Kind() == vne.BuiltinGuest {
			return true
		}
	}
	return false
}

// buildImage builds the built-in guest image from the vnsnap source tree;
// a Xen domU's loads xen-netfront instead of QEMU's NICs.
func buildImage(ctx context.Context, root, hypervisor string) (guestimg.Image, error) {
	if root == "" {
		wd, _ := os.Getwd()
		for d := wd; ; d = filepath.Dir(d) {
			if b, err := os.ReadFile(filepath.Join(d, "go.mod")); err == nil && bytes.Contains(b, []byte("module github.com/vnsnap/vnsnap\n")) {
				root = d
				break
			}
			if filepath.Dir(d) == d {
				return guestimg.Image{}, errors.New("built-in guests need the vnsnap source tree: run from it or give --module-root")
			}
		}
	}
	cfg := guestimg.Config{CacheDir: filepath.Join(root, ".cache", "guest"), ModuleRoot: root}
	if hypervisor == "xen" {
		cfg.CacheDir, cfg.Modules = filepath.Join(root, ".cache", "guest-xen"), []string{"xen-netfront"}
	}
	return guestimg.Build(ctx, cfg)
}

// console appends a VM's console to <state>/<vm>.console.
func (s *supervisor) console(vm string) io.Writer {
	f, err := os.OpenFile(filepath.Join(s.dir, vm+".console"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return io.Discard
	}
	s.logs = append(s.logs, f)
	return f
}

func (s *supervisor) boot(ctx context.Context) error {
	env, err := realbackend.Boot(ctx, s.v, s.opts)
	if err != nil {
		return err
	}
	s.env = env
	return nil
}

// restore replaces the running VNE by snapshot name; onProgress, if set,
// receives the restore's progress.
func (s *supervisor) restore(ctx context.Context, root, name string, onProgress func(realbackend.Progress)) (string, *resultSummary, error) {
	if s.env != nil {
		s.env.Close()
		s.env = nil
	}
	o := s.opts
	o.OnRestoreProgress = onProgress
	env, rep, err := realbackend.Restore(ctx, root, name, o)
	if err != nil {
		return "", nil, err
	}
	s.env = env
	sum := &resultSummary{Name: name, Epoch: uint64(rep.Epoch), Replayed: rep.Replayed}
	for _, vm := range env.Layout.VMs {
		sum.VMs = append(sum.VMs, resultVM{VM: vm.Name})
	}
	return fmt.Sprintf("restored %s: epoch %d, %d VMs resumed, %d in-transit frames replayed\n",
		name, rep.Epoch, env.NumVMs(), rep.Replayed), sum, nil
}

// serve answers control requests until down or ctx ends.
func (s *supervisor) serve(ctx context.Context) error {
	go func() {
		select {
		case <-ctx.Done():
		case <-s.down:
		}
		s.ln.Close()
	}()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			select {
			case <-s.down:
				return nil
			case <-ctx.Done():
				return nil
			default:
				return fmt.Errorf("control socket: %w", err)
			}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			s.handle(ctx, c)
		}()
	}
}

// eventTimeout bounds the write of one progress event to a client: a
// client that stops reading loses its events, never the supervisor its
// snapshot.
const eventTimeout = 10 * time.Second

// eventWriter sends a request's progress events to its client, one JSON
// line each (progress_wire.go). It is called from realbackend's progress
// goroutine, never from the snapshot's loop; after a failed write it sends
// nothing more.
type eventWriter struct {
	c       net.Conn
	op      string
	timeout time.Duration // 0: eventTimeout
	mu      sync.Mutex
	failed  bool
}

func (w *eventWriter) send(p realbackend.Progress) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.failed {
		return
	}
	b, _ := json.Marshal(eventOf(w.op, p))
	_ = w.c.SetWriteDeadline(time.Now().Add(cmp.Or(w.timeout, eventTimeout)))
	if _, err := w.c.Write(append(b, '\n')); err != nil {
		w.failed = true
	}
	_ = w.c.SetWriteDeadline(time.Time{})
}

func (s *supervisor) handle(ctx context.Context, c net.Conn) {
	line, err := readLine(bufio.NewReader(c), maxLineBytes)
	if err != nil {
		return
	}
	var req request
	resp := response{}
	var onProgress func(realbackend.Progress)
	if err := json.Unmarshal(line, &req); err != nil {
		resp.Error = "bad request: " + err.Error()
	} else {
		if req.Progress > 0 && (req.Op == "snapshot" || req.Op == "restore") {
			onProgress = (&eventWriter{c: c, op: req.Op}).send
		}
		text, sum, err := s.do(ctx, req, onProgress)
		resp.OK, resp.Text, resp.Summary = err == nil, text, sum
		if err != nil {
			resp.Error = err.Error()
		}
	}
	if req.Progress > 0 {
		resp.V, resp.Type = progressVersion, "result"
	} else {
		resp.Summary = nil // a version-0 client knows no summary
	}
	b, _ := json.Marshal(resp)
	_, _ = c.Write(append(b, '\n'))
}

func (s *supervisor) do(ctx context.Context, req request, onProgress func(realbackend.Progress)) (string, *resultSummary, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch req.Op {
	case "down":
		s.once.Do(func() { close(s.down) })
		return "VNE " + s.v.Name + " going down\n", nil, nil
	case "status":
		if s.env == nil {
			return "no VMs running\n", nil, nil
		}
		return fmt.Sprintf("VNE %s: %d VMs, epoch %d\n", s.v.Name, s.env.NumVMs(), s.env.Epoch()), nil, nil
	case "snapshot":
		stall, err := stallOf(req.StallMS)
		if err != nil {
			return "", nil, fmt.Errorf("stall_ms: %w", err)
		}
		if s.env == nil {
			return "", nil, errors.New("no VMs running")
		}
		algo, sink := core.VNsnap, core.MemorySink
		if s.v.Algorithm != nil {
			algo = *s.v.Algorithm
		}
		if s.v.Sink != nil {
			sink = *s.v.Sink
		}
		if req.Algo != "" {
			if algo, err = core.ParseAlgorithm(req.Algo); err != nil {
				return "", nil, err
			}
		}
		if req.Sink != "" {
			if sink, err = core.ParseSink(req.Sink); err != nil {
				return "", nil, err
			}
		}
		root, err := storeDir(req.Store)
		if err != nil {
			return "", nil, err
		}
		rep, err := s.env.Snapshot(ctx, realbackend.SnapshotOptions{
			Store: root, Name: req.Name, Algorithm: algo, Sink: sink, Stall: stall, OnProgress: onProgress,
		})
		if err != nil {
			return "", nil, err
		}
		return formatReport(rep), summaryOf(rep), nil
	case "restore":
		root, err := storeDir(req.Store)
		if err != nil {
			return "", nil, err
		}
		return s.restore(ctx, root, req.Name, onProgress)
	default:
		return "", nil, fmt.Errorf("unknown op %q", req.Op)
	}
}

// summaryOf is a snapshot report's figures for the result line.
func summaryOf(r *realbackend.Report) *resultSummary {
	sum := &resultSummary{Name: r.Name, Algorithm: r.Core.Algorithm.String(), Epoch: uint64(r.Epoch)}
	for i, v := range r.VMs {
		c := r.Core.VMs[i]
		sum.VMs = append(sum.VMs, resultVM{
			VM: v.Name, Sink: c.Sink.String(), Rounds: c.Rounds, StreamBytes: v.Save.Bytes, DowntimeNS: int64(c.Downtime()),
		})
	}
	return sum
}

func formatReport(r *realbackend.Report) string {
	var b strings.Builder
	fmt.Fprintf(&b, "snapshot %s: %s, epoch %d, window %v, %v\n", r.Name, r.Core.Algorithm, r.Epoch,
		r.Core.Window().Round(time.Millisecond), r.Duration.Round(time.Millisecond))
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "VM\tSINK\tDOWNTIME\tPAUSE (OUTSIDE)\tROUNDS\tSTREAM")
	for i, v := range r.VMs {
		c := r.Core.VMs[i]
		pause := "-"
		if v.Pause.Count > 0 {
			pause = v.Pause.Gap.Round(time.Millisecond).String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%v\t%s\t%d\t%.1fMiB\n", v.Name, c.Sink, c.Downtime().Round(time.Millisecond),
			pause, c.Rounds, float64(v.Save.Bytes)/(1<<20))
	}
	tw.Flush()
	return b.String()
}

func (s *supervisor) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.env != nil {
		s.env.Close()
		s.env = nil
	}
	s.ln.Close()
	for _, f := range s.logs {
		f.Close()
	}
	_ = os.Remove(filepath.Join(s.dir, "control.sock"))
	_ = os.Remove(filepath.Join(s.dir, "pid"))
	closeAgents(s.opts.Agents)
}
