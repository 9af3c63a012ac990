package remote

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/vnsnap/vnsnap/core"
	"github.com/vnsnap/vnsnap/realbackend/hv"
)

// countingHV runs machines that count pauses and resumes (an adapter unit
// test: no VM behind).
type countingHV struct{}

func (countingHV) Info() hv.Info { return hv.Info{Name: "fake"} }
func (countingHV) Start(context.Context, hv.MachineSpec) (hv.Machine, error) {
	return &countingMachine{running: true}, nil
}
func (countingHV) Restore(_ context.Context, _ hv.MachineSpec, r io.Reader) (hv.Machine, error) {
	io.Copy(io.Discard, r)
	return &countingMachine{}, nil
}

type countingMachine struct {
	mu              sync.Mutex
	running         bool
	pauses, resumes int
}

func (m *countingMachine) Pause(context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.running {
		m.pauses++
	}
	m.running = false
	return nil
}

func (m *countingMachine) Resume(context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.running {
		m.resumes++
	}
	m.running = true
	return nil
}

func (m *countingMachine) Save(context.Context, io.Writer, hv.SaveOptions) (hv.SaveStats, error) {
	return hv.SaveStats{}, nil
}
func (m *countingMachine) Kill() {}

// loseFirstReply is a server interceptor that carries out each call but
// answers the first attempt of every request ID with Unavailable, as if
// the reply was lost on the network.
type loseFirstReply struct {
	mu   sync.Mutex
	seen map[string]bool
	lost int
}

func (l *loseFirstReply) intercept(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	rep, err := h(ctx, req)
	v := reflect.ValueOf(req).MethodByName("GetCall")
	if !v.IsValid() {
		return rep, err
	}
	call := v.Call(nil)[0].Interface().(interface{ GetRequestId() string })
	l.mu.Lock()
	defer l.mu.Unlock()
	if id := call.GetRequestId(); !l.seen[id] {
		l.seen[id] = true
		l.lost++
		return nil, status.Error(codes.Unavailable, "reply lost (test)")
	}
	return rep, err
}

// TestRetriesAfterLostReplies: every mutating call's first reply is lost;
// the Host retries with the same request ID and the agent acts once: the
// VM is paused once and resumed once, the colour flips once to the right
// epoch, the lease is taken once.
func TestRetriesAfterLostReplies(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	lose := &loseFirstReply{seen: map[string]bool{}}
	imgs := t.TempDir()
	kernel := filepath.Join(imgs, "k")
	os.WriteFile(kernel, []byte("k"), 0o644)
	h, a := startAgent(t, countingHV{}, []grpc.ServerOption{grpc.ChainUnaryInterceptor(lose.intercept)}, imgs)
	if _, err := h.Setup(ctx, 1, core.VNsnap, "", []Port{{VM: 0, Name: "a"}}); err != nil {
		t.Fatal(err)
	}
	hyp, err := h.Hypervisor(ctx)
	if err != nil {
		t.Fatal(err)
	}
	m, err := hyp.Start(ctx, hv.MachineSpec{Name: "a", MemoryMiB: 64, VCPUs: 1, Kernel: kernel, Initrd: kernel, MAC: "52:54:00:00:00:01"})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	if err := m.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	l, err := h.Begin(ctx, "s1", 1, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Controller().SetEpoch(0, 1); err != nil {
		t.Fatal(err)
	}
	if err := l.End(ctx, false); err != nil {
		t.Fatal(err)
	}
	cm := a.Machine(0).(*countingMachine)
	if cm.pauses != 1 || cm.resumes != 1 || !cm.running {
		t.Errorf("pauses %d, resumes %d, running %v; want 1, 1, true", cm.pauses, cm.resumes, cm.running)
	}
	if e, _ := a.Switch().Epoch(0); e != 1 {
		t.Errorf("epoch %d, want 1", e)
	}
	if lose.lost < 7 {
		t.Errorf("%d replies lost, want one per mutating call (7)", lose.lost)
	}
}
