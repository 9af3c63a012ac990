//go:build !linux

package store

import (
	"fmt"
	"io"
)

// readSmall reads the whole regular file at path into dst (see the Linux
// version).
func readSmall(path string, dst []byte, limit int64) (data []byte, size int64, reason string, err error) {
	f, size, why, err := openRegular(path)
	if err != nil || why != "" {
		return nil, 0, why, err
	}
	defer f.Close()
	if size > limit {
		return nil, size, "", nil
	}
	if int64(cap(dst)) < size {
		dst = make([]byte, size)
	}
	n, err := io.ReadFull(f, dst[:size])
	if err != nil {
		return nil, size, "", fmt.Errorf("%s: %d of %d bytes: %w", path, n, size, err)
	}
	return dst[:n], size, "", nil
}
