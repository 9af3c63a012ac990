// Package testutil holds test helpers shared by packages that have no other
// test-support package in common: store's tests, and qemubackend's own
// (internal) tests, which cannot import qemutest since it imports
// qemubackend. It imports only the standard library, so any package's
// tests may import it.
package testutil

import (
	"os"
	"testing"
)

// ShmDir returns a fresh directory in tmpfs (/dev/shm), removed when the
// test or benchmark ends, so that files there stay off the disk; without
// /dev/shm, or where no directory can be made there, it returns tb's temp
// dir.
func ShmDir(tb testing.TB) string {
	tb.Helper()
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		if d, err := os.MkdirTemp("/dev/shm", "vnsnap-test-*"); err == nil {
			tb.Cleanup(func() { os.RemoveAll(d) })
			return d
		}
	}
	return tb.TempDir()
}
