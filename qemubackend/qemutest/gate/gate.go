// Package gate is the skip policy of tests that run real QEMU, in a package
// of its own so that qemubackend's internal tests, which cannot import
// qemutest (it imports qemubackend), share it with qemutest.RequireQEMU.
package gate

import (
	"errors"
	"os"
	"testing"
)

// QEMU gates a real-QEMU test. With -short and outside CI it skips before
// probe runs; otherwise it runs probe, which reports noQEMU (wrapped) when
// QEMU is not installed. Outside CI a missing QEMU skips the test with the
// reason; in CI (CI set) a missing or unusable QEMU fails it.
func QEMU(t testing.TB, probe func() error, noQEMU error) {
	t.Helper()
	ci := os.Getenv("CI") != ""
	if testing.Short() && !ci {
		t.Skip("real QEMU test: skipped in -short mode (never in CI)")
	}
	err := probe()
	if errors.Is(err, noQEMU) && !ci {
		t.Skipf("QEMU not installed (run scripts/setup-qemu.sh): %v", err)
	}
	if err != nil {
		t.Fatalf("QEMU unusable: %v (run scripts/setup-qemu.sh as root)", err)
	}
}
