package store

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// rewriteManifest applies edit to the decoded manifest of snapshot s and
// writes it back sealed (a valid checksum, canonical form): what a crafted
// store holds. Only the validation of its content can reject it.
func rewriteManifest(t *testing.T, root, s string, edit func(m *Manifest)) {
	t.Helper()
	path := filepath.Join(root, snapshotsDir, s, manifestFile)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	m, err := decodeManifest(s, path, data)
	if err != nil {
		t.Fatal(err)
	}
	edit(m)
	if err := os.WriteFile(path, m.seal(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestManifestValidation writes manifests whose checksum is right but whose
// content is not: each must be refused when read, naming the field.
func TestManifestValidation(t *testing.T) {
	c := content{
		"a": {"memory": randomData(1, 700<<10), "config": []byte("cfg")},
		"b": {"memory": []byte("bbb")},
		"":  {"framelog": []byte("frames")},
	}
	stream := func(m *Manifest) *Stream { return &m.VMs[0].Streams[1] } // a/memory, two or more chunks
	tests := []struct {
		name    string
		edit    func(m *Manifest)
		mention string
		want    error
	}{
		{"vm name with dotdot", func(m *Manifest) { m.VMs[0].Name = "../x" }, `vms[0].name`, ErrInvalidName},
		{"vm name with slash", func(m *Manifest) { m.VMs[0].Name = "a/b" }, `vms[0].name`, ErrInvalidName},
		{"vm name empty", func(m *Manifest) { m.VMs[0].Name = "" }, `vms[0].name`, ErrInvalidName},
		{"vm name with NUL", func(m *Manifest) { m.VMs[0].Name = "a\x00" }, `vms[0].name`, ErrInvalidName},
		{"vm name too long", func(m *Manifest) { m.VMs[0].Name = strings.Repeat("a", maxNameLen+1) }, `vms[0].name`, ErrInvalidName},
		{"vm name dot", func(m *Manifest) { m.VMs[1].Name = "." }, `vms[1].name`, ErrInvalidName},
		{"vm name unicode", func(m *Manifest) { m.VMs[1].Name = "é" }, `vms[1].name`, ErrInvalidName},
		{"vms unsorted", func(m *Manifest) { m.VMs[0].Name, m.VMs[1].Name = m.VMs[1].Name, m.VMs[0].Name }, `vms[1].name`, nil},
		{"stream name dotdot", func(m *Manifest) { m.VMs[0].Streams[0].Name = ".." }, `vms[0].streams[0].name`, ErrInvalidName},
		{"extra name absolute", func(m *Manifest) { m.Extras[0].Name = "/etc/passwd" }, `extras[0].name`, ErrInvalidName},
		{"duplicate stream", func(m *Manifest) { m.VMs[0].Streams[1].Name = m.VMs[0].Streams[0].Name }, `vms[0].streams[1].name`, nil},
		{"snapshot name", func(m *Manifest) { m.Name = "../s" }, "name", nil},
		{"negative chunk size", func(m *Manifest) { stream(m).Chunks[0].Size = -1 }, `chunks[0].size`, nil},
		{"zero chunk size", func(m *Manifest) { stream(m).Chunks[0].Size = 0 }, `chunks[0].size`, nil},
		{"huge chunk size", func(m *Manifest) { stream(m).Chunks[0].Size = maxChunk + 1 }, `chunks[0].size`, nil},
		{"zero stored size", func(m *Manifest) { stream(m).Chunks[0].Stored = 0 }, `chunks[0].stored`, nil},
		{"huge stored size", func(m *Manifest) { stream(m).Chunks[0].Stored = 1 << 40 }, `chunks[0].stored`, nil},
		{"negative length", func(m *Manifest) { m.Extras[0].Chunks = nil; m.Extras[0].Length = -1 }, `extras[0].length`, nil},
		{"length mismatch", func(m *Manifest) { stream(m).Length++ }, `vms[0].streams[1].length`, nil},
		{"address uppercase", func(m *Manifest) { stream(m).Chunks[1].Addr = strings.ToUpper(stream(m).Chunks[1].Addr) }, `chunks[1].addr`, nil},
		{"address path", func(m *Manifest) { stream(m).Chunks[1].Addr = "../../../../etc/passwd" + strings.Repeat("0", 42) }, `chunks[1].addr`, nil},
		{"address short", func(m *Manifest) { stream(m).Chunks[1].Addr = "abcd" }, `chunks[1].addr`, nil},
		{"stream sha256", func(m *Manifest) { stream(m).SHA256 = "x" }, `vms[0].streams[1].sha256`, nil},
		{"one address, two sizes", func(m *Manifest) {
			m.VMs[1].Streams[0].Chunks[0].Addr = stream(m).Chunks[0].Addr
		}, `vms[1].streams[0].chunks[0]`, nil},
		{"negative added chunks", func(m *Manifest) { m.Added.Chunks = -1 }, "added", nil},
		{"negative added bytes", func(m *Manifest) { m.Added.Stored = -5 }, "added", nil},
		{"label key with slash", func(m *Manifest) { m.Labels["a/b"] = "v" }, `labels["a/b"]`, ErrInvalidName},
		{"label key empty", func(m *Manifest) { m.Labels[""] = "v" }, `labels[""]`, ErrInvalidName},
		{"label value with NUL", func(m *Manifest) { m.Labels["machine"] = "pc\x00" }, `labels["machine"]`, nil},
		{"label value too long", func(m *Manifest) { m.Labels["machine"] = strings.Repeat("x", maxLabelLen+1) }, `labels["machine"]`, nil},
		{"algorithm with escape", func(m *Manifest) { m.Algorithm = "\x1b[2Jvnsnap" }, "algorithm", ErrInvalidName},
		{"unknown codec", func(m *Manifest) { m.Chunking.Codec = "lz4" }, "chunking.codec", ErrSchema},
		{"chunking sizes", func(m *Manifest) { m.Chunking.MaxSize = 1 << 40 }, "chunking", nil},
		{"chunking polynomial", func(m *Manifest) { m.Chunking.Polynomial = "\x1b" }, "chunking.polynomial", nil},
		{"schema 3", func(m *Manifest) { m.Schema = 3 }, "version 3", ErrSchema},
		{"schema 0", func(m *Manifest) { m.Schema = 0 }, "version 0", ErrSchema},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			writeSnapshot(t, root, "s", testMeta(), c)
			if got := len(stream(mustOpen(t, root, "s").Manifest()).Chunks); got < 2 {
				t.Fatalf("fixture: a/memory has %d chunks, want 2 or more", got)
			}
			rewriteManifest(t, root, "s", tt.edit)
			s, err := Open(root, "s")
			if err == nil {
				s.Close()
				t.Fatal("Open succeeded, want an error")
			}
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrSchema) {
				t.Errorf("Open = %v, want ErrCorrupt or ErrSchema", err)
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("Open = %v, want errors.Is %v", err, tt.want)
			}
			if !strings.Contains(err.Error(), tt.mention) || !strings.Contains(err.Error(), manifestFile) {
				t.Errorf("Open error %q does not name %q and the file", err, tt.mention)
			}
			infos, err := List(root)
			if err != nil || len(infos) != 1 || infos[0].Err == nil {
				t.Errorf("List = %+v, %v; want s with Err set", infos, err)
			}
		})
	}
}

// TestCreateRefusesWhatReadersRefuse: the writer applies the reader's rules,
// so it never writes a manifest that no reader accepts.
func TestCreateRefusesWhatReadersRefuse(t *testing.T) {
	root := t.TempDir()
	tests := []struct {
		name    string
		meta    func(m *Meta)
		mention string
	}{
		{"label key with slash", func(m *Meta) { m.Labels["a/b"] = "v" }, `labels["a/b"]`},
		{"label value with NUL", func(m *Meta) { m.Labels["k"] = "\x00" }, `labels["k"]`},
		{"label value too long", func(m *Meta) { m.Labels["k"] = strings.Repeat("x", maxLabelLen+1) }, `labels["k"]`},
		{"algorithm with newline", func(m *Meta) { m.Algorithm = "a\nb" }, "algorithm"},
		{"year 10000", func(m *Meta) { m.Created = m.Created.AddDate(10000, 0, 0) }, "created"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := testMeta()
			tt.meta(&m)
			w, err := Create(root, "s", m)
			if err == nil {
				w.Abort()
				t.Fatal("Create succeeded, want an error")
			}
			if !strings.Contains(err.Error(), tt.mention) {
				t.Errorf("Create error %q does not name %q", err, tt.mention)
			}
		})
	}
}
