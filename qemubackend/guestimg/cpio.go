package guestimg

import (
	"fmt"
	"io"
	"os"
)

// cpioWriter writes a newc (SVR4, "070701") cpio archive, the format the
// kernel unpacks as an initramfs. Times are zero so that equal inputs give
// equal archives.
type cpioWriter struct {
	w   io.Writer
	ino uint32
	err error
}

const (
	modeDir  = 0o040000
	modeFile = 0o100000
	modeLink = 0o120000
	modeChar = 0o020000
)

func (c *cpioWriter) header(name string, mode, size, rmaj, rmin uint32) {
	if c.err != nil {
		return
	}
	c.ino++
	nlink := uint32(1)
	if mode&0o170000 == modeDir {
		nlink = 2
	}
	_, c.err = fmt.Fprintf(c.w, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		c.ino, mode, 0, 0, nlink, 0, size, 0, 0, rmaj, rmin, len(name)+1, 0)
	if c.err == nil {
		_, c.err = io.WriteString(c.w, name+"\x00")
	}
	c.pad(110 + len(name) + 1)
}

func (c *cpioWriter) pad(n int) {
	if r := n % 4; r != 0 && c.err == nil {
		_, c.err = c.w.Write(make([]byte, 4-r))
	}
}

// dir adds a directory.
func (c *cpioWriter) dir(name string) { c.header(name, modeDir|0o755, 0, 0, 0) }

// file adds a regular file with the given permission bits and content.
func (c *cpioWriter) file(name string, perm uint32, data []byte) {
	c.header(name, modeFile|perm, uint32(len(data)), 0, 0)
	if c.err == nil {
		_, c.err = c.w.Write(data)
	}
	c.pad(len(data))
}

// symlink adds a symbolic link name -> target.
func (c *cpioWriter) symlink(name, target string) {
	c.header(name, modeLink|0o777, uint32(len(target)), 0, 0)
	if c.err == nil {
		_, c.err = io.WriteString(c.w, target)
	}
	c.pad(len(target))
}

// chardev adds a character device node.
func (c *cpioWriter) chardev(name string, perm, major, minor uint32) {
	c.header(name, modeChar|perm, 0, major, minor)
}

// hostFile adds a copy of the host file src.
func (c *cpioWriter) hostFile(name, src string, perm uint32) {
	if c.err != nil {
		return
	}
	data, err := os.ReadFile(src)
	if err != nil {
		c.err = err
		return
	}
	c.file(name, perm, data)
}

// close writes the trailer and returns the first error.
func (c *cpioWriter) close() error {
	c.header("TRAILER!!!", 0, 0, 0, 0)
	return c.err
}
