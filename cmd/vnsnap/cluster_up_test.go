package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vnsnap/vnsnap/cluster/certs"
)

const clusteredVNE = `name: two
hosts:
  - {name: h1, agent: "127.0.0.1:7401"}
  - {name: h2, agent: "127.0.0.1:7402"}
vms:
  - {name: a, host: h1, memory: 64MiB, guest: {builtin: heartbeat}}
  - {name: b, host: h2, memory: 64MiB, guest: {builtin: heartbeat}}
`

// TestUpClusteredNeedsCerts: `vnsnap up` of a VNE whose hosts name agents
// refuses to start without the coordinator's certificate, or with a
// directory that has none, naming what is missing; nothing is left in the
// state directory's place.
func TestUpClusteredNeedsCerts(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "two.yaml")
	if err := os.WriteFile(file, []byte(clusteredVNE), 0o644); err != nil {
		t.Fatal(err)
	}
	agentOnly := filepath.Join(dir, "agent-certs")
	if err := certs.Create(agentOnly, []certs.Host{{Name: "h1"}}, time.Now()); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(agentOnly, "coordinator.pem"))
	for _, c := range []struct {
		args []string
		want string
	}{
		{nil, "--certs DIR"},
		{[]string{"--certs", filepath.Join(dir, "none")}, "--certs"},
		{[]string{"--certs", agentOnly}, "--certs"},
	} {
		state := filepath.Join(dir, "state")
		var out, errb bytes.Buffer
		err := runUp(append(append([]string{"--state", state}, c.args...), file), &out, &errb)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("up %v: %v, want an error about %q", c.args, err, c.want)
		}
		if _, err := os.Stat(state); !os.IsNotExist(err) {
			t.Errorf("up %v made the state directory %s", c.args, state)
		}
	}
}
