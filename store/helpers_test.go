package store

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"
)

const pageSize = 4096

// randomData returns n incompressible bytes derived from seed.
func randomData(seed uint64, n int) []byte {
	r := rand.New(rand.NewChaCha8(seedBytes(seed)))
	b := make([]byte, n)
	for i := 0; i < n; i += 8 {
		v := r.Uint64()
		for j := 0; j < 8 && i+j < n; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

func seedBytes(seed uint64) [32]byte {
	var s [32]byte
	for i := range 8 {
		s[i] = byte(seed >> (8 * i))
	}
	return s
}

// pageData returns n bytes that look like guest memory: a mix of zero pages,
// text-like pages drawn from a small vocabulary, and random pages.
func pageData(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))
	words := make([][]byte, 256)
	for i := range words {
		w := make([]byte, 3+r.IntN(8))
		for j := range w {
			w[j] = 'a' + byte(r.IntN(26))
		}
		words[i] = w
	}
	b := make([]byte, 0, n)
	for len(b) < n {
		page := make([]byte, 0, pageSize)
		switch k := r.IntN(10); {
		case k < 3: // zero page
			page = page[:pageSize]
		case k < 8: // text
			for len(page) < pageSize {
				page = append(page, words[r.IntN(len(words))]...)
				page = append(page, ' ')
			}
			page = page[:pageSize]
		default:
			page = page[:pageSize]
			for i := range page {
				page[i] = byte(r.Uint32())
			}
		}
		b = append(b, page...)
	}
	return b[:n]
}

// content is what one snapshot holds: per VM, per stream, the bytes. The VM
// "" holds extras.
type content map[string]map[string][]byte

// testMeta is fixed so that manifests are deterministic.
func testMeta() Meta {
	return Meta{
		Created:   time.Date(2025, 11, 25, 13, 0, 0, 0, time.UTC),
		Algorithm: "vnsnap-memory",
		Epoch:     7,
		Labels:    map[string]string{"machine": "pc-q35-9.2", "qemu": "9.2.0", "vne": "vm a\nvm b\nlink a b\n"},
	}
}

// writeSnapshot writes c as snapshot name, every stream from its own
// goroutine, and commits it.
func writeSnapshot(t testing.TB, root, name string, meta Meta, c content) {
	t.Helper()
	w, err := Create(root, name, meta)
	if err != nil {
		t.Fatalf("Create(%q): %v", name, err)
	}
	defer w.Abort()
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for vm, streams := range c {
		for s, data := range streams {
			var sw *StreamWriter
			if vm == "" {
				sw, err = w.Extra(s)
			} else {
				sw, err = w.Stream(vm, s)
			}
			if err != nil {
				t.Fatalf("open %s/%s: %v", vm, s, err)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				// Odd-sized writes, as a network source would deliver.
				if _, err := io.CopyBuffer(sw, bytes.NewReader(data), make([]byte, 65521)); err != nil {
					errs <- err
					sw.CloseWithError(err)
					return
				}
				if err := sw.Close(); err != nil {
					errs <- err
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("write: %v", err)
	}
	if err := w.Commit(); err != nil {
		t.Fatalf("Commit(%q): %v", name, err)
	}
}

func readStream(s *Snapshot, vm, stream string) ([]byte, error) {
	var r *StreamReader
	var err error
	if vm == "" {
		r, err = s.ExtraReader(stream)
	} else {
		r, err = s.Reader(vm, stream)
	}
	if err != nil {
		return nil, err
	}
	defer r.Close()
	// A small buffer and no WriteTo: exercise Read across chunk boundaries.
	var out bytes.Buffer
	_, err = io.CopyBuffer(&out, struct{ io.Reader }{r}, make([]byte, 10007))
	return out.Bytes(), err
}

// chunkFiles returns the sorted paths of all chunk files in the pool.
func chunkFiles(t testing.TB, root string) []string {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(root, chunksDir, "??", "*"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, p := range paths {
		if validAddr(filepath.Base(p)) {
			out = append(out, p)
		}
	}
	sort.Strings(out)
	return out
}

// allFiles lists every file and directory under dir, relative to it.
func allFiles(t testing.TB, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		out = append(out, rel)
		return nil
	})
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	return out
}

func flipByte(t testing.TB, path string, off int64, mask byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var b [1]byte
	if _, err := f.ReadAt(b[:], off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= mask
	if _, err := f.WriteAt(b[:], off); err != nil {
		t.Fatal(err)
	}
}

func mustOpen(t testing.TB, root, name string) *Snapshot {
	t.Helper()
	s, err := Open(root, name)
	if err != nil {
		t.Fatalf("Open(%q): %v", name, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// crash ends w as a writer process that dies would: its stream goroutines
// stop, nothing is cleaned up, and the kernel drops its locks.
func (w *Writer) crash() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.state = writerAborted
	for _, sw := range w.streams {
		sw.pw.CloseWithError(errors.New("process died"))
		<-sw.done
	}
	w.nlock.drop()
	w.lock.unlock()
}
