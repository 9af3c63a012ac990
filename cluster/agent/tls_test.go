package agent

import (
	"crypto/tls"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/vnsnap/vnsnap/cluster/certs"
	"github.com/vnsnap/vnsnap/cluster/clusterpb"
)

// TestMutualTLS: over a real TCP socket, the agent serves a coordinator
// its CA signed and refuses one without a certificate, one of another CA
// and one speaking TLS 1.2; a coordinator refuses an agent of another CA;
// another agent may transfer images but not drive VMs.
func TestMutualTLS(t *testing.T) {
	ctx := testCtx(t)
	dir := testCerts(t, "h1", "h2")
	other := testCerts(t, "h1")
	a := newAgent(t, "h1", fakeHV{}, nil)
	addr := serve(t, a, dir, "h1")
	b := newAgent(t, "h1", fakeHV{}, nil)
	addrOther := serve(t, b, other, "h1") // an agent whose certificate another CA signed

	coord := load(t, dir, certs.CoordinatorName)
	if rep, err := client(t, addr, "h1", coord).Hello(ctx, &clusterpb.HelloRequest{}); err != nil || rep.Host != "h1" {
		t.Fatalf("valid coordinator: Hello = %v, %v; want host h1", rep, err)
	}

	// refused tries a mutating call; want is what the error must say when
	// the refusal is the client's own (a server's refusal of a client
	// certificate reaches a TLS 1.3 client as an alert or a broken pipe).
	n := 0
	refused := func(name string, c clusterpb.AgentClient, want string) {
		t.Helper()
		n++
		_, err := c.SetupHost(ctx, &clusterpb.SetupHostRequest{Call: call(fmt.Sprint("setup-", n), 0), Algorithm: "vnsnap"})
		if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: SetupHost err = %v; want Unavailable mentioning %q", name, err, want)
		}
	}
	refused("coordinator of another CA", client(t, addr, "h1", load(t, other, certs.CoordinatorName)), "")
	refused("agent of another CA", client(t, addrOther, "h1", coord), "certificate signed by unknown authority")
	refused("agent certificate for another host name", client(t, addr, "h2", coord), "certificate")

	noCert := coord
	noCert.Cert = tls.Certificate{}
	refused("coordinator without certificate", client(t, addr, "h1", noCert), "")

	tls12 := certs.ClientConfig(coord, "h1")
	tls12.MinVersion, tls12.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
	cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(credentials.NewTLS(tls12)))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	refused("TLS 1.2 coordinator", clusterpb.NewAgentClient(cc), "protocol version")

	if a.Switch() != nil || b.Switch() != nil {
		t.Error("a refused peer's SetupHost set up a host")
	}

	peerAgent := client(t, addr, "h1", load(t, dir, certs.AgentName("h2")))
	if _, err := peerAgent.Hello(ctx, &clusterpb.HelloRequest{}); err != nil {
		t.Errorf("agent h2: Hello: %v", err)
	}
	if _, err := peerAgent.ImageStatus(ctx, &clusterpb.ImageRef{Snapshot: "s", Vm: "a"}); err != nil {
		t.Errorf("agent h2: ImageStatus: %v", err)
	}
	if _, err := peerAgent.PauseVM(ctx, &clusterpb.VMRequest{Call: call("p1", 0), Vm: 0}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("agent h2: PauseVM err = %v; want PermissionDenied", err)
	}
}

// TestCertsCreateRefusesExistingCA: a second Create into the same
// directory is refused and leaves the first CA alone.
func TestCertsCreateRefusesExistingCA(t *testing.T) {
	dir := testCerts(t, "h1")
	before := load(t, dir, certs.CoordinatorName)
	if err := certs.Create(dir, []certs.Host{{Name: "h1"}}, before.Cert.Leaf.NotBefore); err == nil {
		t.Fatal("second Create into the same directory: no error")
	}
	after := load(t, dir, certs.CoordinatorName)
	if !after.Cert.Leaf.Equal(before.Cert.Leaf) {
		t.Error("the coordinator certificate changed")
	}
}
