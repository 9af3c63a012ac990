package xenbackend

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/vnsnap/vnsnap/realbackend/hv"
)

// SaveFile, live and stop-and-copy, writes the stream as a page file whose
// pfns hold their last copies, and RestoreFile feeds xl restore the stream
// rebuilt from it.
func TestSaveFileRestoreFile(t *testing.T) {
	for _, live := range []bool{true, false} {
		t.Run(map[bool]string{true: "live", false: "stop-and-copy"}[live], func(t *testing.T) {
			s := newSim(t)
			h := newTestHypervisor(t, s)
			ctx := context.Background()
			m := startTestMachine(t, s)
			f, err := os.Create(filepath.Join(t.TempDir(), "a.img"))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			points := 0
			var progress atomic.Int64
			st, err := m.SaveFile(ctx, f, hv.SaveOptions{Live: live, AtSnapshotPoint: func(context.Context) error { points++; return nil },
				Progress: func(n int64) { progress.Add(n) }})
			if err != nil {
				t.Fatal(err)
			}
			// The stream's bytes (live: read from the receiver's socket,
			// which carries the sender's go after the stream; stop-and-copy:
			// xl's save file) are the save's progress.
			if p, n := progress.Load(), int64(len(s.stream)); p < n || p > n+int64(len(msgGo)) {
				t.Errorf("progress: %d bytes, want the stream's %d (and at most the sender's go after it)", p, n)
			}
			fi, err := f.Stat()
			if err != nil {
				t.Fatal(err)
			}
			if st.Bytes != fi.Size() || points != 1 {
				t.Errorf("SaveFile: stats %+v, file of %d bytes, %d snapshot points; want the file's size, 1 point", st, fi.Size(), points)
			}
			if err := m.Resume(ctx); err != nil {
				t.Fatal(err)
			}
			m.Kill()
			file, err := os.ReadFile(f.Name())
			if err != nil {
				t.Fatal(err)
			}
			want, _, _ := lastCopies(t, s.stream)
			rebuilt := rebuild(t, file)
			got, _, _ := lastCopies(t, rebuilt)
			if len(got) != len(want) {
				t.Fatalf("page file: %d pfns, want %d", len(got), len(want))
			}
			for pfn, w := range want {
				if got[pfn] != w {
					t.Errorf("pfn %#x: got type %#x with %d bytes, want type %#x with %d", pfn, got[pfn].typ, len(got[pfn].data), w.typ, len(w.data))
				}
			}
			if h.FileFormat() != PageFileFormat {
				t.Errorf("FileFormat: got %q, want %q", h.FileFormat(), PageFileFormat)
			}
			rm, err := h.RestoreFile(ctx, testSpec, func() (*os.File, error) { return os.Open(f.Name()) })
			if err != nil {
				t.Fatal(err)
			}
			defer rm.Kill()
			if !bytes.Equal(s.restored, rebuilt) {
				t.Errorf("xl restore read %d bytes, want the %d of the rebuilt stream", len(s.restored), len(rebuilt))
			}
			if d, _ := s.state(rm.(*Machine).DomID()); d.pauses != 1 {
				t.Errorf("after RestoreFile: %+v, want paused", d)
			}
		})
	}
}

// RestoreFile refuses a damaged page file with a PageFileError, returns
// open's error as it is, and leaves no domain either way.
func TestRestoreFileRefusals(t *testing.T) {
	s := newSim(t)
	h := newTestHypervisor(t, s)
	ctx := context.Background()
	stream, _ := testStream()
	file, _ := pageFileOf(t, stream)
	file[16] = 9 // the version
	path := filepath.Join(t.TempDir(), "bad.img")
	if err := os.WriteFile(path, file, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := h.RestoreFile(ctx, testSpec, func() (*os.File, error) { return os.Open(path) })
	var pe *PageFileError
	if !errors.As(err, &pe) || pe.Field != "version" {
		t.Errorf("damaged file: got %v, want a PageFileError on its version", err)
	}
	boom := errors.New("boom")
	if _, err := h.RestoreFile(ctx, testSpec, func() (*os.File, error) { return nil, boom }); err != boom {
		t.Errorf("open failed: got %v, want its error as it is", err)
	}
	if _, err := s.run([]string{"domid", testSpec.Name}, nil, nil); err == nil {
		t.Error("a domain is left after the failed restores")
	}
}
