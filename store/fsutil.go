package store

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/vnsnap/vnsnap/internal/durable"
	"github.com/vnsnap/vnsnap/internal/regfile"
)

// Directory names under the store root.
const (
	chunksDir    = "chunks"
	snapshotsDir = "snapshots"
	lockFile     = "lock"
)

// checkRoot returns an error naming root unless it is an existing directory.
func checkRoot(root string) error {
	if root == "" {
		return errors.New("store: root: empty path")
	}
	fi, err := os.Stat(root)
	if err != nil {
		return fmt.Errorf("store: root %s: %w", root, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("store: root %s: not a directory", root)
	}
	return nil
}

// syncDir fsyncs a directory so that entries created or renamed in it are
// durable.
func syncDir(dir string) error { return durable.SyncDir(dir) }

// writeFileAtomic writes data to dir/name through a synced temporary file, a
// rename and a sync of dir: after a crash the file is either absent or
// complete.
func writeFileAtomic(dir, name string, data []byte) error {
	f, err := os.CreateTemp(dir, tmpPrefix+name+"-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(dir, name))
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return syncDir(dir)
}

// exists reports whether path exists; errors other than "not exist" count as
// existing so that callers go on to report them.
func exists(path string) bool {
	_, err := os.Lstat(path)
	return !errors.Is(err, fs.ErrNotExist)
}

// openRegular opens path for reading if it is a regular file, and returns it
// with its size. It never follows a symlink in the last component, never
// blocks on a FIFO and never opens a device: everything in a store is
// untrusted, and the store creates only regular files and directories. A path
// that is something else gets a reason (say, "a named pipe, not a regular
// file") and no error; err is for a path that cannot be examined.
func openRegular(path string) (f *os.File, size int64, reason string, err error) {
	before, err := os.Lstat(path)
	if err != nil {
		return nil, 0, "", err
	}
	if !before.Mode().IsRegular() {
		return nil, 0, regfile.Kind(before.Mode()), nil
	}
	f, err = openNoFollow(path)
	if err != nil {
		return nil, 0, "", err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, "", err
	}
	if !fi.Mode().IsRegular() || !os.SameFile(before, fi) {
		f.Close()
		return nil, 0, "replaced while being opened", nil
	}
	return f, fi.Size(), "", nil
}

// checkRealDir returns an error unless path is a directory and not a symlink
// to one, which would lead the store's writes outside it.
func checkRealDir(path string) error {
	fi, err := os.Lstat(path)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is %s", path, notDirKind(fi.Mode()))
	}
	return nil
}

// notDirKind says what a file that is not a directory is, as in "a named
// pipe, not a directory".
func notDirKind(m fs.FileMode) string {
	if m.IsRegular() {
		return "a regular file, not a directory"
	}
	return strings.Replace(regfile.Kind(m), "regular file", "directory", 1)
}

// readPID reads the pid a lock file records, or 0: the file is untrusted,
// so only a small decimal number is believed.
func readPID(f *os.File) int {
	var b [24]byte
	n, _ := f.ReadAt(b[:], 0)
	pid, err := strconv.Atoi(strings.TrimSpace(string(b[:n])))
	if err != nil || pid <= 0 || pid > 1<<22 {
		return 0
	}
	return pid
}

// lockPrefix starts the name of a snapshot's lock file in <root>/snapshots.
const lockPrefix = ".lock-"

// nameLockPath is the lock file of snapshot name.
func nameLockPath(root, name string) string {
	return filepath.Join(root, snapshotsDir, lockPrefix+name)
}

// writersOf describes the snapshot lock files in the store, for the message
// of a GC that found the store busy: ` (being written: "s1" (pid 42))`, or
// "" if there are none. A lock file left by a crashed writer is listed too.
func writersOf(root string) string {
	entries, err := os.ReadDir(filepath.Join(root, snapshotsDir))
	if err != nil {
		return ""
	}
	var b strings.Builder
	for _, e := range entries {
		name, ok := strings.CutPrefix(e.Name(), lockPrefix)
		if !ok || ValidName(name) != nil {
			continue
		}
		pid := 0
		if f, _, reason, err := openRegular(filepath.Join(root, snapshotsDir, e.Name())); err == nil && reason == "" {
			pid = readPID(f)
			f.Close()
		}
		if b.Len() == 0 {
			b.WriteString(" (being written: ")
		} else {
			b.WriteString(", ")
		}
		if pid > 0 {
			fmt.Fprintf(&b, "%q (pid %d)", name, pid)
		} else {
			fmt.Fprintf(&b, "%q", name)
		}
	}
	if b.Len() > 0 {
		b.WriteString(")")
	}
	return b.String()
}
