package store

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/google/go-cmp/cmp"
)

func TestAbortLeavesNothingVisible(t *testing.T) {
	tests := []struct {
		name string
		// finish ends the write in some way other than a successful Commit.
		finish func(t *testing.T, w *Writer, sw *StreamWriter) error
		want   error // error of finish
	}{
		{"abort with stream open", func(t *testing.T, w *Writer, sw *StreamWriter) error { return w.Abort() }, nil},
		{"abort after close", func(t *testing.T, w *Writer, sw *StreamWriter) error {
			if err := sw.Close(); err != nil {
				t.Fatal(err)
			}
			return w.Abort()
		}, nil},
		{"commit with stream open", func(t *testing.T, w *Writer, sw *StreamWriter) error { return w.Commit() }, nil},
		{"producer failed mid-stream", func(t *testing.T, w *Writer, sw *StreamWriter) error {
			src := io.MultiReader(bytes.NewReader(randomData(2, 1<<20)), iotest.ErrReader(errors.New("qmp: connection reset")))
			_, err := io.Copy(sw, src)
			if err == nil || !strings.Contains(err.Error(), "connection reset") {
				t.Fatalf("io.Copy = %v, want the source's error", err)
			}
			sw.CloseWithError(err)
			return w.Commit()
		}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			writeSnapshot(t, root, "kept", testMeta(), content{"a": {"memory": randomData(1, 1<<20)}})
			before := allFiles(t, filepath.Join(root, snapshotsDir))

			w, err := Create(root, "doomed", testMeta())
			if err != nil {
				t.Fatal(err)
			}
			sw, err := w.Stream("a", "memory")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := sw.Write(randomData(3, 700<<10)); err != nil {
				t.Fatal(err)
			}
			err = tt.finish(t, w, sw)
			if strings.HasPrefix(tt.name, "commit") || strings.HasPrefix(tt.name, "producer") {
				if err == nil {
					t.Fatal("Commit succeeded, want an error")
				}
				if !strings.Contains(err.Error(), `vm "a" stream "memory"`) {
					t.Errorf("Commit error %q does not name the stream", err)
				}
			} else if err != nil {
				t.Fatalf("Abort: %v", err)
			}

			if diff := cmp.Diff(before, allFiles(t, filepath.Join(root, snapshotsDir))); diff != "" {
				t.Errorf("snapshots dir changed (-before +after):\n%s", diff)
			}
			if _, err := Open(root, "doomed"); !errors.Is(err, ErrNotFound) {
				t.Errorf("Open(doomed) = %v, want ErrNotFound", err)
			}
			if _, err := sw.Write([]byte("x")); err == nil {
				t.Error("Write after finish succeeded, want error")
			}
			if err := w.Commit(); !errors.Is(err, ErrFinished) {
				t.Errorf("Commit after finish = %v, want ErrFinished", err)
			}
			if err := w.Abort(); err != nil {
				t.Errorf("second Abort = %v, want nil", err)
			}
			if _, err := w.Stream("b", "memory"); !errors.Is(err, ErrFinished) {
				t.Errorf("Stream after finish = %v, want ErrFinished", err)
			}
			// The name is free again.
			writeSnapshot(t, root, "doomed", testMeta(), content{"a": {"memory": []byte("ok")}})
		})
	}
}

// TestAbortUnblocksWriter aborts while another goroutine is writing.
func TestAbortUnblocksWriter(t *testing.T) {
	root := t.TempDir()
	w, err := Create(root, "s", testMeta())
	if err != nil {
		t.Fatal(err)
	}
	sw, err := w.Stream("a", "memory")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error)
	go func() {
		_, err := io.Copy(sw, infiniteReader{})
		done <- err
	}()
	if _, err := sw.Write(nil); err != nil { // the copier is running
		t.Fatal(err)
	}
	if err := w.Abort(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, ErrAborted) {
		t.Errorf("writer after Abort: got %v, want ErrAborted", err)
	}
}

type infiniteReader struct{}

func (infiniteReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(i * 31)
	}
	return len(p), nil
}

// TestCrashLeavesNoSnapshot simulates a writer process that dies mid-write:
// no Commit, no Abort, its lock released by the kernel.
func TestCrashLeavesNoSnapshot(t *testing.T) {
	root := t.TempDir()
	writeSnapshot(t, root, "good", testMeta(), content{"a": {"memory": pageData(1, 1<<20)}})
	w, err := Create(root, "crashed", testMeta())
	if err != nil {
		t.Fatal(err)
	}
	sw, err := w.Stream("a", "memory")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sw.Write(randomData(2, 2<<20)); err != nil {
		t.Fatal(err)
	}
	// A temporary chunk file as a crash during a chunk write leaves it.
	tmp := filepath.Join(root, chunksDir, "00", tmpPrefix+"123")
	if err := os.MkdirAll(filepath.Dir(tmp), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tmp, []byte("partial"), 0o644); err != nil {
		t.Fatal(err)
	}
	w.crash()

	if _, err := os.Stat(filepath.Join(root, snapshotsDir, "crashed", manifestFile)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("manifest of crashed write: stat error %v, want not exist", err)
	}
	infos, err := List(root)
	if err != nil || len(infos) != 1 || infos[0].Name != "good" {
		t.Fatalf("List = %+v, %v; want only good", infos, err)
	}
	if _, err := Open(root, "crashed"); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "no manifest") {
		t.Errorf("Open(crashed) = %v, want ErrNotFound mentioning the missing manifest", err)
	}
	st, err := GC(root, GCOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if st.Debris != 3 || st.Removed == 0 {
		t.Errorf("GC = %+v, want Debris 3 (directory, lock file, temp file) and the crashed write's chunks removed", st)
	}
	if exists(filepath.Join(root, snapshotsDir, "crashed")) || exists(tmp) {
		t.Error("GC left the crashed write's directory or temp file")
	}
	s := mustOpen(t, root, "good")
	if problems, err := s.Verify(context.Background()); err != nil || len(problems) != 0 {
		t.Errorf("Verify(good) after GC = %v, %v; want none", problems, err)
	}
	s.Close()
	writeSnapshot(t, root, "crashed", testMeta(), content{"a": {"memory": []byte("retry")}})
}

func TestGCAndDelete(t *testing.T) {
	root := t.TempDir()
	shared := randomData(1, 2<<20)
	writeSnapshot(t, root, "s1", testMeta(), content{"a": {"memory": shared, "disk": randomData(2, 1<<20)}})
	writeSnapshot(t, root, "s2", testMeta(), content{"a": {"memory": shared}, "b": {"memory": randomData(3, 1<<20)}})
	all := chunkFiles(t, root)

	st, err := GC(root, GCOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(GCStats{Snapshots: 2, Kept: len(all)}, st); diff != "" {
		t.Errorf("GC with nothing to collect (-want +got):\n%s", diff)
	}

	// Open snapshots and writers keep GC away.
	s2 := mustOpen(t, root, "s2")
	if _, err := GC(root, GCOptions{}); !errors.Is(err, ErrBusy) {
		t.Errorf("GC with open snapshot = %v, want ErrBusy", err)
	}
	w, err := Create(root, "pending", testMeta())
	if err != nil {
		t.Fatal(err)
	}
	s2.Close()
	if _, err := GC(root, GCOptions{}); !errors.Is(err, ErrBusy) {
		t.Errorf("GC with open writer = %v, want ErrBusy", err)
	}
	w.Abort()

	info1 := listOne(t, root, "s1")
	if err := Delete(root, "s1"); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(root, "s1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Open after Delete = %v, want ErrNotFound", err)
	}
	st, err = GC(root, GCOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if st.RemovedBytes != info1.Exclusive || st.Snapshots != 1 {
		t.Errorf("GC removed %d bytes of %d snapshots, want %d (s1's Exclusive) of 1", st.RemovedBytes, st.Snapshots, info1.Exclusive)
	}
	if got, want := len(chunkFiles(t, root)), len(all)-st.Removed; got != want {
		t.Errorf("chunk files after GC = %d, want %d", got, want)
	}
	s2 = mustOpen(t, root, "s2")
	if problems, err := s2.Verify(context.Background()); err != nil || len(problems) != 0 {
		t.Errorf("Verify(s2) after GC = %v, %v; want none", problems, err)
	}
	got, err := readStream(s2, "a", "memory")
	if err != nil || !bytes.Equal(got, shared) {
		t.Errorf("read s2 a/memory after GC: %v, equal %v", err, bytes.Equal(got, shared))
	}
	s2.Close()

	// A damaged manifest stops GC from removing anything.
	flipByte(t, filepath.Join(root, snapshotsDir, "s2", manifestFile), 10, 0x01)
	before := chunkFiles(t, root)
	if _, err := GC(root, GCOptions{}); !errors.Is(err, ErrCorrupt) {
		t.Errorf("GC with damaged manifest = %v, want ErrCorrupt", err)
	}
	if diff := cmp.Diff(before, chunkFiles(t, root)); diff != "" {
		t.Errorf("GC with damaged manifest removed chunks (-before +after):\n%s", diff)
	}
	// Such a snapshot can still be deleted, and then everything goes.
	if err := Delete(root, "s2"); err != nil {
		t.Fatal(err)
	}
	if _, err := GC(root, GCOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := chunkFiles(t, root); len(got) != 0 {
		t.Errorf("chunk files with no snapshots = %d, want 0", len(got))
	}
}

func listOne(t *testing.T, root, name string) Info {
	t.Helper()
	infos, err := List(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range infos {
		if in.Name == name {
			return in
		}
	}
	t.Fatalf("List has no %q", name)
	return Info{}
}
