//go:build unix

package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"

	"github.com/vnsnap/vnsnap/internal/regfile"
)

// rootLock is an flock(2) on <root>/lock. Writers, Delete and open snapshots
// hold it shared for their lifetime; GC holds it exclusive, so it never
// removes a chunk that an unfinished writer has deduplicated against or that a
// reader is about to read. The kernel drops the lock when a process dies, so a
// crashed writer never blocks GC.
type rootLock struct{ f *os.File }

func lockRoot(root string, exclusive, wait bool) (*rootLock, error) {
	path := filepath.Join(root, lockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0o644)
	if err != nil {
		// A read-only store can still be read; flock works on a read-only
		// descriptor.
		if f, err = openNoFollow(path); err != nil {
			return nil, fmt.Errorf("store: lock %s: %w", path, err)
		}
	}
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("store: lock %s: not a regular file", path)
	}
	how := syscall.LOCK_SH
	if exclusive {
		how = syscall.LOCK_EX
	}
	if !wait {
		how |= syscall.LOCK_NB
	}
	if err := flock(f, how); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("store: %s: %w: held by a writer or reader%s", root, ErrBusy, writersOf(root))
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

func flock(f *os.File, how int) error {
	for {
		err := syscall.Flock(int(f.Fd()), how)
		if !errors.Is(err, syscall.EINTR) {
			return err
		}
	}
}

// openNoFollow opens path read-only, failing on a symlink and not blocking on
// a FIFO.
func openNoFollow(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if errors.Is(err, syscall.ELOOP) {
		return nil, fmt.Errorf("%s is a symbolic link: %w", path, err)
	}
	return f, err
}

// namesLocked reports whether lockName excludes other writers, so that
// Create may take over the directory of a dead writer.
const namesLocked = true

// nameLock is an flock(2) on <root>/snapshots/.lock-<name>, held exclusive by
// the one writer of the snapshot, and by Delete. The file records the
// holder's pid for the loser's message. The holder removes the file before it
// unlocks, so an acquirer that finds the path no longer names the file it
// locked tries again; a crashed holder's file stays, unlocked, until the
// next writer of the name or GC.
type nameLock struct {
	f    *os.File
	path string
}

func lockName(root, name string) (*nameLock, error) {
	path := nameLockPath(root, name)
	for range 100 {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0o644)
		if err != nil {
			if errors.Is(err, syscall.ELOOP) {
				err = fmt.Errorf("%s is a symbolic link", path)
			}
			return nil, fmt.Errorf("store: lock snapshot %q: %w", name, err)
		}
		fi, err := f.Stat()
		if err == nil && !fi.Mode().IsRegular() {
			err = fmt.Errorf("%s is %s", path, regfile.Kind(fi.Mode()))
		}
		if err == nil {
			err = flock(f, syscall.LOCK_EX|syscall.LOCK_NB)
		}
		if errors.Is(err, syscall.EWOULDBLOCK) {
			pid := readPID(f)
			f.Close()
			return nil, &WritingError{Snapshot: name, PID: pid, Self: pid == os.Getpid()}
		}
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("store: lock snapshot %q: %w", name, err)
		}
		if cur, err := os.Lstat(path); err == nil && os.SameFile(fi, cur) {
			pid := []byte(strconv.Itoa(os.Getpid()) + "\n")
			if err := f.Truncate(0); err == nil {
				f.WriteAt(pid, 0) // for messages only
			}
			return &nameLock{f: f, path: path}, nil
		}
		f.Close() // removed by its last holder: lock the new one
	}
	return nil, fmt.Errorf("store: lock snapshot %q: %s keeps being replaced", name, path)
}

// release removes the lock file and unlocks it; it is safe to call more
// than once.
func (l *nameLock) release() {
	if l != nil && l.f != nil {
		os.Remove(l.path)
		l.f.Close()
		l.f = nil
	}
}

// drop unlocks without removing the file, as a process that dies does.
func (l *nameLock) drop() {
	if l != nil && l.f != nil {
		l.f.Close()
		l.f = nil
	}
}
