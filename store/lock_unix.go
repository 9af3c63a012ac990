//go:build unix

package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// rootLock is an flock(2) on <root>/lock. Writers and open snapshots hold it
// shared for their lifetime; GC holds it exclusive, so it never removes a
// chunk that an unfinished writer has deduplicated against or that a reader
// is about to read. The kernel drops the lock when a process dies, so a
// crashed writer never blocks GC.
type rootLock struct{ f *os.File }

func lockRoot(root string, exclusive, wait bool) (*rootLock, error) {
	path := filepath.Join(root, lockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		// A read-only store can still be read; flock works on a read-only
		// descriptor.
		if f, err = os.Open(path); err != nil {
			return nil, fmt.Errorf("store: lock %s: %w", path, err)
		}
	}
	how := syscall.LOCK_SH
	if exclusive {
		how = syscall.LOCK_EX
	}
	if !wait {
		how |= syscall.LOCK_NB
	}
	for {
		err = syscall.Flock(int(f.Fd()), how)
		if !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	if err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("store: %s: %w: held by a writer or reader", root, ErrBusy)
		}
		return nil, fmt.Errorf("store: lock %s: %w", path, err)
	}
	return &rootLock{f: f}, nil
}

// unlock releases the lock; it is safe to call more than once.
func (l *rootLock) unlock() {
	if l != nil && l.f != nil {
		l.f.Close() // closing the descriptor releases the flock
		l.f = nil
	}
}
