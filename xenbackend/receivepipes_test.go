package xenbackend

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// receivePipes takes exactly xl's two pipes from the relay and refuses any
// other message, closing what it was sent.
func TestReceivePipes(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	reg, err := os.Create(filepath.Join(t.TempDir(), "regular"))
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	for _, c := range []struct {
		name string
		data []byte
		fds  []int
		want string // "" for success
	}{
		{"pipes", []byte{0}, []int{int(r.Fd()), int(w.Fd())}, ""},
		{"no descriptors", []byte{0}, nil, "0 descriptors"},
		{"one descriptor", []byte{0}, []int{int(r.Fd())}, "1 descriptors"},
		{"three descriptors", []byte{0}, []int{int(r.Fd()), int(w.Fd()), int(w.Fd())}, "truncated: true"},
		{"regular file", []byte{0}, []int{int(reg.Fd()), int(w.Fd())}, "descriptor 0 is not a pipe or socket"},
	} {
		t.Run(c.name, func(t *testing.T) {
			sock := filepath.Join(t.TempDir(), "s")
			ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			peer, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: sock, Net: "unix"})
			if err != nil {
				t.Fatal(err)
			}
			defer peer.Close()
			var oob []byte
			if len(c.fds) > 0 {
				oob = syscall.UnixRights(c.fds...)
			}
			if _, _, err := peer.WriteMsgUnix(c.data, oob, nil); err != nil {
				t.Fatal(err)
			}
			conn, err := ln.AcceptUnix()
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			in, out, err := receivePipes(conn)
			if c.want != "" {
				if err == nil || !strings.Contains(err.Error(), c.want) {
					t.Fatalf("got %v, want an error with %q", err, c.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer in.Close()
			defer out.Close()
			if sz, err := unix.FcntlInt(r.Fd(), unix.F_GETPIPE_SZ, 0); err != nil || sz != streamPipeSize {
				t.Errorf("stream pipe: %d bytes (%v), want %d", sz, err, streamPipeSize)
			}
			// The received ends are the pipe's: what goes into out's copy
			// comes out of r, and what goes into w comes out of in.
			if _, err := out.Write([]byte("reply")); err != nil {
				t.Fatal(err)
			}
			b := make([]byte, 5)
			if _, err := r.Read(b); err != nil || string(b) != "reply" {
				t.Errorf("read %q, %v from the pipe, want the reply", b, err)
			}
			if _, err := w.Write([]byte("data!")); err != nil {
				t.Fatal(err)
			}
			if _, err := in.Read(b); err != nil || string(b) != "data!" {
				t.Errorf("read %q, %v from the received end, want the data", b, err)
			}
		})
	}
}
