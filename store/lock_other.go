//go:build !unix

package store

import (
	"fmt"
	"os"
)

// rootLock is a no-op where flock(2) is missing: GC must then not run
// concurrently with writers or readers.
type rootLock struct{}

func lockRoot(root string, exclusive, wait bool) (*rootLock, error) { return &rootLock{}, nil }

func (l *rootLock) unlock() {}

// namesLocked reports whether lockName excludes other writers. Without it
// Create cannot tell a crashed writer's directory from a live one's, and
// leaves both to GC.
const namesLocked = false

// nameLock is a no-op where flock(2) is missing: two writers of one name
// then meet at the snapshot directory's creation.
type nameLock struct{}

func lockName(root, name string) (*nameLock, error) { return &nameLock{}, nil }

func (l *nameLock) release() {}

func (l *nameLock) drop() {}

// openNoFollow opens path read-only after checking that it is not a
// symlink (racy here; exact where O_NOFOLLOW exists).
func openNoFollow(path string) (*os.File, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return nil, err
	}
	if fi.Mode()&os.ModeSymlink != 0 {
		return nil, fmt.Errorf("%s is a symbolic link", path)
	}
	return os.Open(path)
}
