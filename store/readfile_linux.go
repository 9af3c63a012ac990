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

// readSmall reads the whole regular file at path into dst (grown if it is
// too small) with as few system calls as it takes: lstat, open, fstat, read,
// close. Restore and dedup read one block file per 64 KiB of memory, and
// os.Open adds four more (Go tries a regular file on its poller). A file
// that is not regular, or is replaced between lstat and open, gives a
// reason; one larger than limit gives size > limit and no data. err alone
// means it could not be read (fs.ErrNotExist: there is none).
func readSmall(path string, dst []byte, limit int64) (data []byte, size int64, reason string, err error) {
	before, err := os.Lstat(path)
	if err != nil {
		return nil, 0, "", err
	}
	if !before.Mode().IsRegular() {
		return nil, 0, regfile.Kind(before.Mode()), nil
	}
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, syscall.ELOOP) {
			return nil, 0, "replaced while being opened", nil
		}
		return nil, 0, "", &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, 0, "", &os.PathError{Op: "fstat", Path: path, Err: err}
	}
	bst, ok := before.Sys().(*syscall.Stat_t)
	if st.Mode&unix.S_IFMT != unix.S_IFREG || !ok || bst.Dev != st.Dev || bst.Ino != st.Ino {
		return nil, 0, "replaced while being opened", nil
	}
	if st.Size > limit {
		return nil, st.Size, "", nil
	}
	if int64(cap(dst)) < st.Size {
		dst = make([]byte, st.Size)
	}
	dst = dst[:st.Size]
	for n := 0; n < len(dst); {
		m, err := unix.Read(fd, dst[n:])
		switch {
		case errors.Is(err, syscall.EINTR):
			continue
		case err != nil:
			return nil, st.Size, "", &os.PathError{Op: "read", Path: path, Err: err}
		case m == 0:
			return nil, st.Size, "", fmt.Errorf("%s: %d of %d bytes: %w", path, n, st.Size, io.ErrUnexpectedEOF)
		}
		n += m
	}
	return dst, st.Size, "", nil
}

// readInto reads the regular file at path into bufs, in order, with one
// readv, if its size is exactly the sum of their lengths, and reports
// whether it did; the checks are readSmall's.
func readInto(path string, bufs [][]byte) (ok bool, reason string, err error) {
	before, err := os.Lstat(path)
	if err != nil {
		return false, "", err
	}
	if !before.Mode().IsRegular() {
		return false, regfile.Kind(before.Mode()), nil
	}
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, syscall.ELOOP) {
			return false, "replaced while being opened", nil
		}
		return false, "", &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return false, "", &os.PathError{Op: "fstat", Path: path, Err: err}
	}
	bst, isStat := before.Sys().(*syscall.Stat_t)
	if st.Mode&unix.S_IFMT != unix.S_IFREG || !isStat || bst.Dev != st.Dev || bst.Ino != st.Ino {
		return false, "replaced while being opened", nil
	}
	var total int64
	for _, b := range bufs {
		total += int64(len(b))
	}
	if st.Size != total {
		return false, "", nil
	}
	for rest, done := bufs, int64(0); done < total; {
		n, err := unix.Readv(fd, rest)
		switch {
		case errors.Is(err, syscall.EINTR):
			continue
		case err != nil:
			return false, "", &os.PathError{Op: "readv", Path: path, Err: err}
		case n == 0:
			return false, "", fmt.Errorf("%s: %d of %d bytes: %w", path, done, total, io.ErrUnexpectedEOF)
		}
		done += int64(n)
		// Skip what was filled; a partly filled buffer goes on from where
		// the read stopped.
		for n > 0 {
			if n < len(rest[0]) {
				rest = append([][]byte{rest[0][n:]}, rest[1:]...)
				break
			}
			n -= len(rest[0])
			rest = rest[1:]
		}
	}
	return true, "", nil
}
