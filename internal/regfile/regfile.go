// Package regfile reads files that come from users or from other processes
// (a VNE file, a log a control request names) as untrusted input: only a
// regular file, opened without blocking, and never more than a cap.
package regfile

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"
)

// ReadFile reads the regular file at path, at most max bytes. The file is
// opened without blocking (a FIFO would otherwise wait for a writer) and
// checked on the open descriptor, so it cannot be swapped between the check
// and the read. A symlink to a regular file is followed. Every error names
// the file.
func ReadFile(path string, max int64) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is %s", path, Kind(fi.Mode()))
	}
	if fi.Size() > max {
		return nil, fmt.Errorf("%s is %d bytes, more than the limit of %d", path, fi.Size(), max)
	}
	data, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if int64(len(data)) > max {
		return nil, fmt.Errorf("%s grew beyond the limit of %d bytes while being read", path, max)
	}
	return data, nil
}

// Kind says what a file that is not a regular file is, as in "a named pipe,
// not a regular file".
func Kind(m fs.FileMode) string {
	var kind string
	switch {
	case m&fs.ModeSymlink != 0:
		kind = "a symbolic link"
	case m.IsDir():
		kind = "a directory"
	case m&fs.ModeNamedPipe != 0:
		kind = "a named pipe"
	case m&fs.ModeSocket != 0:
		kind = "a socket"
	case m&fs.ModeDevice != 0:
		kind = "a device"
	case m.IsRegular():
		return "a regular file"
	default:
		kind = "a special file"
	}
	return kind + ", not a regular file"
}
