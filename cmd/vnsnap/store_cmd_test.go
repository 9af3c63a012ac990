package main

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vnsnap/vnsnap/store"
)

// writeStoreSnapshot writes a small snapshot with VMs a and b straight into
// the store.
func writeStoreSnapshot(t *testing.T, root, name string, data []byte) {
	t.Helper()
	w, err := store.Create(root, name, store.Meta{Created: time.Unix(1e9, 0), Algorithm: "vnsnap-memory", Epoch: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	for _, vm := range []string{"a", "b"} {
		sw, err := w.Stream(vm, "memory")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := sw.Write(data); err != nil {
			t.Fatal(err)
		}
		if err := sw.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
}

// TestLsSizes checks ls's size columns: two VMs with the same 3 MiB of
// incompressible memory store it once (dedup 2x), and a second snapshot of
// the same memory adds nothing new to the pool.
func TestLsSizes(t *testing.T) {
	root := t.TempDir()
	data := make([]byte, 3<<20)
	if _, err := rand.NewChaCha8([32]byte{1}).Read(data); err != nil {
		t.Fatal(err)
	}
	writeStoreSnapshot(t, root, "first", data)
	writeStoreSnapshot(t, root, "second", data)
	code, out, stderr := runCmd("ls", "--store", root)
	if code != 0 {
		t.Fatalf("ls: exit %d, %q", code, stderr)
	}
	rows := map[string][]string{}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(l)
		rows[f[0]] = f
	}
	if h := rows["NAME"]; len(h) != 9 || h[7] != "NEW" || h[8] != "DEDUP" {
		t.Fatalf("ls header %q, want NEW and DEDUP columns", h)
	}
	// NAME CREATED(2 fields) ALGORITHM EPOCH VMS SIZE STORED NEW DEDUP
	for name, want := range map[string][3]string{
		"first":  {"6.0MiB", "3.0MiB", "2.0x"},
		"second": {"6.0MiB", "0.0MiB", "2.0x"},
	} {
		f := rows[name]
		if len(f) != 10 {
			t.Fatalf("ls row %q, want 10 fields", f)
		}
		if got := [3]string{f[6], f[8], f[9]}; got != want {
			t.Errorf("%s: SIZE NEW DEDUP = %v, want %v (row %q)", name, got, want, f)
		}
	}
}

// TestStoreRmGc removes a snapshot with rm, frees its chunks with gc, and
// checks the errors of rm for a missing name and of gc while a writer runs.
func TestStoreRmGc(t *testing.T) {
	root := t.TempDir()
	// Smaller than the minimum chunk: one chunk each, shared by both VMs.
	writeStoreSnapshot(t, root, "keep", []byte("kept data"))
	writeStoreSnapshot(t, root, "drop", []byte("dropped data"))

	code, out, stderr := runCmd("rm", "--store", root, "missing")
	if code == 0 || !strings.Contains(stderr, `no snapshot "missing" in `+root) {
		t.Errorf("rm missing: exit %d, stderr %q; want non-zero naming the snapshot and store", code, stderr)
	}
	if code, _, stderr := runCmd("rm", "--store", root); code == 0 || !strings.Contains(stderr, "snapshot name") {
		t.Errorf("rm without a name: exit %d, stderr %q", code, stderr)
	}
	if code, out, stderr = runCmd("rm", "--store", root, "drop"); code != 0 || !strings.Contains(out, "removed snapshot drop") {
		t.Fatalf("rm drop: exit %d, %q %q", code, out, stderr)
	}
	if code, out, stderr = runCmd("ls", "--store", root); code != 0 || strings.Contains(out, "drop") || !strings.Contains(out, "keep") {
		t.Errorf("ls after rm: exit %d, %q %q; want keep only", code, out, stderr)
	}

	// A writer holds the store: gc refuses, naming it, and says what to do.
	w, err := store.Create(root, "pending", store.Meta{Created: time.Unix(1e9, 0)})
	if err != nil {
		t.Fatal(err)
	}
	code, _, stderr = runCmd("gc", "--store", root)
	if code == 0 || !strings.Contains(stderr, `being written: "pending"`) || !strings.Contains(stderr, "--wait") {
		t.Errorf("gc during a write: exit %d, stderr %q; want non-zero naming the writer and --wait", code, stderr)
	}
	if code, _, stderr := runCmd("rm", "--store", root, "pending"); code == 0 || !strings.Contains(stderr, `snapshot "pending" is being written by another writer`) {
		t.Errorf("rm of a snapshot being written: exit %d, stderr %q", code, stderr)
	}
	w.Abort()

	if code, out, stderr = runCmd("gc", "--store", root, "-n"); code != 0 || !strings.Contains(out, "would remove 1 unreferenced chunk files") {
		t.Errorf("gc -n: exit %d, %q %q; want 1 chunk to go", code, out, stderr)
	}
	if code, out, stderr = runCmd("gc", "--store", root); code != 0 || !strings.Contains(out, "removed 1 unreferenced chunk files") {
		t.Errorf("gc: exit %d, %q %q; want 1 chunk removed", code, out, stderr)
	}
	if code, out, stderr = runCmd("verify", "--store", root, "keep"); code != 0 || !strings.Contains(out, "keep ok") {
		t.Errorf("verify keep after gc: exit %d, %q %q", code, out, stderr)
	}
	if code, out, _ = runCmd("gc", "--store", root); code != 0 || !strings.Contains(out, "removed 0 unreferenced") {
		t.Errorf("second gc: exit %d, %q; want nothing left to remove", code, out)
	}
}

// TestLsVerifyDamagedStore: a damaged manifest (a FIFO, or edited) makes ls
// and verify exit non-zero at once, naming the snapshot and the file, and
// gc refuses to collect; rm then removes the snapshot.
func TestLsVerifyDamagedStore(t *testing.T) {
	for _, damage := range []string{"fifo", "edited"} {
		t.Run(damage, func(t *testing.T) {
			root := t.TempDir()
			writeStoreSnapshot(t, root, "good", []byte("g"))
			writeStoreSnapshot(t, root, "bad", []byte("b"))
			path := filepath.Join(root, "snapshots", "bad", "manifest.json")
			want := "named pipe"
			if damage == "fifo" {
				if err := os.Remove(path); err != nil {
					t.Fatal(err)
				}
				if err := syscall.Mkfifo(path, 0o644); err != nil {
					t.Fatal(err)
				}
			} else {
				b, err := os.ReadFile(path)
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(strings.Replace(string(b), `"epoch": 1`, `"epoch": 2`, 1)), 0o644); err != nil {
					t.Fatal(err)
				}
				want = "checksum"
			}
			code, out, stderr := runCmd("ls", "--store", root)
			if code == 0 || !strings.Contains(out, "good") || !strings.Contains(out, "DAMAGED") ||
				!strings.Contains(stderr, `snapshot "bad"`) || !strings.Contains(stderr, path) || !strings.Contains(stderr, want) {
				t.Errorf("ls: exit %d, out %q, stderr %q; want non-zero, good listed, bad named with %s and %q", code, out, stderr, path, want)
			}
			code, _, stderr = runCmd("verify", "--store", root, "bad")
			if code == 0 || !strings.Contains(stderr, path) || !strings.Contains(stderr, want) {
				t.Errorf("verify bad: exit %d, stderr %q; want non-zero naming %s", code, stderr, path)
			}
			if code, _, stderr = runCmd("gc", "--store", root); code == 0 || !strings.Contains(stderr, "refusing") {
				t.Errorf("gc with a damaged manifest: exit %d, stderr %q; want a refusal", code, stderr)
			}
			if code, _, stderr = runCmd("rm", "--store", root, "bad"); code != 0 {
				t.Errorf("rm bad: exit %d, %q", code, stderr)
			}
			if code, out, stderr = runCmd("ls", "--store", root); code != 0 || strings.Contains(out, "bad") {
				t.Errorf("ls after rm: exit %d, %q %q", code, out, stderr)
			}
		})
	}
}

// TestVerifyChunkFIFO: a chunk file replaced by a FIFO is reported at once.
func TestVerifyChunkFIFO(t *testing.T) {
	root := t.TempDir()
	writeStoreSnapshot(t, root, "s", []byte("data"))
	s, err := store.Open(root, "s")
	if err != nil {
		t.Fatal(err)
	}
	addr := s.Manifest().VMs[0].Streams[0].Chunks[0].Addr
	s.Close()
	path := filepath.Join(root, "chunks", addr[:2], addr)
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(path, 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, stderr := runCmd("verify", "--store", root, "s")
	if code == 0 || !strings.Contains(out, "named pipe") || !strings.Contains(out, `vm "a"`) || !strings.Contains(stderr, "damaged") {
		t.Errorf("verify: exit %d, out %q, stderr %q; want non-zero naming the FIFO chunk of a and b", code, out, stderr)
	}
}
