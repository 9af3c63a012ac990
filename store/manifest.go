package store

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	"github.com/vnsnap/vnsnap/store/pages"
)

// SchemaVersion is the manifest schema this build writes. It reads it and
// schema 1, which has no page images (the fields schema 2 added are empty
// and omitted, so a schema-1 manifest is still in canonical form).
const SchemaVersion = 2

// minSchema is the oldest manifest schema this build reads.
const minSchema = 1

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
	// Blocks totals the distinct block objects and index files of the
	// snapshot's page images (schema 2; nil without images).
	Blocks *BlockTotals `json:"blocks,omitempty"`
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

// Added is the number and stored size of the chunk files a writer created,
// and (schema 2) of the block objects and index files of its page images.
type Added struct {
	Chunks      int   `json:"chunks"`
	Stored      int64 `json:"stored"`
	Objects     int   `json:"objects,omitempty"`
	ObjectBytes int64 `json:"object_bytes,omitempty"`
}

// Bytes returns everything the writer added to the store: chunk files,
// block objects and index files.
func (a Added) Bytes() int64 { return a.Stored + a.ObjectBytes }

// VM is one VM's image: a set of named streams and (schema 2) page
// images, whose names are distinct.
type VM struct {
	Name    string   `json:"name"`
	Streams []Stream `json:"streams"`
	Images  []Image  `json:"images,omitempty"`
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
	b, err := m.encodeChecked()
	if err != nil {
		// Only plain types and a time whose year check keeps in range.
		panic(fmt.Sprintf("store: encode manifest: %v", err))
	}
	return b
}

// encodeChecked is encode for a manifest not yet checked: its time may be
// out of JSON's range.
func (m *Manifest) encodeChecked() ([]byte, error) {
	b, err := json.MarshalIndent(m, "", " ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// seal sets m.Checksum and returns the bytes to write.
func (m *Manifest) seal() []byte {
	m.Checksum = ""
	sum := sha256.Sum256(m.encode())
	m.Checksum = hex.EncodeToString(sum[:])
	return m.encode()
}

// maxManifest bounds a manifest file: about 650,000 chunk references, at
// least 160 GiB of streams (640 GiB at the average chunk size). Readers refuse
// larger files without reading them, and the writer refuses to commit one.
const maxManifest = 128 << 20

// decodeManifest parses and verifies a manifest file. Two checks together
// catch any changed byte: the content must hash to Checksum, and the file must
// be exactly the canonical encoding of what it decodes to (which rules out
// edits the JSON decoder forgives, such as a key's case or white space). A
// checksum proves integrity, not authorship, so check then validates every
// field as untrusted input. Errors are *CorruptError values naming path and
// the field, or wrap ErrSchema.
func decodeManifest(snapshot, path string, data []byte) (*Manifest, error) {
	corrupt := func(reason string, err error) error {
		return &CorruptError{Snapshot: snapshot, Chunk: -1, Path: path, Reason: "manifest: " + reason, Err: err}
	}
	if len(data) > maxManifest {
		return nil, corrupt(fmt.Sprintf("%d bytes, larger than the %d-byte limit", len(data), maxManifest), nil)
	}
	var probe struct {
		Schema int `json:"schema"`
	}
	if err := json.Unmarshal(data, &probe); err != nil {
		return nil, corrupt("not valid JSON", err)
	}
	if probe.Schema < minSchema || probe.Schema > SchemaVersion {
		return nil, fmt.Errorf("store: %s: %w: version %d, this build reads %d to %d", path, ErrSchema, probe.Schema, minSchema, SchemaVersion)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	m := new(Manifest)
	if err := dec.Decode(m); err != nil {
		return nil, corrupt("does not match schema", err)
	}
	enc, err := m.encodeChecked()
	if err != nil || !bytes.Equal(enc, data) {
		return nil, corrupt("not in canonical form (edited or damaged)", err)
	}
	want := m.Checksum
	m.Checksum = ""
	sum := sha256.Sum256(m.encode())
	m.Checksum = want
	if got := hex.EncodeToString(sum[:]); got != want {
		return nil, corrupt(fmt.Sprintf("checksum %s, want %s", got, want), nil)
	}
	if m.Name != snapshot {
		return nil, corrupt(fmt.Sprintf("name: names snapshot %q, directory is %q", m.Name, snapshot), nil)
	}
	if m.Chunking.Codec != chunkCodec {
		return nil, fmt.Errorf("store: %s: %w: chunking.codec %q, this build reads %q", path, ErrSchema, m.Chunking.Codec, chunkCodec)
	}
	if err := m.check(); err != nil {
		return nil, corrupt("invalid", err)
	}
	return m, nil
}

// check verifies every field of the manifest, so that readers can trust
// names, sizes and addresses once it passes: names are valid (ValidName:
// they become directory names and are printed), sizes are in range and add
// up, addresses are SHA-256 hex, one address always has the same sizes.
// Errors name the field, as in vms[1].streams[0].chunks[3].addr.
func (m *Manifest) check() error {
	if m.Schema < minSchema || m.Schema > SchemaVersion {
		return fmt.Errorf("schema: %w: version %d, this build reads %d to %d", ErrSchema, m.Schema, minSchema, SchemaVersion)
	}
	if err := ValidName(m.Name); err != nil {
		return fmt.Errorf("name: %w", err)
	}
	if y := m.Created.Year(); y < 0 || y > 9999 {
		return fmt.Errorf("created: year %d outside 0-9999", y)
	}
	if err := checkAlgorithm(m.Algorithm); err != nil {
		return err
	}
	if err := checkMeta(m.Labels); err != nil {
		return err
	}
	if err := m.Chunking.check(); err != nil {
		return fmt.Errorf("chunking.%w", err)
	}
	if m.Added.Chunks < 0 || m.Added.Stored < 0 || m.Added.Stored > int64(m.Added.Chunks)*maxStored {
		return fmt.Errorf("added: %d chunks of %d bytes out of range", m.Added.Chunks, m.Added.Stored)
	}
	if a := m.Added; a.Objects < 0 || a.ObjectBytes < 0 || a.ObjectBytes > int64(a.Objects)*max(pages.MaxObjectSize, maxIndex) {
		return fmt.Errorf("added: %d objects of %d bytes out of range", a.Objects, a.ObjectBytes)
	}
	if m.Schema < 2 && (m.Blocks != nil || m.Added.Objects != 0 || m.Added.ObjectBytes != 0) {
		return fmt.Errorf("schema: version %d has no page images", m.Schema)
	}
	seen := make(map[string]ChunkRef) // address -> first reference
	prev := ""
	for i, vm := range m.VMs {
		if err := ValidName(vm.Name); err != nil {
			return fmt.Errorf("vms[%d].name: %w", i, err)
		}
		if i > 0 && vm.Name <= prev {
			return fmt.Errorf("vms[%d].name: %q not sorted after %q, or duplicate", i, vm.Name, prev)
		}
		prev = vm.Name
		if err := checkStreams(fmt.Sprintf("vms[%d].streams", i), vm.Streams, seen); err != nil {
			return err
		}
		if len(vm.Images) > 0 && m.Schema < 2 {
			return fmt.Errorf("vms[%d].images: schema version %d has no page images", i, m.Schema)
		}
		if err := checkImages(fmt.Sprintf("vms[%d].images", i), vm.Name, vm.Images, vm.Streams); err != nil {
			return err
		}
	}
	if err := m.checkBlockTotals(); err != nil {
		return err
	}
	return checkStreams("extras", m.Extras, seen)
}

// chunkCodec names the chunk file format (see encodeChunk).
const chunkCodec = "zstd-fastest+crc32c"

// check bounds the chunking parameters. Readers do not depend on them; they
// are printed, so they must be sane.
func (c Chunking) check() error {
	for _, f := range []struct{ name, v string }{{"algorithm", c.Algorithm}, {"polynomial", c.Polynomial}} {
		if err := checkAlgorithm(f.v); err != nil {
			return fmt.Errorf("%s: %q: %w", f.name, f.v, err)
		}
	}
	if c.MinSize <= 0 || c.MinSize > c.AvgSize || c.AvgSize > c.MaxSize || c.MaxSize > maxChunk {
		return fmt.Errorf("sizes: min %d, avg %d, max %d: want 0 < min <= avg <= max <= %d", c.MinSize, c.AvgSize, c.MaxSize, maxChunk)
	}
	return nil
}

func checkStreams(field string, ss []Stream, seen map[string]ChunkRef) error {
	prev := ""
	for i, s := range ss {
		f := fmt.Sprintf("%s[%d]", field, i)
		if err := ValidName(s.Name); err != nil {
			return fmt.Errorf("%s.name: %w", f, err)
		}
		if i > 0 && s.Name <= prev {
			return fmt.Errorf("%s.name: %q not sorted after %q, or duplicate", f, s.Name, prev)
		}
		prev = s.Name
		if !validAddr(s.SHA256) {
			return fmt.Errorf("%s.sha256: %q is not 64 lowercase hex digits", f, s.SHA256)
		}
		if s.Length < 0 {
			return fmt.Errorf("%s.length: %d is negative", f, s.Length)
		}
		var n int64
		for j, c := range s.Chunks {
			cf := fmt.Sprintf("%s.chunks[%d]", f, j)
			if !validAddr(c.Addr) {
				return fmt.Errorf("%s.addr: %q is not 64 lowercase hex digits", cf, c.Addr)
			}
			if c.Size <= 0 || c.Size > maxChunk {
				return fmt.Errorf("%s.size: %d outside 1-%d", cf, c.Size, maxChunk)
			}
			if c.Stored <= chunkHeader || c.Stored > maxStored {
				return fmt.Errorf("%s.stored: %d outside %d-%d", cf, c.Stored, chunkHeader+1, maxStored)
			}
			if first, ok := seen[c.Addr]; ok && first != c {
				return fmt.Errorf("%s: chunk %s with sizes %d/%d, elsewhere %d/%d", cf, c.Addr, c.Size, c.Stored, first.Size, first.Stored)
			}
			seen[c.Addr] = c
			n += c.Size // cannot overflow: the manifest's size bounds the number of chunks
		}
		if n != s.Length {
			return fmt.Errorf("%s.length: %d, but the chunks sum to %d bytes", f, s.Length, n)
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
