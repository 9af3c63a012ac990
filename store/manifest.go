package store

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"
)

// SchemaVersion is the manifest schema this build writes and reads.
const SchemaVersion = 1

// manifestFile is the name of the manifest inside a snapshot directory.
const manifestFile = "manifest.json"

// Manifest is the decoded manifest of a complete snapshot. It is the single
// source of truth for what a snapshot contains; VMs are sorted by name and
// each VM's streams by name, as are Extras. Values returned by the package
// must not be modified.
type Manifest struct {
	Schema    int               `json:"schema"`
	Name      string            `json:"name"`
	Created   time.Time         `json:"created"`
	Algorithm string            `json:"algorithm"`
	Epoch     uint64            `json:"epoch"`
	Labels    map[string]string `json:"labels"`
	Chunking  Chunking          `json:"chunking"`
	VMs       []VM              `json:"vms"`
	Extras    []Stream          `json:"extras"`
	// Added counts the chunk files this snapshot's writer created, as
	// opposed to found already in the pool: its cost after deduplication.
	Added Added `json:"added"`
	// Checksum is the hex SHA-256 of the canonical encoding of the manifest
	// with Checksum empty. It doubles as the snapshot's content ID.
	Checksum string `json:"checksum"`
}

// Chunking records the chunker parameters used to cut the streams. Readers
// do not need them; they explain the chunk boundaries.
type Chunking struct {
	Algorithm  string `json:"algorithm"`
	Polynomial string `json:"polynomial"`
	MinSize    int    `json:"min_size"`
	AvgSize    int    `json:"avg_size"`
	MaxSize    int    `json:"max_size"`
	Codec      string `json:"codec"`
}

// Added is the number and stored size of the chunk files a writer created.
type Added struct {
	Chunks int   `json:"chunks"`
	Stored int64 `json:"stored"`
}

// VM is one VM's image: a set of named streams.
type VM struct {
	Name    string   `json:"name"`
	Streams []Stream `json:"streams"`
}

// Stream is one named byte stream, stored as an ordered list of chunks.
// Length is the sum of the chunk sizes and SHA256 the hash of the whole
// stream.
type Stream struct {
	Name   string     `json:"name"`
	Length int64      `json:"length"`
	SHA256 string     `json:"sha256"`
	Chunks []ChunkRef `json:"chunks"`
}

// ChunkRef names one chunk of a stream: its address (hex SHA-256 of the
// uncompressed content), its uncompressed size, and the size of its chunk
// file.
type ChunkRef struct {
	Addr   string `json:"addr"`
	Size   int64  `json:"size"`
	Stored int64  `json:"stored"`
}

// encode returns the canonical encoding of m. The same Manifest always
// encodes to the same bytes (struct order is fixed, map keys are sorted,
// times are UTC), which is what lets decodeManifest detect any byte change.
func (m *Manifest) encode() []byte {
	b, err := json.MarshalIndent(m, "", " ")
	if err != nil {
		panic(fmt.Sprintf("store: encode manifest: %v", err)) // only plain types: cannot fail
	}
	return append(b, '\n')
}

// seal sets m.Checksum and returns the bytes to write.
func (m *Manifest) seal() []byte {
	m.Checksum = ""
	sum := sha256.Sum256(m.encode())
	m.Checksum = hex.EncodeToString(sum[:])
	return m.encode()
}

// decodeManifest parses and verifies a manifest file. Two checks together
// catch any changed byte: the content must hash to Checksum, and the file must
// be exactly the canonical encoding of what it decodes to (which rules out
// edits the JSON decoder forgives, such as a key's case or white space).
func decodeManifest(snapshot, path string, data []byte) (*Manifest, error) {
	corrupt := func(reason string, err error) error {
		return &CorruptError{Snapshot: snapshot, Chunk: -1, Path: path, Reason: "manifest: " + reason, Err: err}
	}
	var probe struct {
		Schema int `json:"schema"`
	}
	if err := json.Unmarshal(data, &probe); err != nil {
		return nil, corrupt("not valid JSON", err)
	}
	if probe.Schema != SchemaVersion {
		return nil, fmt.Errorf("store: %s: %w: version %d, this build reads %d", path, ErrSchema, probe.Schema, SchemaVersion)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	m := new(Manifest)
	if err := dec.Decode(m); err != nil {
		return nil, corrupt("does not match schema", err)
	}
	if !bytes.Equal(m.encode(), data) {
		return nil, corrupt("not in canonical form (edited or damaged)", nil)
	}
	want := m.Checksum
	m.Checksum = ""
	sum := sha256.Sum256(m.encode())
	m.Checksum = want
	if got := hex.EncodeToString(sum[:]); got != want {
		return nil, corrupt(fmt.Sprintf("checksum %s, want %s", got, want), nil)
	}
	if m.Name != snapshot {
		return nil, corrupt(fmt.Sprintf("names snapshot %q, directory is %q", m.Name, snapshot), nil)
	}
	if err := m.check(); err != nil {
		return nil, corrupt("inconsistent", err)
	}
	return m, nil
}

// check verifies the manifest's internal invariants, so that readers can
// trust names, sizes and addresses once it passes.
func (m *Manifest) check() error {
	prev := ""
	for i, vm := range m.VMs {
		if err := ValidName(vm.Name); err != nil {
			return fmt.Errorf("vm %d: %w", i, err)
		}
		if i > 0 && vm.Name <= prev {
			return fmt.Errorf("vm %q: not sorted or duplicate", vm.Name)
		}
		prev = vm.Name
		if err := checkStreams(vm.Streams); err != nil {
			return fmt.Errorf("vm %q: %w", vm.Name, err)
		}
	}
	if err := checkStreams(m.Extras); err != nil {
		return fmt.Errorf("extras: %w", err)
	}
	return nil
}

func checkStreams(ss []Stream) error {
	prev := ""
	for i, s := range ss {
		if err := ValidName(s.Name); err != nil {
			return fmt.Errorf("stream %d: %w", i, err)
		}
		if i > 0 && s.Name <= prev {
			return fmt.Errorf("stream %q: not sorted or duplicate", s.Name)
		}
		prev = s.Name
		if !validAddr(s.SHA256) {
			return fmt.Errorf("stream %q: bad sha256 %q", s.Name, s.SHA256)
		}
		var n int64
		for j, c := range s.Chunks {
			if !validAddr(c.Addr) {
				return fmt.Errorf("stream %q chunk %d: bad address %q", s.Name, j, c.Addr)
			}
			if c.Size <= 0 || c.Size > maxChunk || c.Stored <= 0 || c.Stored > maxStored {
				return fmt.Errorf("stream %q chunk %d: sizes %d/%d out of range", s.Name, j, c.Size, c.Stored)
			}
			n += c.Size
		}
		if n != s.Length {
			return fmt.Errorf("stream %q: chunks sum to %d bytes, length is %d", s.Name, n, s.Length)
		}
	}
	return nil
}

// validAddr reports whether s is 64 lowercase hex digits.
func validAddr(s string) bool {
	if len(s) != 2*sha256.Size {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// find returns the stream named stream of vm ("" for an extra), or nil.
func (m *Manifest) find(vm, stream string) *Stream {
	ss := m.Extras
	if vm != "" {
		ss = nil
		for i := range m.VMs {
			if m.VMs[i].Name == vm {
				ss = m.VMs[i].Streams
				break
			}
		}
	}
	for i := range ss {
		if ss[i].Name == stream {
			return &ss[i]
		}
	}
	return nil
}

// eachStream calls fn for every stream in the manifest, VMs first, in order.
func (m *Manifest) eachStream(fn func(vm string, s *Stream)) {
	for i := range m.VMs {
		for j := range m.VMs[i].Streams {
			fn(m.VMs[i].Name, &m.VMs[i].Streams[j])
		}
	}
	for j := range m.Extras {
		fn("", &m.Extras[j])
	}
}
