package store

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
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
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

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
