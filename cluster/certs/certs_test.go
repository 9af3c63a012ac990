package certs

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestParseHosts(t *testing.T) {
	got, err := ParseHosts("a,b=10.0.0.2+fd00::2,c")
	if err != nil {
		t.Fatal(err)
	}
	want := []Host{{Name: "a"}, {Name: "b", Addrs: []netip.Addr{netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("fd00::2")}}, {Name: "c"}}
	if d := cmp.Diff(want, got, cmp.Comparer(func(x, y netip.Addr) bool { return x == y })); d != "" {
		t.Errorf("ParseHosts (-want +got):\n%s", d)
	}
	for _, bad := range []string{"", "a,a", "../x", "a=not-an-ip", "a,,b", "a=10.0.0.1+"} {
		if _, err := ParseHosts(bad); err == nil {
			t.Errorf("ParseHosts(%q): no error", bad)
		}
	}
}

// TestCreate: the certificates have the roles, SANs, key type and usages
// the TLS configurations rely on, and verify against the CA.
func TestCreate(t *testing.T) {
	dir := t.TempDir()
	if err := Create(dir, []Host{{Name: "h1", Addrs: []netip.Addr{netip.MustParseAddr("10.1.0.1")}}}, time.Now()); err != nil {
		t.Fatal(err)
	}
	coord, err := Load(dir, CoordinatorName)
	if err != nil {
		t.Fatal(err)
	}
	agent, err := Load(dir, AgentName("h1"))
	if err != nil {
		t.Fatal(err)
	}
	if r := RoleOf(coord.Cert.Leaf); r != Coordinator {
		t.Errorf("coordinator role = %q", r)
	}
	a := agent.Cert.Leaf
	if r := RoleOf(a); r != Agent {
		t.Errorf("agent role = %q", r)
	}
	if err := a.VerifyHostname("h1"); err != nil {
		t.Error(err)
	}
	if err := a.VerifyHostname("10.1.0.1"); err != nil {
		t.Error(err)
	}
	if err := a.VerifyHostname("h2"); err == nil {
		t.Error("agent h1's certificate verifies for h2")
	}
	if got := a.PublicKeyAlgorithm.String(); got != "ECDSA" {
		t.Errorf("key algorithm %s, want ECDSA", got)
	}
}

// TestCreateRefusesOverwrite: Create never replaces a file of the
// directory, the CA or any other, and leaves it as it was.
func TestCreateRefusesOverwrite(t *testing.T) {
	hosts := []Host{{Name: "h1"}}
	for _, name := range []string{CAFile, CAKeyFile, "agent-h1-key.pem", "coordinator.pem"} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			p := filepath.Join(dir, name)
			if err := os.WriteFile(p, []byte("old"), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := Create(dir, hosts, time.Now()); err == nil {
				t.Fatalf("Create over an existing %s: no error", name)
			}
			if b, _ := os.ReadFile(p); string(b) != "old" {
				t.Errorf("%s = %q after a refused Create, want %q", name, b, "old")
			}
		})
	}
}

// TestCreateKeyModes: every key is 0600 and every certificate 0644, even
// when a crashed run left temporary files of another mode.
func TestCreateKeyModes(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{CAKeyFile, "agent-h1-key.pem", "coordinator-key.pem"} {
		if err := os.WriteFile(filepath.Join(dir, "."+n+".tmp"), []byte("stale"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := Create(dir, []Host{{Name: "h1"}}, time.Now()); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		fi, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		want := os.FileMode(0o644)
		if filepath.Ext(e.Name()) != ".pem" {
			t.Errorf("%s: left in the directory", e.Name())
			continue
		}
		if strings.HasSuffix(e.Name(), "-key.pem") {
			want = 0o600
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("%s: mode %v, want %v", e.Name(), got, want)
		}
	}
}
