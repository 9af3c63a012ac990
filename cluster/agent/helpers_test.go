package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/vnsnap/vnsnap/cluster"
	"github.com/vnsnap/vnsnap/cluster/certs"
	"github.com/vnsnap/vnsnap/cluster/clusterpb"
	"github.com/vnsnap/vnsnap/realbackend/hv"
)

// manualClock is a Clock that moves only when the test says: Advance runs
// the timers that fall due, in the calling goroutine, so a lease's expiry
// has finished when Advance returns.
type manualClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*manualTimer
}

type manualTimer struct {
	c       *manualClock
	at      time.Time
	f       func()
	stopped bool
}

func newManualClock() *manualClock { return &manualClock{now: time.Unix(1_700_000_000, 0)} }

func (c *manualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *manualClock) AfterFunc(d time.Duration, f func()) Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &manualTimer{c: c, at: c.now.Add(d), f: f}
	c.timers = append(c.timers, t)
	return t
}

func (t *manualTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := !t.stopped
	t.stopped = true
	return was
}

// Advance moves the clock by d and runs every timer due, in order.
func (c *manualClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	var due []*manualTimer
	keep := c.timers[:0]
	for _, t := range c.timers {
		switch {
		case t.stopped:
		case !t.at.After(c.now):
			t.stopped = true
			due = append(due, t)
		default:
			keep = append(keep, t)
		}
	}
	c.timers = keep
	c.mu.Unlock()
	slices.SortStableFunc(due, func(a, b *manualTimer) int { return a.at.Compare(b.at) })
	for _, t := range due {
		t.f()
	}
}

// fakeHV is a hypervisor for the agent's unit tests: machines that count
// what is done to them, without a VM behind.
type fakeHV struct{}

func (fakeHV) Info() hv.Info {
	return hv.Info{Name: "fake", Version: "1", ImageFormat: "fake-v1"}
}

func (fakeHV) Start(ctx context.Context, s hv.MachineSpec) (hv.Machine, error) {
	return &fakeMachine{running: true, image: []byte("image of " + s.Name)}, nil
}

func (fakeHV) Restore(ctx context.Context, s hv.MachineSpec, r io.Reader) (hv.Machine, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	return &fakeMachine{image: b}, nil
}

type fakeMachine struct {
	mu              sync.Mutex
	running         bool
	pauses, resumes int
	killed          bool
	image           []byte
}

func (m *fakeMachine) Pause(context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.running {
		m.pauses++
	}
	m.running = false
	return nil
}

func (m *fakeMachine) Resume(context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.running {
		m.resumes++
	}
	m.running = true
	return nil
}

// Save makes two live passes, then pauses at its snapshot point and writes
// the image.
func (m *fakeMachine) Save(ctx context.Context, w io.Writer, o hv.SaveOptions) (hv.SaveStats, error) {
	passes := 1
	if o.Live {
		for n := 1; n <= 2; n++ {
			if o.OnPass != nil {
				o.OnPass(n, time.Now())
			}
		}
		passes = 3
	}
	m.Pause(ctx)
	if o.AtSnapshotPoint != nil {
		if err := o.AtSnapshotPoint(ctx); err != nil {
			return hv.SaveStats{}, err
		}
	}
	if err := ctx.Err(); err != nil {
		return hv.SaveStats{}, err
	}
	n, err := w.Write(m.image)
	return hv.SaveStats{Bytes: int64(n), Passes: passes}, err
}

func (m *fakeMachine) Kill() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.killed = true
}

func (m *fakeMachine) state() (running bool, pauses, resumes int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.running, m.pauses, m.resumes
}

// newAgent makes an agent of host h over hyp in a fresh state directory.
func newAgent(t *testing.T, h string, hyp hv.Hypervisor, clk Clock, dirs ...string) *Agent {
	t.Helper()
	return newAgentIn(t, h, hyp, clk, shortTemp(t), dirs...)
}

func newAgentIn(t *testing.T, h string, hyp hv.Hypervisor, clk Clock, state string, dirs ...string) *Agent {
	t.Helper()
	a, _, err := New(Config{Host: h, State: state, Hypervisor: hyp, Clock: clk, ImageDirs: dirs})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

// shortTemp is a temporary directory with a short path: unix socket paths
// are limited to 108 bytes.
func shortTemp(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("/tmp", "vnag")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// testCerts makes a CA with a coordinator and agents for hosts in a fresh
// directory.
func testCerts(t *testing.T, hosts ...string) string {
	t.Helper()
	dir := t.TempDir()
	var hs []certs.Host
	for _, h := range hosts {
		hs = append(hs, certs.Host{Name: h})
	}
	if err := certs.Create(dir, hs, time.Now()); err != nil {
		t.Fatal(err)
	}
	return dir
}

func load(t *testing.T, dir, stem string) certs.Identity {
	t.Helper()
	id, err := certs.Load(dir, stem)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// serve serves a on a real TCP socket of the loopback with mTLS from the
// agent certificate of host in dir; it returns the address.
func serve(t *testing.T, a *Agent, dir, host string) string {
	t.Helper()
	return serveTLS(t, a, certs.ServerConfig(load(t, dir, certs.AgentName(host))))
}

func serveTLS(t *testing.T, a *Agent, tc *tls.Config) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer(a, tc)
	done := make(chan error, 1)
	go func() { done <- s.Serve(l) }()
	t.Cleanup(func() {
		s.Stop()
		if err := <-done; err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			t.Errorf("serve: %v", err)
		}
	})
	return l.Addr().String()
}

// client dials the agent of host at addr as identity id.
func client(t *testing.T, addr, host string, id certs.Identity) clusterpb.AgentClient {
	t.Helper()
	cc, c, err := cluster.Dial(addr, host, id)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return c
}

// call builds a Call.
func call(id string, epoch uint32) *clusterpb.Call {
	return &clusterpb.Call{RequestId: id, Epoch: epoch}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}
