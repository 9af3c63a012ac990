package store

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fuzzSeeds writes real snapshots and returns their manifests and chunk
// files, the seeds of the fuzz targets.
func fuzzSeeds(f *testing.F) (manifests, chunks [][]byte) {
	f.Helper()
	root := f.TempDir()
	writeSnapshot(f, root, "s", testMeta(), content{
		"a": {"memory": pageData(1, 300<<10), "config": []byte(`{"machine":"q35"}`)},
		"b": {"memory": []byte("bbb")},
		"":  {"framelog": []byte("frames")},
	})
	writeImages(f, root, "img", map[string][]byte{"a": imageData(9, 200<<10)})
	empty := testMeta()
	empty.Labels = nil
	empty.Algorithm = ""
	writeSnapshot(f, root, "empty", empty, content{})
	for _, name := range []string{"s", "empty", "img"} {
		b, err := os.ReadFile(filepath.Join(root, snapshotsDir, name, manifestFile))
		if err != nil {
			f.Fatal(err)
		}
		manifests = append(manifests, b)
	}
	for _, p := range chunkFiles(f, root) {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		chunks = append(chunks, b)
	}
	return manifests, chunks
}

// FuzzDecodeManifest feeds arbitrary bytes to the manifest decoder. It must
// never panic, must fail with ErrCorrupt or ErrSchema, and what it accepts
// must satisfy every rule readers rely on. Since random bytes rarely pass the
// checksum, each input is also decoded leniently, sealed with a correct
// checksum and decoded again: that reaches the field validation, as a crafted
// store would.
func FuzzDecodeManifest(f *testing.F) {
	manifests, _ := fuzzSeeds(f)
	for _, m := range manifests {
		f.Add(m)
		f.Add(bytes.Replace(m, []byte(`"name": "a"`), []byte(`"name": "../a"`), 1))
		f.Add(bytes.Replace(m, []byte(`"size": `), []byte(`"size": -`), 1))
	}
	f.Add([]byte(`{"schema": 1}`))
	f.Add([]byte(`{"schema": 1, "name": "s", "vms": [{"name": "a", "streams": [{"name": "m", "length": 1, "chunks": [{"addr": "x", "size": 1, "stored": 9}]}]}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		checkDecoded(t, "s", data)
		var lenient Manifest
		if json.Unmarshal(data, &lenient) != nil {
			return
		}
		if y := lenient.Created.Year(); y < 0 || y > 9999 {
			return // not encodable as JSON: the writer refuses such times
		}
		checkDecoded(t, lenient.Name, lenient.seal())
	})
}

// checkDecoded decodes data as snapshot name's manifest and checks the
// result against the rules, independently of check.
func checkDecoded(t *testing.T, name string, data []byte) {
	m, err := decodeManifest(name, "manifest.json", data)
	if err != nil {
		if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrSchema) {
			t.Fatalf("decode error %v is neither ErrCorrupt nor ErrSchema", err)
		}
		return
	}
	if !bytes.Equal(m.encode(), data) {
		t.Fatal("accepted a manifest that is not in canonical form")
	}
	if m.Name != name || ValidName(name) != nil {
		t.Fatalf("accepted snapshot name %q for %q", m.Name, name)
	}
	seen := map[string]ChunkRef{}
	m.eachStream(func(vm string, s *Stream) {
		for _, n := range []string{vm, s.Name} {
			if n != "" && (strings.ContainsAny(n, "/\x00\\") || n == "." || n == ".." || len(n) > maxNameLen) {
				t.Fatalf("accepted unsafe name %q", n)
			}
		}
		var sum int64
		for _, c := range s.Chunks {
			if b, err := hex.DecodeString(c.Addr); err != nil || len(b) != sha256.Size || strings.ToLower(c.Addr) != c.Addr {
				t.Fatalf("accepted chunk address %q", c.Addr)
			}
			if c.Size <= 0 || c.Size > maxChunk || c.Stored <= 0 || c.Stored > maxStored {
				t.Fatalf("accepted chunk sizes %d/%d", c.Size, c.Stored)
			}
			if p, ok := seen[c.Addr]; ok && p != c {
				t.Fatalf("accepted chunk %s with two sizes", c.Addr)
			}
			seen[c.Addr] = c
			sum += c.Size
		}
		if sum != s.Length {
			t.Fatalf("accepted stream length %d with chunks of %d bytes", s.Length, sum)
		}
	})
	m.eachImage(func(vm string, im *Image) {
		if ValidName(im.Name) != nil || !validAddr(im.Index) || im.Length <= 0 || im.IndexSize <= 0 || im.IndexSize > maxIndex {
			t.Fatalf("accepted image %+v of vm %q", im, vm)
		}
	})
	for k, v := range m.Labels {
		if ValidName(k) != nil || strings.IndexByte(v, 0) >= 0 || len(v) > maxLabelLen {
			t.Fatalf("accepted label %q=%q", k, v)
		}
	}
	if m.Algorithm != "" && ValidName(m.Algorithm) != nil {
		t.Fatalf("accepted algorithm %q", m.Algorithm)
	}
}

// FuzzDecodeChunk feeds arbitrary bytes to the chunk file decoder, both as
// read back (checked against an address) and as the writer checks a pool
// file before reuse (against the data in hand). It must never panic or
// return more than maxChunk bytes, and accepts only content matching what
// it was checked against.
func FuzzDecodeChunk(f *testing.F) {
	_, chunks := fuzzSeeds(f)
	for _, c := range chunks {
		if len(c) <= 4<<10 { // small inputs mutate fast
			f.Add(c, false)
			f.Add(c, true)
		}
	}
	enc := newEncoder()
	defer enc.Close()
	for _, d := range [][]byte{nil, []byte("x"), pageData(5, 8<<10), randomData(6, 1<<10), make([]byte, 64<<10)} {
		f.Add(encodeChunk(enc, nil, d), false)
	}
	f.Add([]byte(chunkMagic), false)
	dec := newDecoder()
	defer dec.Close()
	dst := make([]byte, 0, maxChunk)
	scratch := make([]byte, 0, maxChunk)
	f.Fuzz(func(t *testing.T, file []byte, againstData bool) {
		// The address and data to check against: those of the seed the
		// input came from, if it decodes at all, else arbitrary.
		var want []byte
		addr := strings.Repeat("0", 64)
		if len(file) > chunkHeader {
			if d, err := dec.DecodeAll(file[chunkHeader:], scratch[:0]); err == nil {
				want = bytes.Clone(d)
				sum := sha256.Sum256(d)
				addr = hex.EncodeToString(sum[:])
			}
		}
		var data []byte
		var reason string
		if againstData {
			if want == nil {
				want = []byte{}
			}
			data, reason, _ = decodeChunk(dec, file, dst, want, "")
		} else {
			data, reason, _ = decodeChunk(dec, file, dst, nil, addr)
		}
		if reason != "" {
			if data != nil {
				t.Fatalf("rejected (%s) but returned %d bytes", reason, len(data))
			}
			return
		}
		if len(data) > maxChunk {
			t.Fatalf("returned %d bytes, more than maxChunk", len(data))
		}
		sum := sha256.Sum256(data)
		if hex.EncodeToString(sum[:]) != addr && !bytes.Equal(data, want) {
			t.Fatal("accepted content that matches neither the address nor the data")
		}
	})
}
