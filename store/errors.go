package store

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Sentinel errors. Every error the package returns for one of these conditions
// wraps the sentinel, so callers test with errors.Is; the message names the
// snapshot, VM, stream or file concerned.
var (
	// ErrInvalidName reports a snapshot, VM, stream or metadata key that is
	// not a valid name (see ValidName).
	ErrInvalidName = errors.New("invalid name")
	// ErrNotFound reports a snapshot that is absent, including a directory
	// that has no manifest (an unfinished or crashed write).
	ErrNotFound = errors.New("snapshot not found")
	// ErrExists reports a Create for the name of a complete snapshot.
	ErrExists = errors.New("snapshot already exists")
	// ErrWriting is wrapped by every *WritingError: a Create or Delete of a
	// name that a live writer holds.
	ErrWriting = errors.New("snapshot is being written")
	// ErrDuplicate reports a second stream with the same VM and stream name
	// in one snapshot.
	ErrDuplicate = errors.New("duplicate stream")
	// ErrNoStream reports a Reader for a VM or stream the snapshot lacks.
	ErrNoStream = errors.New("no such stream")
	// ErrFinished reports use of a Writer or StreamWriter after Commit,
	// Abort or Close.
	ErrFinished = errors.New("writer finished")
	// ErrAborted is returned by writes to a stream whose snapshot was
	// aborted.
	ErrAborted = errors.New("snapshot aborted")
	// ErrBusy reports a GC that could not run because writers or readers
	// hold the store open (see GCOptions.Wait).
	ErrBusy = errors.New("store busy")
	// ErrSchema reports a manifest whose schema version this build cannot
	// read.
	ErrSchema = errors.New("unsupported manifest schema")
	// ErrCorrupt is wrapped by every *CorruptError.
	ErrCorrupt = errors.New("corrupt snapshot data")
)

// CorruptError reports stored data that fails verification: a chunk file that
// is missing, truncated, fails its checksum or does not decode; a stream whose
// length or SHA-256 differs from the manifest; or a manifest that fails its
// own checksum. errors.Is(err, ErrCorrupt) holds for every CorruptError.
type CorruptError struct {
	Snapshot string // snapshot name
	VM       string // VM name; empty for per-snapshot extras and the manifest
	Stream   string // stream name; empty for the manifest and page images
	// Image is the page image's name, for damage in one; Chunk is then the
	// block's index, Offset and Len the bytes of the image it covers (for
	// a memory image: guest memory, or the offsets of a hypervisor's file
	// format), and Addr the block's address or, for the index, the image
	// checksum.
	Image  string
	Chunk  int    // index of the chunk in the stream (block in the image); -1 if not chunk-specific
	Offset int64  // a damaged block's offset in its image
	Len    int64  // bytes the damaged block covers; 0 if not a block of an image
	Addr   string // chunk address (hex SHA-256); empty if not chunk-specific
	Path   string // file concerned
	Reason string // what is wrong
	Err    error  // underlying error, if any
}

// Error describes where the corruption is and what is wrong.
func (e *CorruptError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "store: snapshot %q", e.Snapshot)
	if e.VM != "" {
		fmt.Fprintf(&b, " vm %q", e.VM)
	}
	if e.Stream != "" {
		if e.VM == "" {
			b.WriteString(" extra")
		}
		fmt.Fprintf(&b, " stream %q", e.Stream)
	}
	if e.Image != "" {
		fmt.Fprintf(&b, " image %q", e.Image)
	}
	switch {
	case e.Image != "" && e.Chunk >= 0:
		fmt.Fprintf(&b, " block %d at offset %#x-%#x", e.Chunk, e.Offset, e.Offset+e.Len-1)
	case e.Image != "":
		b.WriteString(" index")
	case e.Chunk >= 0:
		fmt.Fprintf(&b, " chunk %d", e.Chunk)
	}
	if e.Addr != "" {
		fmt.Fprintf(&b, " (%s)", e.Addr)
	}
	fmt.Fprintf(&b, ": %s", e.Reason)
	if e.Err != nil {
		fmt.Fprintf(&b, ": %v", e.Err)
	}
	if e.Path != "" {
		fmt.Fprintf(&b, " [%s]", e.Path)
	}
	return b.String()
}

// Unwrap returns the underlying error.
func (e *CorruptError) Unwrap() error { return e.Err }

// Is reports whether target is ErrCorrupt.
func (e *CorruptError) Is(target error) bool { return target == ErrCorrupt }

const maxNameLen = 128

// ValidName reports why s is not a valid snapshot, VM or stream name, or nil
// if it is valid. A valid name is 1 to 128 bytes of ASCII letters, digits,
// '.', '_' and '-', and starts with a letter, digit or '_'. Names are used as
// directory names, so path separators, "." and ".." are rejected, and names
// starting with '.' are reserved for the store's own temporary files.
func ValidName(s string) error {
	if s == "" {
		return fmt.Errorf("%w: empty", ErrInvalidName)
	}
	if len(s) > maxNameLen {
		return fmt.Errorf("%w: %q is %d bytes, longer than %d", ErrInvalidName, s, len(s), maxNameLen)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_':
		case (c == '.' || c == '-') && i > 0:
		case c == '/' || c == '\\':
			return fmt.Errorf("%w: %q contains a path separator", ErrInvalidName, s)
		default:
			return fmt.Errorf("%w: %q has character %q at offset %d (allowed: letters, digits, '_', and '.' or '-' after the first)", ErrInvalidName, s, c, i)
		}
	}
	return nil
}

// checkName wraps ValidName's error with the field it came from.
func checkName(field, s string) error {
	if err := ValidName(s); err != nil {
		return fmt.Errorf("store: %s: %w", field, err)
	}
	return nil
}

// maxLabelLen bounds a label value, so that labels stay metadata: files
// belong in streams.
const maxLabelLen = 64 << 10

// checkMeta rejects labels the manifest could not round-trip byte for byte or
// that a reader would refuse: keys must be valid names, values valid UTF-8
// without NUL, at most maxLabelLen bytes.
func checkMeta(meta map[string]string) error {
	for k, v := range meta {
		if err := ValidName(k); err != nil {
			return fmt.Errorf("labels[%q]: key: %w", k, err)
		}
		switch {
		case len(v) > maxLabelLen:
			return fmt.Errorf("labels[%q]: value is %d bytes, longer than %d", k, len(v), maxLabelLen)
		case !utf8.ValidString(v):
			return fmt.Errorf("labels[%q]: value is not valid UTF-8", k)
		case strings.IndexByte(v, 0) >= 0:
			return fmt.Errorf("labels[%q]: value holds a NUL byte", k)
		}
	}
	return nil
}

// checkAlgorithm accepts an empty algorithm or a valid name: it is printed
// by listings, so it must not carry control characters.
func checkAlgorithm(a string) error {
	if a == "" {
		return nil
	}
	if err := ValidName(a); err != nil {
		return fmt.Errorf("algorithm: %w", err)
	}
	return nil
}

// WritingError reports a snapshot name held by a live writer: the process
// whose pid the name's lock file records (0 if it had not written it yet).
type WritingError struct {
	Snapshot string
	PID      int
	Self     bool // the writer is in this process
}

// Error says who is writing the snapshot.
func (e *WritingError) Error() string {
	who := fmt.Sprintf("another process (pid %d)", e.PID)
	switch {
	case e.Self:
		who = fmt.Sprintf("another writer in this process (pid %d)", e.PID)
	case e.PID <= 0:
		who = "another process (pid unknown)"
	}
	return fmt.Sprintf("store: snapshot %q is being written by %s", e.Snapshot, who)
}

// Is reports whether target is ErrWriting.
func (e *WritingError) Is(target error) bool { return target == ErrWriting }
