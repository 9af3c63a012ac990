package xentest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// Require sets up the environment of the module at moduleRoot for a test.
// With -short outside CI the test is skipped; outside CI a failed setup
// skips it with the reason; in CI (CI set) a failed setup fails it.
func Require(t testing.TB, moduleRoot string) Env {
	t.Helper()
	if testing.Short() && os.Getenv("CI") == "" {
		t.Skip("real Xen test: skipped in -short mode (never in CI)")
	}
	env, err := Setup(context.Background(), moduleRoot)
	if err != nil {
		if os.Getenv("CI") == "" {
			t.Skipf("Xen environment unavailable outside CI: %v", err)
		}
		t.Fatalf("Xen environment: %v", err)
	}
	return env
}

// Start builds a dom0 initramfs from dcfg and boots it. The console goes to
// <t.TempDir()>/console.log and, with -v, to stderr; when the test fails,
// its last lines are logged. With bcfg.Diag set, QEMU serves its monitor on
// <dir>/hmp.sock and a console silent that long gets the machine's state
// logged (diag.go). QEMU is killed when the test ends.
func Start(t testing.TB, env Env, dcfg Dom0Config, bcfg BootConfig) *Machine {
	t.Helper()
	dir := t.TempDir()
	bcfg.Initrd = filepath.Join(dir, "dom0-initrd.gz")
	size, err := BuildDom0Initrd(env, dcfg, bcfg.Initrd)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("dom0 initramfs: %.1f MB", float64(size)/1e6)
	log, err := os.Create(filepath.Join(dir, "console.log"))
	if err != nil {
		t.Fatal(err)
	}
	if bcfg.Log == nil {
		bcfg.Log = log
		if testing.Verbose() {
			bcfg.Log = &prefixWriter{w: os.Stderr, dup: log}
		}
	}
	if bcfg.Diag > 0 && bcfg.Monitor == "" {
		bcfg.Monitor = filepath.Join(dir, "hmp.sock")
	}
	m, err := Boot(env, bcfg)
	if err != nil {
		log.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		m.Kill()
		log.Close()
		if n := m.Wakes(); n > 0 {
			t.Logf("the harness woke the machine %d times (BootConfig.Wake)", n)
		}
		if t.Failed() {
			t.Logf("last console lines:\n%s", m.Tail(80))
		}
	})
	return m
}

// prefixWriter copies console lines to a file and, marked, to a terminal.
type prefixWriter struct {
	w, dup *os.File
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	fmt.Fprintf(p.w, "xen| %s", b)
	return p.dup.Write(b)
}
