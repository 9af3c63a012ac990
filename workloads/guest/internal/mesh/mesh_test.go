package mesh

import (
	"slices"
	"strings"
	"testing"
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
