package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestPolynomialIrreducible(t *testing.T) {
	if !polynomial.Irreducible() {
		t.Fatalf("polynomial %v is not irreducible", polynomial)
	}
}

func TestRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		c    content
	}{
		{"empty snapshot", content{}},
		{"empty stream", content{"a": {"memory": {}}}},
		{"one byte", content{"a": {"config": {42}}}},
		{"several vms and streams", content{
			"a":  {"memory": randomData(1, 3<<20+17), "disk": pageData(2, 2<<20), "config": []byte(`{"cpus":2}`)},
			"b":  {"memory": pageData(3, 5<<20+4095)},
			"c3": {"memory": randomData(4, 700<<10)},
			"":   {"framelog": pageData(5, 300<<10)},
		}},
		{"zeros beyond max chunk", content{"z": {"memory": make([]byte, 9<<20+1)}}},
		{"repetitive", content{"r": {"memory": bytes.Repeat([]byte("0123456789abcdef"), 1<<18)}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			meta := testMeta()
			writeSnapshot(t, root, "snap", meta, tt.c)
			s := mustOpen(t, root, "snap")
			m := s.Manifest()
			if m.Name != "snap" || !m.Created.Equal(meta.Created) || m.Algorithm != meta.Algorithm || m.Epoch != meta.Epoch {
				t.Errorf("manifest header = %q %v %q %d, want snap %v %q %d", m.Name, m.Created, m.Algorithm, m.Epoch,
					meta.Created, meta.Algorithm, meta.Epoch)
			}
			if diff := cmp.Diff(meta.Labels, m.Labels); diff != "" {
				t.Errorf("labels (-want +got):\n%s", diff)
			}
			got := content{}
			for vm, streams := range tt.c {
				for name, want := range streams {
					data, err := readStream(s, vm, name)
					if err != nil {
						t.Fatalf("read %q/%q: %v", vm, name, err)
					}
					if !bytes.Equal(data, want) {
						t.Errorf("read %q/%q: got %d bytes, want %d (contents differ)", vm, name, len(data), len(want))
					}
					st := m.find(vm, name)
					sum := sha256.Sum256(want)
					if st.Length != int64(len(want)) || st.SHA256 != hex.EncodeToString(sum[:]) {
						t.Errorf("manifest %q/%q: got length %d sha %s, want %d %x", vm, name, st.Length, st.SHA256, len(want), sum)
					}
					for i, c := range st.Chunks {
						if c.Size > maxChunk || (c.Size < minChunk && i != len(st.Chunks)-1) {
							t.Errorf("%q/%q chunk %d: size %d outside [%d, %d]", vm, name, i, c.Size, minChunk, maxChunk)
						}
					}
					if got[vm] == nil {
						got[vm] = map[string][]byte{}
					}
					got[vm][name] = want
				}
			}
			problems, err := s.Verify(context.Background())
			if err != nil || len(problems) != 0 {
				t.Errorf("Verify() = %v, %v; want no problems", problems, err)
			}
		})
	}
}

func TestWriteToMatchesRead(t *testing.T) {
	root := t.TempDir()
	want := pageData(9, 3<<20+5)
	writeSnapshot(t, root, "s", testMeta(), content{"a": {"memory": want}})
	s := mustOpen(t, root, "s")
	r, err := s.Reader("a", "memory")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var out bytes.Buffer
	n, err := io.Copy(&out, r) // uses WriteTo
	if err != nil || n != int64(len(want)) || !bytes.Equal(out.Bytes(), want) {
		t.Fatalf("io.Copy = %d, %v; want %d bytes, nil (equal: %v)", n, err, len(want), bytes.Equal(out.Bytes(), want))
	}
	if got := r.Len(); got != int64(len(want)) {
		t.Errorf("Len() = %d, want %d", got, len(want))
	}
}

// TestManifestDeterministic checks that the manifest does not depend on the
// order streams were opened or finished in.
func TestManifestDeterministic(t *testing.T) {
	c := content{
		"b": {"memory": pageData(1, 1<<20), "disk": randomData(2, 300<<10)},
		"a": {"memory": pageData(3, 600<<10)},
		"":  {"framelog": []byte("frames")},
	}
	var sums []string
	for i := range 3 {
		root := t.TempDir()
		writeSnapshot(t, root, "s", testMeta(), c)
		data, err := os.ReadFile(filepath.Join(root, snapshotsDir, "s", manifestFile))
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(data)
		sums = append(sums, hex.EncodeToString(sum[:]))
		if i > 0 && sums[i] != sums[0] {
			t.Fatalf("manifest hash run %d = %s, want %s (same as run 0)", i, sums[i], sums[0])
		}
	}
}

func TestDedup(t *testing.T) {
	small := randomData(10, 4<<20)
	base := randomData(11, 16<<20)
	edited := bytes.Clone(base)
	for _, off := range []int{3 << 20, 11<<20 + 12345} { // two dirtied pages
		copy(edited[off:off+pageSize], randomData(uint64(off), pageSize))
	}
	tests := []struct {
		name         string
		first, again content
		// maxNew is the most chunk files the second snapshot may add.
		maxNew int
	}{
		{"same stream again", content{"a": {"memory": small}}, content{"a": {"memory": small}}, 0},
		{"same stream other vm", content{"a": {"memory": small}}, content{"b": {"memory": small}}, 0},
		{"same stream other name", content{"a": {"memory": small}}, content{"a": {"disk": small}}, 0},
		{"shifted by one byte", content{"a": {"memory": small}}, content{"a": {"memory": append([]byte{0}, small...)}}, 1},
		{"two dirtied pages", content{"a": {"memory": base}}, content{"a": {"memory": edited}}, 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			writeSnapshot(t, root, "s1", testMeta(), tt.first)
			before := len(chunkFiles(t, root))
			writeSnapshot(t, root, "s2", testMeta(), tt.again)
			after := len(chunkFiles(t, root))
			t.Logf("first snapshot: %d chunk files; second added %d", before, after-before)
			if after-before > tt.maxNew {
				t.Errorf("second snapshot added %d chunk files (of %d), want at most %d", after-before, before, tt.maxNew)
			}
			s2 := mustOpen(t, root, "s2")
			if got := s2.Manifest().Added.Chunks; got != after-before {
				t.Errorf("manifest Added.Chunks = %d, want %d (files added)", got, after-before)
			}
			for vm, streams := range tt.again {
				for name, want := range streams {
					got, err := readStream(s2, vm, name)
					if err != nil || !bytes.Equal(got, want) {
						t.Errorf("read %s/%s: err %v, equal %v; want nil, true", vm, name, err, bytes.Equal(got, want))
					}
				}
			}
		})
	}
}

func TestDedupWithinSnapshot(t *testing.T) {
	root := t.TempDir()
	data := randomData(5, 6<<20)
	// The same image for four VMs, written concurrently: writers race to
	// create the same chunk files.
	writeSnapshot(t, root, "s", testMeta(), content{
		"a": {"memory": data}, "b": {"memory": data}, "c": {"memory": data}, "d": {"memory": data},
	})
	s := mustOpen(t, root, "s")
	refs := len(s.Manifest().VMs[0].Streams[0].Chunks)
	if got := len(chunkFiles(t, root)); got != refs {
		t.Errorf("chunk files = %d, want %d (one VM's chunks)", got, refs)
	}
	if got := s.Manifest().Added.Chunks; got != refs {
		t.Errorf("Added.Chunks = %d, want %d", got, refs)
	}
}

func TestList(t *testing.T) {
	root := t.TempDir()
	shared := randomData(1, 2<<20)
	own := randomData(2, 1<<20)
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	meta := func(d time.Duration) Meta { m := testMeta(); m.Created = t0.Add(d); return m }
	// Created out of name order: List sorts by time.
	writeSnapshot(t, root, "zeta", meta(0), content{"a": {"memory": shared}})
	writeSnapshot(t, root, "alpha", meta(time.Hour), content{"a": {"memory": shared}, "b": {"memory": own}})
	// An unfinished write: a directory without a manifest.
	w, err := Create(root, "unfinished", meta(2*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()

	infos, err := List(root)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, in := range infos {
		names = append(names, in.Name)
		if in.Err != nil {
			t.Errorf("%s: Err = %v, want nil", in.Name, in.Err)
		}
	}
	if diff := cmp.Diff([]string{"zeta", "alpha"}, names); diff != "" {
		t.Fatalf("List names (-want +got):\n%s", diff)
	}
	z, a := infos[0], infos[1]
	if diff := cmp.Diff([]string{"a", "b"}, a.VMs); diff != "" {
		t.Errorf("alpha VMs (-want +got):\n%s", diff)
	}
	if a.Logical != int64(len(shared)+len(own)) || a.Streams != 2 {
		t.Errorf("alpha Logical, Streams = %d, %d; want %d, 2", a.Logical, a.Streams, len(shared)+len(own))
	}
	if z.Exclusive != 0 {
		t.Errorf("zeta Exclusive = %d, want 0 (all its chunks are in alpha too)", z.Exclusive)
	}
	if a.Exclusive == 0 || a.Exclusive >= a.Stored {
		t.Errorf("alpha Exclusive = %d, want in (0, Stored=%d)", a.Exclusive, a.Stored)
	}
	if a.Added.Chunks == 0 || a.Added.Chunks >= a.Chunks {
		t.Errorf("alpha Added.Chunks = %d, want in (0, Chunks=%d)", a.Added.Chunks, a.Chunks)
	}
	if r := z.DedupRatio(); r < 0.99 || r > 1.01 {
		t.Errorf("zeta DedupRatio() = %.3f, want about 1 (random data)", r)
	}

	// A damaged manifest is listed with Err, not dropped.
	flipByte(t, filepath.Join(root, snapshotsDir, "zeta", manifestFile), 40, 0x01)
	infos, err = List(root)
	if err != nil {
		t.Fatal(err)
	}
	if len(infos) != 2 || infos[0].Name != "zeta" || !errors.Is(infos[0].Err, ErrCorrupt) {
		t.Errorf("List after damage = %+v, want zeta first with ErrCorrupt", infos)
	}
}

func TestBadInput(t *testing.T) {
	root := t.TempDir()
	writeSnapshot(t, root, "exists", testMeta(), content{"a": {"memory": []byte("x")}})
	file := filepath.Join(root, "plainfile")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	longName := strings.Repeat("n", maxNameLen+1)

	create := func(root, name string, labels map[string]string) error {
		m := testMeta()
		m.Labels = labels
		w, err := Create(root, name, m)
		if err == nil {
			w.Abort()
		}
		return err
	}
	n := 0
	stream := func(vm, s string) error {
		n++
		w, err := Create(root, fmt.Sprintf("s%d", n), testMeta())
		if err != nil {
			return err
		}
		defer w.Abort()
		if _, err := w.Stream("dup", "memory"); err != nil {
			return err
		}
		_, err = w.Stream(vm, s)
		return err
	}
	open := func(name string) error {
		s, err := Open(root, name)
		if err == nil {
			s.Close()
		}
		return err
	}
	reader := func(vm, st string) error {
		s := mustOpen(t, root, "exists")
		_, err := s.Reader(vm, st)
		return err
	}

	tests := []struct {
		name    string
		err     error
		want    error
		mention string // the message must name the field or file
	}{
		{"missing root", create(filepath.Join(root, "nope"), "s", nil), os.ErrNotExist, "nope"},
		{"root is a file", create(file, "s", nil), nil, "not a directory"},
		{"empty root", create("", "s", nil), nil, "root"},
		{"slash in name", create(root, "a/b", nil), ErrInvalidName, "snapshot name"},
		{"dotdot", create(root, "..", nil), ErrInvalidName, "snapshot name"},
		{"hidden name", create(root, ".x", nil), ErrInvalidName, "snapshot name"},
		{"empty name", create(root, "", nil), ErrInvalidName, "snapshot name"},
		{"long name", create(root, longName, nil), ErrInvalidName, "longer than"},
		{"space in name", create(root, "a b", nil), ErrInvalidName, "' '"},
		{"bad label", create(root, "s", map[string]string{"k": "\xff"}), nil, `labels["k"]`},
		{"empty label key", create(root, "s", map[string]string{"": "v"}), ErrInvalidName, `labels[""]`},
		{"existing snapshot", create(root, "exists", nil), ErrExists, `"exists"`},
		{"vm with slash", stream("a/b", "memory"), ErrInvalidName, "vm name"},
		{"empty vm", stream("", "memory"), ErrInvalidName, "vm name"},
		{"stream with slash", stream("a", "../x"), ErrInvalidName, "stream name"},
		{"duplicate stream", stream("dup", "memory"), ErrDuplicate, `vm "dup" stream "memory"`},
		{"open missing", open("missing"), ErrNotFound, `"missing"`},
		{"open bad name", open("a/../b"), ErrInvalidName, "snapshot name"},
		{"reader missing vm", reader("zz", "memory"), ErrNoStream, `vm "zz"`},
		{"reader missing stream", reader("a", "disk"), ErrNoStream, `stream "disk"`},
		{"delete missing", Delete(root, "missing"), ErrNotFound, `"missing"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.err == nil {
				t.Fatalf("got nil error, want %v", tt.want)
			}
			if tt.want != nil && !errors.Is(tt.err, tt.want) {
				t.Errorf("got %v, want errors.Is %v", tt.err, tt.want)
			}
			if !strings.Contains(tt.err.Error(), tt.mention) {
				t.Errorf("got %q, want it to mention %q", tt.err, tt.mention)
			}
		})
	}
}

func TestValidName(t *testing.T) {
	for _, ok := range []string{"a", "vm-1", "snap_2025.11.25", "_x", "A9", strings.Repeat("x", maxNameLen)} {
		if err := ValidName(ok); err != nil {
			t.Errorf("ValidName(%q) = %v, want nil", ok, err)
		}
	}
	for _, bad := range []string{"", ".", "..", "-x", ".x", "a/b", `a\b`, "a:b", "é", "a\x00"} {
		if err := ValidName(bad); !errors.Is(err, ErrInvalidName) {
			t.Errorf("ValidName(%q) = %v, want ErrInvalidName", bad, err)
		}
	}
}
