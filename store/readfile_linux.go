package store

import (
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/vnsnap/vnsnap/internal/regfile"
)

// openFd is openRegular on a raw descriptor, with as few system calls as it
// takes: lstat, open, fstat (and close, the caller's). Restore and dedup
// read one block file per 64 KiB of memory, and os.Open adds four more (Go
// tries a regular file on its poller). A file that is not regular, or is
// replaced between lstat and open, gives a reason and no descriptor; err
// alone means it could not be opened (fs.ErrNotExist: there is none).
func openFd(path string) (fd int, size int64, reason string, err error) {
	before, err := os.Lstat(path)
	if err != nil {
		return -1, 0, "", err
	}
	if !before.Mode().IsRegular() {
		return -1, 0, regfile.Kind(before.Mode()), nil
	}
	fd, err = unix.Open(path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, syscall.ELOOP) {
			return -1, 0, "replaced while being opened", nil
		}
		return -1, 0, "", &os.PathError{Op: "open", Path: path, Err: err}
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return -1, 0, "", &os.PathError{Op: "fstat", Path: path, Err: err}
	}
	bst, ok := before.Sys().(*syscall.Stat_t)
	if st.Mode&unix.S_IFMT != unix.S_IFREG || !ok || bst.Dev != st.Dev || bst.Ino != st.Ino {
		unix.Close(fd)
		return -1, 0, "replaced while being opened", nil
	}
	return fd, st.Size, "", nil
}

// readSmall reads the whole regular file at path into dst (grown if it is
// too small), with openFd's checks, and one read. One larger than limit
// gives size > limit and no data.
func readSmall(path string, dst []byte, limit int64) (data []byte, size int64, reason string, err error) {
	fd, size, why, err := openFd(path)
	if err != nil || why != "" {
		return nil, 0, why, err
	}
	defer unix.Close(fd)
	if size > limit {
		return nil, size, "", nil
	}
	if int64(cap(dst)) < size {
		dst = make([]byte, size)
	}
	dst = dst[:size]
	for n := 0; n < len(dst); {
		m, err := unix.Read(fd, dst[n:])
		switch {
		case errors.Is(err, syscall.EINTR):
			continue
		case err != nil:
			return nil, size, "", &os.PathError{Op: "read", Path: path, Err: err}
		case m == 0:
			return nil, size, "", fmt.Errorf("%s: %d of %d bytes: %w", path, n, size, io.ErrUnexpectedEOF)
		}
		n += m
	}
	return dst, size, "", nil
}
