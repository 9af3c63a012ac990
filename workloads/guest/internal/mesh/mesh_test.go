package mesh

import (
	"net"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestPeers(t *testing.T) {
	got, self, err := Peers("10.0.0.1,10.0.0.2,fd00::3", "fd00::3", 7000)
	if err != nil || self != 2 || !slices.Equal(got, []string{"10.0.0.1:7000", "10.0.0.2:7000", "[fd00::3]:7000"}) {
		t.Fatalf("Peers: %q, %d, %v", got, self, err)
	}
	if _, _, err := Peers("10.0.0.1,10.0.0.2", "10.0.0.9", 7000); err == nil || !strings.Contains(err.Error(), "-self") {
		t.Fatalf("Peers with -self outside -peers: %v", err)
	}
}

// TestAcceptHelloSkipsAbandonedDials: a connection closed before its first
// byte is skipped; the next one's hello is returned.
func TestAcceptHelloSkipsAbandonedDials(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	d := DialHello(ln.Addr().String(), 7, 10*time.Millisecond)
	defer d.Close()
	a, id, err := AcceptHello(ln)
	if err != nil || id != 7 {
		t.Fatalf("AcceptHello: peer %d, %v; want peer 7", id, err)
	}
	a.Close()
}
