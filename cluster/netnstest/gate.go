package netnstest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// ErrUnavailable is wrapped by Check's error when this machine cannot build
// a test cluster.
var ErrUnavailable = errors.New("netnstest: network namespaces unavailable")

// Check reports whether this machine can build a test cluster: root,
// iproute2 (ip and tc), and network namespaces with veth and bridge (it
// builds and removes a throw-away one). It does not need sch_netem: without
// it a cluster impairs links with the user-space wire (doc.go).
func Check() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("%w: not root", ErrUnavailable)
	}
	for _, tool := range [][]string{{"ip", "-V"}, {"tc", "-V"}} {
		if out, err := exec.Command(tool[0], tool[1:]...).CombinedOutput(); err != nil {
			return fmt.Errorf("%w: %s: %v %s (install iproute2: scripts/setup-netns.sh)", ErrUnavailable, tool[0], err, strings.TrimSpace(string(out)))
		}
	}
	c, err := Start(Config{Hosts: 1})
	if err != nil {
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return c.Close()
}

// Require gates a test that builds a test cluster, the way qemutest's gate
// does for QEMU: outside CI a machine that cannot (Check) skips the test
// with the reason; in CI (CI set) it fails it. It never skips in CI.
func Require(t testing.TB) {
	t.Helper()
	err := Check()
	if err == nil {
		return
	}
	if os.Getenv("CI") == "" {
		t.Skipf("no test cluster on this machine: %v", err)
	}
	t.Fatalf("test cluster unavailable in CI: %v (run ./run.sh test as root)", err)
}
