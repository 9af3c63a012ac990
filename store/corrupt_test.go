package store

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// corruptFixture writes a snapshot in which every chunk is used by exactly one
// stream, and returns, per chunk file, the (vm, stream, index) using it.
func corruptFixture(t *testing.T) (root string, users map[string]CorruptError) {
	return fixture(t, content{
		"a": {"memory": randomData(1, 1600<<10), "config": []byte(`{"machine":"q35"}`)},
		"b": {"memory": pageData(2, 1200<<10)},
		"":  {"framelog": randomData(3, 100<<10)},
	})
}

func fixture(t *testing.T, c content) (root string, users map[string]CorruptError) {
	t.Helper()
	root = t.TempDir()
	writeSnapshot(t, root, "s", testMeta(), c)
	s := mustOpen(t, root, "s")
	users = make(map[string]CorruptError)
	s.Manifest().eachStream(func(vm string, st *Stream) {
		for i, c := range st.Chunks {
			if _, dup := users[c.Addr]; dup {
				t.Fatalf("fixture: chunk %s used twice", c.Addr)
			}
			users[chunkPath(root, c.Addr)] = CorruptError{VM: vm, Stream: st.Name, Chunk: i, Addr: c.Addr}
		}
	})
	if got, want := len(chunkFiles(t, root)), len(users); got != want {
		t.Fatalf("fixture: %d chunk files, want %d", got, want)
	}
	return root, users
}

// checkDetected asserts that Verify reports exactly want, and that reading
// want's stream fails with an error naming it.
func checkDetected(t *testing.T, root string, want CorruptError) {
	t.Helper()
	s, err := Open(root, "s")
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer s.Close()
	problems, err := s.Verify(context.Background())
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if len(problems) != 1 {
		t.Fatalf("Verify found %d problems %v, want 1", len(problems), problems)
	}
	p := problems[0]
	if p.VM != want.VM || p.Stream != want.Stream || p.Chunk != want.Chunk || p.Addr != want.Addr || p.Snapshot != "s" {
		t.Errorf("Verify problem at %q/%q chunk %d %s, want %q/%q chunk %d %s",
			p.VM, p.Stream, p.Chunk, p.Addr, want.VM, want.Stream, want.Chunk, want.Addr)
	}
	_, err = readStream(s, want.VM, want.Stream)
	var ce *CorruptError
	if !errors.As(err, &ce) {
		t.Fatalf("read %q/%q: got %v, want *CorruptError", want.VM, want.Stream, err)
	}
	if ce.VM != want.VM || ce.Chunk != want.Chunk || ce.Addr != want.Addr {
		t.Errorf("read error at %q chunk %d %s, want %q chunk %d %s", ce.VM, ce.Chunk, ce.Addr, want.VM, want.Chunk, want.Addr)
	}
	msg := err.Error()
	for _, part := range []string{`snapshot "s"`, want.Stream, want.Addr, "chunk"} {
		if !strings.Contains(msg, part) {
			t.Errorf("read error %q does not mention %q", msg, part)
		}
	}
}

func TestFlippedByteInEveryChunkFile(t *testing.T) {
	root, users := corruptFixture(t)
	for path, want := range users {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		size := fi.Size()
		// Header, CRC, frame header, middle, last byte.
		for i, off := range []int64{0, 5, chunkHeader, chunkHeader + 4, size / 2, size - 1} {
			mask := []byte{0x01, 0x80, 0xff}[i%3]
			flipByte(t, path, off, mask)
			t.Run(want.VM+"/"+want.Stream, func(t *testing.T) { checkDetected(t, root, want) })
			flipByte(t, path, off, mask)
		}
	}
}

// TestFlippedByteAnywhereInSmallChunk flips each byte of a small chunk file
// in turn, including those zstd itself would ignore.
func TestFlippedByteAnywhereInSmallChunk(t *testing.T) {
	root, users := fixture(t, content{"a": {"config": []byte(`{"machine":"q35"}`)}})
	for path, want := range users {
		if want.Stream != "config" {
			continue
		}
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		for off := range fi.Size() {
			for bit := range 8 {
				flipByte(t, path, off, 1<<bit)
				s := mustOpen(t, root, "s")
				problems, err := s.Verify(context.Background())
				if err != nil || len(problems) != 1 || problems[0].VM != "a" || problems[0].Chunk != 0 {
					t.Fatalf("byte %d bit %d: Verify = %v, %v; want one problem at a/config chunk 0", off, bit, problems, err)
				}
				s.Close()
				flipByte(t, path, off, 1<<bit)
			}
		}
	}
}

func TestDamagedChunkFile(t *testing.T) {
	root, users := corruptFixture(t)
	var path string
	var want CorruptError
	for p, u := range users {
		if u.VM == "b" && u.Chunk == 1 {
			path, want = p, u
		}
	}
	if path == "" {
		t.Fatal("fixture has no chunk b/memory/1")
	}
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		damage func() error
		reason string
	}{
		{"missing", func() error { return os.Remove(path) }, "missing chunk file"},
		{"truncated", func() error { return os.Truncate(path, int64(len(orig)/2)) }, "truncated"},
		{"empty", func() error { return os.Truncate(path, 0) }, "truncated"},
		{"extended", func() error { return os.WriteFile(path, append(orig, 0), 0o644) }, "longer"},
		{"replaced by another chunk", func() error {
			for p, u := range users {
				if u.VM == "a" && u.Stream == "memory" {
					data, err := os.ReadFile(p)
					if err != nil {
						return err
					}
					return os.WriteFile(path, data[:min(len(data), len(orig))], 0o644)
				}
			}
			return errors.New("no chunk of a/memory")
		}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.damage(); err != nil {
				t.Fatal(err)
			}
			defer func() {
				if err := os.WriteFile(path, orig, 0o644); err != nil {
					t.Fatal(err)
				}
			}()
			checkDetected(t, root, want)
			s := mustOpen(t, root, "s")
			problems, _ := s.Verify(context.Background())
			if len(problems) == 1 && !strings.Contains(problems[0].Reason, tt.reason) {
				t.Errorf("reason %q, want it to contain %q", problems[0].Reason, tt.reason)
			}
		})
	}
}

func TestVerifyReportsAllProblems(t *testing.T) {
	root, users := corruptFixture(t)
	for path := range users {
		flipByte(t, path, 3, 0x10)
	}
	s := mustOpen(t, root, "s")
	problems, err := s.Verify(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if got, want := len(problems), len(users); got != want {
		t.Errorf("Verify found %d problems, want %d (one per chunk)", got, want)
	}
	for _, p := range problems {
		if !errors.Is(p, ErrCorrupt) {
			t.Errorf("problem %v is not ErrCorrupt", p)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Verify(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Verify(cancelled) error = %v, want context.Canceled", err)
	}
}

func TestCorruptManifest(t *testing.T) {
	root := t.TempDir()
	writeSnapshot(t, root, "s", testMeta(), content{
		"a": {"memory": pageData(1, 600<<10), "config": []byte("cfg")},
		"":  {"framelog": []byte("frames")},
	})
	path := filepath.Join(root, snapshotsDir, "s", manifestFile)
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// Every byte, flipping the low bit, the ASCII case bit and the high bit.
	for off := range len(orig) {
		for _, bit := range []int{0, 5, 7} {
			flipByte(t, path, int64(off), 1<<bit)
			s, err := Open(root, "s")
			if err == nil {
				s.Close()
				t.Fatalf("byte %d (%q) bit %d flipped: Open succeeded, want error", off, orig[off], bit)
			}
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrSchema) {
				t.Fatalf("byte %d bit %d flipped: Open error %v, want ErrCorrupt or ErrSchema", off, bit, err)
			}
			flipByte(t, path, int64(off), 1<<bit)
		}
	}

	tests := []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"truncated", orig[:len(orig)/2]},
		{"trailing newline removed", orig[:len(orig)-1]},
		{"extra newline", append(append([]byte{}, orig...), '\n')},
		{"other snapshot's name", []byte(strings.Replace(string(orig), `"name": "s"`, `"name": "t"`, 1))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := os.WriteFile(path, tt.data, 0o644); err != nil {
				t.Fatal(err)
			}
			if _, err := Open(root, "s"); !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrSchema) {
				t.Errorf("Open = %v, want ErrCorrupt", err)
			}
		})
	}

	// Damage after Open is found by Verify.
	if err := os.WriteFile(path, orig, 0o644); err != nil {
		t.Fatal(err)
	}
	s := mustOpen(t, root, "s")
	flipByte(t, path, int64(len(orig)/3), 0x04)
	problems, err := s.Verify(context.Background())
	if err != nil || len(problems) != 1 || problems[0].Chunk != -1 || !strings.Contains(problems[0].Reason, "manifest") {
		t.Errorf("Verify after manifest damage = %v, %v; want one manifest problem", problems, err)
	}
}

func TestReaderStickyError(t *testing.T) {
	root, users := corruptFixture(t)
	for path, u := range users {
		if u.VM == "a" && u.Stream == "memory" && u.Chunk == 1 {
			flipByte(t, path, 100, 0x01)
		}
	}
	s := mustOpen(t, root, "s")
	r, err := s.Reader("a", "memory")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	n, err := io.Copy(io.Discard, r)
	first := s.Manifest().find("a", "memory").Chunks[0].Size
	if n != first || !errors.Is(err, ErrCorrupt) {
		t.Errorf("io.Copy = %d, %v; want %d (the sound first chunk), ErrCorrupt", n, err, first)
	}
	if _, err2 := r.Read(make([]byte, 10)); !errors.Is(err2, ErrCorrupt) {
		t.Errorf("Read after failure = %v, want the same CorruptError", err2)
	}
}
