package pages

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// mappedFile is a file of fixed length mapped shared into memory, so that
// restore workers place blocks by copying (or decoding) straight into its
// pages: no write system call per run of pages, and no contention on the
// file's inode lock, which serialises writes to one tmpfs file.
type mappedFile struct {
	mem []byte
}

// mapFile maps the first n bytes of f for writing, or returns nil if it
// cannot (a file system without shared mappings): the caller then writes
// with WriteAt.
func mapFile(f *os.File, n int64) *mappedFile {
	if n <= 0 || n != int64(int(n)) {
		return nil
	}
	mem, err := unix.Mmap(int(f.Fd()), 0, int(n), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil
	}
	return &mappedFile{mem: mem}
}

// populate allocates the file's pages of mem[lo:hi] in one call, rather
// than one page fault per page as they are written; best effort (kernels
// before 5.14 lack it, and the copy faults them in anyway).
func (m *mappedFile) populate(lo, hi int64) {
	_ = unix.Madvise(m.mem[lo:hi], unix.MADV_POPULATE_WRITE)
}

// close writes the mapping back (for a file on disk; nothing to do on
// tmpfs) and unmaps it.
func (m *mappedFile) close() error {
	err := unix.Msync(m.mem, unix.MS_SYNC)
	if uerr := unix.Munmap(m.mem); err == nil {
		err = uerr
	}
	if err != nil {
		return fmt.Errorf("mapped file: %w", err)
	}
	return nil
}
