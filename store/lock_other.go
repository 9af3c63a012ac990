//go:build !unix

package store

// rootLock is a no-op where flock(2) is missing: GC must then not run
// concurrently with writers or readers.
type rootLock struct{}

func lockRoot(root string, exclusive, wait bool) (*rootLock, error) { return &rootLock{}, nil }

func (l *rootLock) unlock() {}
