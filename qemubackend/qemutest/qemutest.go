// Package qemutest holds the gate and fixtures shared by tests that run real
// QEMU (realbackend, cmd/vnsnap). qemubackend's own tests cannot import it
// (an internal test cannot import a package that imports the package under
// test): they share its gate through package gate.
package qemutest

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/vnsnap/vnsnap/qemubackend"
	"github.com/vnsnap/vnsnap/qemubackend/guestimg"
	"github.com/vnsnap/vnsnap/qemubackend/qemutest/gate"
	"github.com/vnsnap/vnsnap/qemubackend/qemutest/progress"
)

// Idle is how long a real-QEMU test waits with nothing moving before it
// fails: no QEMU (or build) process of the test got a clock tick of CPU and
// no console grew. A VM that runs, however slowly a loaded machine lets it,
// keeps its QEMU on the CPU, so only a VM left paused, a hung host call or a
// dead process stalls for this long.
const Idle = 2 * time.Minute

// Context returns a context for a real-QEMU test whose deadline derives
// from progress: it ends after Idle without progress (the test's descendant
// processes' CPU time, and the extra probes, e.g. console files), or at
// hardCap, a safety net against a guest that spins without end. It is
// cancelled when the test ends. Wrap errors with progress.Why(ctx, err).
func Context(t testing.TB, hardCap time.Duration, extra ...progress.Probe) context.Context {
	ctx, cancel := progress.Watch(context.Background(), "QEMU CPU time and consoles", Idle, hardCap,
		append([]progress.Probe{progress.DescendantCPU()}, extra...)...)
	t.Cleanup(cancel)
	return ctx
}

// RequireQEMU probes the installed QEMU. With -short and outside CI, or
// without QEMU outside CI, the test is skipped with the reason; in CI (CI
// set) a missing or unusable QEMU fails it.
func RequireQEMU(t testing.TB) *qemubackend.Host {
	t.Helper()
	var h *qemubackend.Host
	gate.QEMU(t, func() (err error) {
		h, err = qemubackend.Probe(context.Background(), "")
		return err
	}, qemubackend.ErrNoQEMU)
	return h
}

// GuestImage builds (or reuses) the guest image in <moduleRoot>/.cache/guest.
func GuestImage(t testing.TB, moduleRoot string) guestimg.Image {
	t.Helper()
	root, err := filepath.Abs(moduleRoot)
	if err != nil {
		t.Fatal(err)
	}
	img, err := guestimg.Build(context.Background(), guestimg.Config{
		CacheDir: filepath.Join(root, ".cache", "guest"), ModuleRoot: root,
	})
	if err != nil {
		t.Fatalf("build guest image: %v", err)
	}
	return img
}
