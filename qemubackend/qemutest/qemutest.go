// Package qemutest holds the gate and fixtures shared by tests that run real
// QEMU (realbackend, cmd/vnsnap). qemubackend's own tests keep a copy: an
// internal test cannot import a package that imports the package under test.
package qemutest

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/vnsnap/vnsnap/qemubackend"
	"github.com/vnsnap/vnsnap/qemubackend/guestimg"
)

// RequireQEMU probes the installed QEMU. With -short and outside CI, or
// without QEMU outside CI, the test is skipped with the reason; in CI (CI
// set) a missing or unusable QEMU fails it.
func RequireQEMU(t testing.TB) *qemubackend.Host {
	t.Helper()
	if testing.Short() && os.Getenv("CI") == "" {
		t.Skip("real QEMU test: skipped in -short mode (never in CI)")
	}
	h, err := qemubackend.Probe(context.Background(), "")
	if errors.Is(err, qemubackend.ErrNoQEMU) && os.Getenv("CI") == "" {
		t.Skipf("QEMU not installed (run scripts/setup-qemu.sh): %v", err)
	}
	if err != nil {
		t.Fatalf("QEMU unusable: %v (run scripts/setup-qemu.sh as root)", err)
	}
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
