// Package durable makes file-system changes survive a crash of the host.
package durable

import (
	"fmt"
	"os"
)

// SyncDir fsyncs directory dir, so that the entries created, renamed or
// removed in it (a new file or directory, a rename) are durable. The error
// names dir.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}
