package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestReuseDamagedPoolChunk damages a chunk file that is already in the
// pool, in every way a disk, a crash or a hostile hand can, and then writes a
// new snapshot that shares the chunk. The writer must not trust the damaged
// file: the new snapshot commits, verifies and reads back, and the chunk file
// is repaired, so the older snapshot verifies again too.
func TestReuseDamagedPoolChunk(t *testing.T) {
	data := randomData(1, 3<<20) // several chunks
	tests := []struct {
		name   string
		damage func(t *testing.T, path string, orig []byte)
	}{
		{"flipped byte", func(t *testing.T, path string, orig []byte) { flipByte(t, path, int64(len(orig)/2), 0x20) }},
		{"flipped header byte", func(t *testing.T, path string, orig []byte) { flipByte(t, path, 5, 0x01) }},
		{"empty", func(t *testing.T, path string, orig []byte) { mustTruncate(t, path, 0) }},
		{"truncated", func(t *testing.T, path string, orig []byte) { mustTruncate(t, path, int64(len(orig)-1)) }},
		{"extended", func(t *testing.T, path string, orig []byte) {
			if err := os.WriteFile(path, append(bytes.Clone(orig), 0), 0o644); err != nil {
				t.Fatal(err)
			}
		}},
		{"another chunk's file", func(t *testing.T, path string, orig []byte) {
			other := randomData(9, 300<<10)
			enc := newEncoder()
			defer enc.Close()
			if err := os.WriteFile(path, encodeChunk(enc, nil, other), 0o644); err != nil {
				t.Fatal(err)
			}
		}},
		{"fifo", func(t *testing.T, path string, orig []byte) {
			mustRemove(t, path)
			if err := syscall.Mkfifo(path, 0o644); err != nil {
				t.Fatal(err)
			}
		}},
		{"symlink to /dev/zero", func(t *testing.T, path string, orig []byte) {
			mustRemove(t, path)
			if err := os.Symlink("/dev/zero", path); err != nil {
				t.Fatal(err)
			}
		}},
		{"symlink to a sound copy", func(t *testing.T, path string, orig []byte) {
			cp := filepath.Join(t.TempDir(), "copy")
			if err := os.WriteFile(cp, orig, 0o644); err != nil {
				t.Fatal(err)
			}
			mustRemove(t, path)
			if err := os.Symlink(cp, path); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			writeSnapshot(t, root, "old", testMeta(), content{"a": {"memory": data}})
			old := mustOpen(t, root, "old")
			ref := old.Manifest().VMs[0].Streams[0].Chunks[1]
			old.Close()
			path := chunkPath(root, ref.Addr)
			orig, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			tt.damage(t, path, orig)

			writeSnapshot(t, root, "new", testMeta(), content{"b": {"memory": data}})
			s := mustOpen(t, root, "new")
			if problems, err := s.Verify(context.Background()); err != nil || len(problems) != 0 {
				t.Fatalf("Verify(new) = %v, %v; want a sound snapshot", problems, err)
			}
			if got, err := readStream(s, "b", "memory"); err != nil || !bytes.Equal(got, data) {
				t.Fatalf("read new b/memory: %v, equal %v", err, bytes.Equal(got, data))
			}
			if got := s.Manifest().Added.Chunks; got != 1 {
				t.Errorf("new snapshot added %d chunks, want 1 (the repaired one)", got)
			}
			fi, err := os.Lstat(path)
			if err != nil || !fi.Mode().IsRegular() {
				t.Fatalf("repaired chunk file: %v, mode %v; want a regular file", err, fi.Mode())
			}
			old = mustOpen(t, root, "old")
			if problems, err := old.Verify(context.Background()); err != nil || len(problems) != 0 {
				t.Errorf("Verify(old) after the repair = %v, %v; want sound", problems, err)
			}
			if tmps, _ := filepath.Glob(filepath.Join(filepath.Dir(path), tmpPrefix+"*")); len(tmps) != 0 {
				t.Errorf("temporary files left in the pool: %v", tmps)
			}
		})
	}
}

// TestReuseSoundPoolChunk checks that verification does not rewrite sound
// chunk files: a second snapshot of the same data adds nothing.
func TestReuseSoundPoolChunk(t *testing.T) {
	root := t.TempDir()
	data := pageData(3, 2<<20)
	writeSnapshot(t, root, "s1", testMeta(), content{"a": {"memory": data}})
	before := make(map[string]uint64)
	for _, p := range chunkFiles(t, root) {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		before[p] = fi.Sys().(*syscall.Stat_t).Ino
	}
	writeSnapshot(t, root, "s2", testMeta(), content{"a": {"memory": data}, "b": {"memory": data}})
	if got := mustOpen(t, root, "s2").Manifest().Added; got.Chunks != 0 || got.Stored != 0 {
		t.Errorf("s2 added %+v, want nothing", got)
	}
	for p, ino := range before {
		fi, err := os.Stat(p)
		if err != nil || fi.Sys().(*syscall.Stat_t).Ino != ino {
			t.Errorf("sound chunk %s was replaced (%v)", filepath.Base(p), err)
		}
	}
}

// TestReusePoolEntryIsDirectory puts a directory where a chunk file belongs:
// the writer cannot repair it and must fail cleanly, naming the file.
func TestReusePoolEntryIsDirectory(t *testing.T) {
	root := t.TempDir()
	data := randomData(4, 1<<20)
	writeSnapshot(t, root, "old", testMeta(), content{"a": {"memory": data}})
	ref := mustOpen(t, root, "old").Manifest().VMs[0].Streams[0].Chunks[0]
	path := chunkPath(root, ref.Addr)
	mustRemove(t, path)
	if err := os.MkdirAll(filepath.Join(path, "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	w, err := Create(root, "new", testMeta())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	sw, err := w.Stream("a", "memory")
	if err != nil {
		t.Fatal(err)
	}
	sw.Write(data)
	sw.Close()
	err = w.Commit()
	if err == nil {
		t.Fatal("Commit over a directory in the pool succeeded, want an error")
	}
	if !bytes.Contains([]byte(err.Error()), []byte(ref.Addr)) {
		t.Errorf("Commit error %q does not name chunk %s", err, ref.Addr)
	}
}

func mustTruncate(t *testing.T, path string, n int64) {
	t.Helper()
	if err := os.Truncate(path, n); err != nil {
		t.Fatal(err)
	}
}

func mustRemove(t *testing.T, path string) {
	t.Helper()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
}

// TestWriterRefusesSymlinkedDirs: a store whose chunks, snapshots or shard
// directory is a symlink would make the writer put files elsewhere.
func TestWriterRefusesSymlinkedDirs(t *testing.T) {
	for _, dir := range []string{chunksDir, snapshotsDir} {
		t.Run(dir, func(t *testing.T) {
			root, elsewhere := t.TempDir(), t.TempDir()
			if err := os.Symlink(elsewhere, filepath.Join(root, dir)); err != nil {
				t.Fatal(err)
			}
			w, err := Create(root, "s", testMeta())
			if err == nil {
				w.Abort()
				t.Fatal("Create succeeded, want an error")
			}
			if !bytes.Contains([]byte(err.Error()), []byte("symbolic link")) {
				t.Errorf("Create = %v, want it to name the symbolic link", err)
			}
		})
	}
	t.Run("shard", func(t *testing.T) {
		root, elsewhere := t.TempDir(), t.TempDir()
		data := []byte("some data")
		sum := sha256.Sum256(data)
		shard := filepath.Join(root, chunksDir, hex.EncodeToString(sum[:1]))
		if err := os.MkdirAll(filepath.Dir(shard), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(elsewhere, shard); err != nil {
			t.Fatal(err)
		}
		w, err := Create(root, "s", testMeta())
		if err != nil {
			t.Fatal(err)
		}
		defer w.Abort()
		sw, _ := w.Stream("a", "memory")
		sw.Write(data)
		sw.Close()
		if err := w.Commit(); err == nil || !bytes.Contains([]byte(err.Error()), []byte("symbolic link")) {
			t.Errorf("Commit = %v, want an error naming the symbolic link", err)
		}
		if files, _ := os.ReadDir(elsewhere); len(files) != 0 {
			t.Errorf("the writer put %d files outside the store", len(files))
		}
	})
}

// TestPoolCheckByAddress covers the check put makes of a chunk file another
// writer published first, when only the address is at hand.
func TestPoolCheckByAddress(t *testing.T) {
	root := t.TempDir()
	data := pageData(8, 100<<10)
	sum := sha256.Sum256(data)
	addr := hex.EncodeToString(sum[:])
	p := newPool(root)
	defer p.close()
	released := 0
	size, created, err := p.put(addr, data, func() { released++ })
	if err != nil || !created || released != 1 {
		t.Fatalf("put = %d, %v, %v, released %d times; want created, released once", size, created, err, released)
	}
	path := chunkPath(root, addr)
	if got, sound, _, err := p.check(path, nil, addr); err != nil || !sound || got != size {
		t.Errorf("check by address of a sound file = %d, %v, %v; want %d, sound", got, sound, err, size)
	}
	flipByte(t, path, size-2, 0x01)
	if _, sound, _, err := p.check(path, nil, addr); err != nil || sound {
		t.Errorf("check by address of a damaged file = %v, %v; want not sound", sound, err)
	}
	if _, created, err := p.put(addr, data, func() { released++ }); err != nil || !created || released != 2 {
		t.Errorf("put over a damaged file = %v, %v (released %d); want a repair", created, err, released)
	}
	if _, sound, _, _ := p.check(path, data, ""); !sound {
		t.Error("the repaired file is not sound")
	}
}
