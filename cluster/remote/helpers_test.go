package remote

import (
	"errors"
	"net"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"

	"github.com/vnsnap/vnsnap/cluster/agent"
	"github.com/vnsnap/vnsnap/cluster/certs"
	"github.com/vnsnap/vnsnap/realbackend/hv"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// startAgent serves an agent of host h1 over hyp on the loopback with
// mTLS and returns the coordinator's Host for it and the agent.
func startAgent(t *testing.T, hyp hv.Hypervisor, opts []grpc.ServerOption, dirs ...string) (*Host, *agent.Agent) {
	t.Helper()
	state, err := os.MkdirTemp("/tmp", "vnrm")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(state) })
	a, _, err := agent.New(agent.Config{Host: "h1", State: state, Hypervisor: hyp, ImageDirs: dirs})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	dir := t.TempDir()
	if err := certs.Create(dir, []certs.Host{{Name: "h1"}}, time.Now()); err != nil {
		t.Fatal(err)
	}
	aid, err := certs.Load(dir, certs.AgentName("h1"))
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := agent.NewServer(a, certs.ServerConfig(aid), opts...)
	done := make(chan error, 1)
	go func() { done <- s.Serve(l) }()
	t.Cleanup(func() {
		s.Stop()
		if err := <-done; err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			t.Errorf("serve: %v", err)
		}
	})
	cid, err := certs.Load(dir, certs.CoordinatorName)
	if err != nil {
		t.Fatal(err)
	}
	h, err := Connect(l.Addr().String(), "h1", cid)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h, a
}
