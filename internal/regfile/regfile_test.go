package regfile

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestReadFile(t *testing.T) {
	dir := t.TempDir()
	small := filepath.Join(dir, "small")
	if err := os.WriteFile(small, []byte("0123456789"), 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(small, link); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		path string
		max  int64
		want string // "" for success, else a part of the error
	}{
		{small, 10, ""},
		{link, 10, ""},
		{small, 9, "more than the limit of 9"},
		{fifo, 10, "a named pipe, not a regular file"},
		{dir, 10, "a directory, not a regular file"},
		{"/dev/zero", 1 << 20, "a device, not a regular file"},
		{filepath.Join(dir, "missing"), 10, "no such file"},
	} {
		b, err := ReadFile(c.path, c.max)
		switch {
		case c.want == "" && (err != nil || string(b) != "0123456789"):
			t.Errorf("ReadFile(%s, %d) = %q, %v; want the file", c.path, c.max, b, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("ReadFile(%s, %d) error %v; want one saying %q", c.path, c.max, err, c.want)
		case c.want != "" && !strings.Contains(err.Error(), c.path):
			t.Errorf("ReadFile(%s, %d) error %v does not name the file", c.path, c.max, err)
		}
	}
}
