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
	return serveAgent(t, newCerts(t, "h1"), "h1", hyp, opts, dirs...)
}

// newCerts makes a CA with the coordinator and agents of hosts.
func newCerts(t *testing.T, hosts ...string) string {
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

// serveAgent serves the agent of host with certificates from dir.
func serveAgent(t *testing.T, dir, host string, hyp hv.Hypervisor, opts []grpc.ServerOption, dirs ...string) (*Host, *agent.Agent) {
	t.Helper()
	state, err := os.MkdirTemp("/tmp", "vnrm")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(state) })
	a, _, err := agent.New(agent.Config{Host: host, State: state, Hypervisor: hyp, ImageDirs: dirs})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	aid, err := certs.Load(dir, certs.AgentName(host))
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
	h, err := Connect(l.Addr().String(), host, cid)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h, a
}
