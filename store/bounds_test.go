package store

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// hangLimit is how long a call may take before the test calls it hung. It
// is generous on purpose (the machine may be loaded): the calls under test
// either return at once or block forever.
const hangLimit = time.Minute

// noHang runs fn and fails the test if it has not returned within hangLimit.
// If it hangs on a FIFO, opening the FIFO's write end (again and again, for
// each read that blocks) releases it, so the goroutine does not outlive the
// test.
func noHang(t *testing.T, fifo string, fn func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); fn() }()
	select {
	case <-done:
		return
	case <-time.After(hangLimit):
		t.Errorf("hung for %v", hangLimit)
	}
	for {
		if fifo != "" {
			if f, err := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
				f.Close()
			}
		}
		select {
		case <-done:
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// damage replaces the file at path by something else; the error a reader
// reports must mention reason.
type damage struct {
	name   string
	damage func(t *testing.T, path string)
	reason string
}

// notRegular is the damage that puts, in place of a file the store wrote,
// something that is not a regular file.
func notRegular() []damage {
	return []damage{
		{"fifo", func(t *testing.T, path string) {
			if err := syscall.Mkfifo(path, 0o644); err != nil {
				t.Fatal(err)
			}
		}, "named pipe"},
		{"symlink to /dev/zero", func(t *testing.T, path string) {
			if err := os.Symlink("/dev/zero", path); err != nil {
				t.Fatal(err)
			}
		}, "symbolic link"},
		{"directory", func(t *testing.T, path string) {
			if err := os.Mkdir(path, 0o755); err != nil {
				t.Fatal(err)
			}
		}, "directory"},
	}
}

// TestManifestNotRegular replaces a manifest by things that are not regular
// files, or are too large: Open, List and GC must fail at once with an error
// naming the file, never hang or read without bound.
func TestManifestNotRegular(t *testing.T) {
	tests := append(notRegular(), damage{"symlink to /etc/passwd", func(t *testing.T, path string) {
		if err := os.Symlink("/etc/passwd", path); err != nil {
			t.Fatal(err)
		}
	}, "symbolic link"},
		damage{"huge sparse file", func(t *testing.T, path string) {
			f, err := os.Create(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if err := f.Truncate(maxManifest + 1); err != nil {
				t.Fatal(err)
			}
		}, "larger than"})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			writeSnapshot(t, root, "s", testMeta(), content{"a": {"memory": []byte("m")}})
			path := filepath.Join(root, snapshotsDir, "s", manifestFile)
			mustRemove(t, path)
			tt.damage(t, path)
			fifo := ""
			if tt.name == "fifo" {
				fifo = path
			}
			check := func(what string, err error) {
				t.Helper()
				if !errors.Is(err, ErrCorrupt) {
					t.Errorf("%s = %v, want ErrCorrupt", what, err)
					return
				}
				if msg := err.Error(); !strings.Contains(msg, path) || !strings.Contains(msg, tt.reason) {
					t.Errorf("%s error %q does not name %s and %q", what, msg, path, tt.reason)
				}
			}
			noHang(t, fifo, func() {
				s, err := Open(root, "s")
				if err == nil {
					s.Close()
				}
				check("Open", err)
			})
			noHang(t, fifo, func() {
				infos, err := List(root)
				if err != nil || len(infos) != 1 {
					t.Errorf("List = %v, %v; want one entry", infos, err)
					return
				}
				check("List entry", infos[0].Err)
			})
			noHang(t, fifo, func() {
				_, err := GC(root, GCOptions{})
				check("GC", err)
			})
			if err := Delete(root, "s"); err != nil {
				t.Errorf("Delete of a snapshot with a bad manifest: %v", err)
			}
			if _, err := os.Stat("/etc/passwd"); err != nil {
				t.Errorf("Delete followed the manifest symlink: %v", err)
			}
		})
	}
}

// TestChunkNotRegular replaces a chunk file by things that are not regular
// files: Verify and readers must report the chunk at once.
func TestChunkNotRegular(t *testing.T) {
	tests := notRegular()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root, users := corruptFixture(t)
			var path string
			var want CorruptError
			for p, u := range users {
				if u.VM == "a" && u.Stream == "memory" && u.Chunk == 1 {
					path, want = p, u
				}
			}
			mustRemove(t, path)
			tt.damage(t, path)
			fifo := ""
			if tt.name == "fifo" {
				fifo = path
			}
			noHang(t, fifo, func() { checkDetected(t, root, want) })
			noHang(t, fifo, func() {
				s := mustOpen(t, root, "s")
				problems, err := s.Verify(context.Background())
				if err != nil || len(problems) != 1 || !strings.Contains(problems[0].Reason, tt.reason) {
					t.Errorf("Verify = %v, %v; want one problem mentioning %q", problems, err, tt.reason)
				}
			})
		})
	}
}

// TestSnapshotDirSymlink puts a symlink where a snapshot directory belongs:
// it is not a snapshot of this store, and nothing is read through it.
func TestSnapshotDirSymlink(t *testing.T) {
	root := t.TempDir()
	writeSnapshot(t, root, "real", testMeta(), content{"a": {"memory": []byte("m")}})
	if err := os.Symlink(filepath.Join(root, snapshotsDir, "real"), filepath.Join(root, snapshotsDir, "alias")); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(root, "alias"); err == nil || !strings.Contains(err.Error(), "symbolic link") {
		t.Errorf("Open(alias) = %v, want an error naming the symbolic link", err)
	}
	infos, err := List(root)
	if err != nil || len(infos) != 1 || infos[0].Name != "real" {
		t.Errorf("List = %+v, %v; want only real", infos, err)
	}
}

// TestSnapshotDirRegularFile puts a regular file where a snapshot directory
// belongs: Open says what it found.
func TestSnapshotDirRegularFile(t *testing.T) {
	root := t.TempDir()
	writeSnapshot(t, root, "real", testMeta(), content{"a": {"memory": []byte("m")}})
	if err := os.WriteFile(filepath.Join(root, snapshotsDir, "plain"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(root, "plain"); err == nil || !strings.Contains(err.Error(), "a regular file, not a directory") {
		t.Errorf("Open(plain) = %v, want an error saying a regular file, not a directory", err)
	}
}
