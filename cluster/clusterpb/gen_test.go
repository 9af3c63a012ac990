package clusterpb_test

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestGeneratedUpToDate regenerates the code from cluster/proto with the
// generators scripts/gen-proto.sh pins and fails if it differs from the
// committed code. Outside CI a machine without protoc (and not root to
// install it) skips it, saying why; in CI it always runs.
func TestGeneratedUpToDate(t *testing.T) {
	if _, err := exec.LookPath("protoc"); err != nil && os.Getenv("CI") == "" && os.Geteuid() != 0 {
		t.Skip("protoc not installed (apt-get install protobuf-compiler) and not root to install it")
	}
	out, err := exec.Command("../../scripts/gen-proto.sh", "--check").CombinedOutput()
	if err != nil {
		t.Fatalf("scripts/gen-proto.sh --check: %v\n%s\nrun scripts/gen-proto.sh and commit cluster/clusterpb", err, out)
	}
	if !strings.Contains(string(out), "up to date") {
		t.Fatalf("scripts/gen-proto.sh --check said:\n%s", out)
	}
}
