package xenbackend

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// The stream is three nested formats, all read here from untrusted input:
//
//   - xl's save-file header (tools/xl/xl.h, struct save_file_header): a
//     32-byte magic, then four uint32 in the saving host's byte order
//     (byteorder, mandatory_flags, optional_flags, optional_data_len), then
//     the optional data (a uint32 length and the domain's JSON config).
//     "xl save" files and "xl migrate" streams both start with it, and
//     "xl restore" wants it.
//   - the libxl stream v2 (docs/specs/libxl-migration-stream.pandoc): a
//     big-endian header, then records (type, length, body padded to 8).
//     A LIBXC_CONTEXT record has no body: the libxc stream follows it.
//   - the libxc stream v3 (docs/specs/libxc-migration-stream.pandoc): a
//     big-endian image header, a domain header, records framed like libxl's
//     up to its END; then the libxl records go on up to libxl's END.
//
// The sender keeps the pipe open after the stream, so the parser finds the
// end from the framing and reads not one byte past libxl's END record.

// XLMagic is the 32-byte magic at the start of an xl save file or stream.
const XLMagic = "Xen saved domain, xl format\n \x00 \r"

const (
	xlByteOrder       = 0x01020304
	xlFlagJSON        = 1 << 0
	xlFlagStreamV2    = 1 << 1
	xlHeaderLen       = 32 + 4*4
	libxlIdent        = 0x4c6962786c466d74 // "LibxlFmt"
	libxlVersion      = 2
	libxcMarker       = 0xffffffffffffffff
	libxcID           = 0x58454e46 // "XENF"
	recAlign          = 8
	pageShift         = 12
	pageSize          = 1 << pageShift
	pfnMask           = 0x000fffffffffffff
	pfnTypeShift      = 60
	libxcOptionalFlag = 0x80000000
)

// Limits on what the parser accepts; each bounds an allocation or a loop
// driven by a length read from the stream.
const (
	// MaxConfigLen bounds the xl header's optional data (the JSON config).
	MaxConfigLen = 1 << 20
	// MaxRecordLen bounds a record body, as libxc's REC_LENGTH_MAX does.
	MaxRecordLen = 128 << 20
	// MaxPagesPerRecord bounds a PAGE_DATA record's count; xl's sender
	// writes at most 1024 (MAX_BATCH_SIZE).
	MaxPagesPerRecord = 4096
)

// libxl record types.
const (
	libxlEnd             = 0
	libxlLibxcContext    = 1
	libxlEmulatorXSData  = 2
	libxlEmulatorContext = 3
	libxlCheckpointEnd   = 4
	libxlCheckpointState = 5
)

// libxc record types that need more than skipping.
const (
	libxcEnd              = 0x00
	libxcPageData         = 0x01
	libxcCheckpoint       = 0x0e
	libxcCheckpointDirty  = 0x0f
	libxcLastKnownRecType = 0x12 // X86_MSR_POLICY
)

// Domain types of the libxc domain header.
const (
	DomainX86PV  = 1
	DomainX86HVM = 2 // HVM and PVH
)

// validPageType says whether t is a page type of the libxc stream (the top
// four bits of a PAGE_DATA entry): 0x5 to 0x8 are reserved.
func validPageType(t uint8) bool { return t <= 0xf && (t < 0x5 || t > 0x8) }

// pageTypeHasData says whether an entry of type t carries a page: BROKEN
// (0xd), XALLOC (0xe) and XTAB (0xf) do not.
func pageTypeHasData(t uint8) bool { return t < 0xd }

// PageFunc receives one guest page of a PAGE_DATA record: its frame number
// and pageSize bytes, valid only during the call. A live stream sends a page
// again each round it was dirtied; the last one sent wins.
type PageFunc func(pfn uint64, data []byte) error

// StreamInfo describes a stream read to its end.
type StreamInfo struct {
	// Config is the domain's JSON config from xl's header (may be empty).
	Config []byte
	// DomainType is DomainX86PV or DomainX86HVM.
	DomainType uint32
	// LibxcVersion is the libxc stream's version (2 or 3).
	LibxcVersion uint32
	// XenMajor and XenMinor are the sending Xen's version.
	XenMajor, XenMinor uint32
	// Pages counts the pages with data over all PAGE_DATA records, repeats
	// included; PageRecords counts those records.
	Pages, PageRecords int64
	// Bytes is the stream's length up to and including libxl's END.
	Bytes int64
}

// StreamError is a malformed or unsupported stream, at byte offset Offset.
type StreamError struct {
	Offset int64
	Msg    string
}

func (e *StreamError) Error() string {
	return fmt.Sprintf("xl stream at byte %d: %s", e.Offset, e.Msg)
}

// streamReader reads the stream, counting what it consumed.
type streamReader struct {
	r      io.Reader
	off    int64
	onPage PageFunc
	info   StreamInfo
	buf    [pageSize]byte
	x      streamHooks
	noMeta bool // the bytes being read are not copied to x.meta
}

// streamHooks are the page file's view of a stream (pagefile.go).
type streamHooks struct {
	// meta, if set, receives every byte read except the PAGE_DATA
	// records', in order.
	meta io.Writer
	// entry, if set, is called for every entry of every PAGE_DATA record
	// in order: its pfn, its type (the top 4 bits) and its page (nil for
	// a type without data), valid only during the call.
	entry func(pfn uint64, typ uint8, data []byte) error
	// pageRecord, if set, is called at the start of every PAGE_DATA
	// record, before its header reaches meta (it never does).
	pageRecord func()
	// libxcRecord, if set, is called with the stream offset of every libxc
	// record header and its type, before the header is read.
	libxcRecord func(off int64)
}

// ReadStream reads an xl migration stream or save file from r up to and
// including libxl's END record, never past it, calling onPage (if not nil)
// for every page. It rejects unknown versions, flags and mandatory records,
// checkpointed (Remus/COLO) streams and big-endian streams.
func ReadStream(r io.Reader, onPage PageFunc) (StreamInfo, error) {
	return readStream(r, onPage, streamHooks{})
}

func readStream(r io.Reader, onPage PageFunc, x streamHooks) (StreamInfo, error) {
	s := &streamReader{r: r, onPage: onPage, x: x}
	err := s.stream()
	s.info.Bytes = s.off
	return s.info, err
}

func (s *streamReader) fail(format string, a ...any) error {
	return &StreamError{Offset: s.off, Msg: fmt.Sprintf(format, a...)}
}

// full reads exactly len(b) bytes; a short stream is an error.
func (s *streamReader) full(b []byte, what string) error {
	n, err := io.ReadFull(s.r, b)
	s.off += int64(n)
	if s.x.meta != nil && !s.noMeta && n > 0 {
		if _, werr := s.x.meta.Write(b[:n]); werr != nil {
			return werr
		}
	}
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return s.fail("stream ends inside %s", what)
		}
		return fmt.Errorf("xl stream at byte %d: reading %s: %w", s.off, what, err)
	}
	return nil
}

// skip reads and discards n bytes in pageSize pieces.
func (s *streamReader) skip(n int64, what string) error {
	for n > 0 {
		k := min(n, pageSize)
		if err := s.full(s.buf[:k], what); err != nil {
			return err
		}
		n -= k
	}
	return nil
}

// padding reads the zeros that align a record body of length n to 8.
func (s *streamReader) padding(n uint32, what string) error {
	p := (recAlign - n%recAlign) % recAlign
	if p == 0 {
		return nil
	}
	b := s.buf[:p]
	if err := s.full(b, what+" padding"); err != nil {
		return err
	}
	for _, c := range b {
		if c != 0 {
			return s.fail("%s padding is not zero", what)
		}
	}
	return nil
}

func (s *streamReader) stream() error {
	if err := s.xlHeader(); err != nil {
		return err
	}
	if err := s.libxlHeader(); err != nil {
		return err
	}
	seenLibxc := false
	for {
		var h [8]byte
		if err := s.full(h[:], "libxl record header"); err != nil {
			return err
		}
		typ, length := binary.LittleEndian.Uint32(h[:4]), binary.LittleEndian.Uint32(h[4:])
		if length > MaxRecordLen {
			return s.fail("libxl record type %d: length %d over %d", typ, length, MaxRecordLen)
		}
		switch typ {
		case libxlEnd:
			if length != 0 {
				return s.fail("libxl END record: length %d, want 0", length)
			}
			if !seenLibxc {
				return s.fail("libxl END record before any LIBXC_CONTEXT")
			}
			return nil
		case libxlLibxcContext:
			if length != 0 {
				return s.fail("libxl LIBXC_CONTEXT record: length %d, want 0", length)
			}
			if seenLibxc {
				return s.fail("second libxl LIBXC_CONTEXT record (checkpointed streams are not supported)")
			}
			seenLibxc = true
			if err := s.libxc(); err != nil {
				return err
			}
		case libxlEmulatorXSData, libxlEmulatorContext:
			if err := s.skip(int64(length), "libxl emulator record"); err != nil {
				return err
			}
			if err := s.padding(length, "libxl emulator record"); err != nil {
				return err
			}
		case libxlCheckpointEnd, libxlCheckpointState:
			return s.fail("libxl record type %d: checkpointed streams are not supported", typ)
		default:
			return s.fail("unknown libxl record type %d", typ)
		}
	}
}

func (s *streamReader) xlHeader() error {
	var h [xlHeaderLen]byte
	if err := s.full(h[:], "xl header"); err != nil {
		return err
	}
	if !bytes.Equal(h[:32], []byte(XLMagic)) {
		return s.fail("xl header: bad magic %q", h[:32])
	}
	le := binary.LittleEndian
	if bo := le.Uint32(h[32:]); bo != xlByteOrder {
		return s.fail("xl header: byte order %#x, want little-endian %#x", bo, xlByteOrder)
	}
	mandatory, optional, optLen := le.Uint32(h[36:]), le.Uint32(h[40:]), le.Uint32(h[44:])
	if mandatory&^(xlFlagJSON|xlFlagStreamV2) != 0 {
		return s.fail("xl header: unknown mandatory flags %#x", mandatory)
	}
	if mandatory&xlFlagStreamV2 == 0 {
		return s.fail("xl header: mandatory flags %#x: not a stream v2 (legacy streams are not supported)", mandatory)
	}
	if optional != 0 {
		return s.fail("xl header: unknown optional flags %#x", optional)
	}
	if optLen > MaxConfigLen {
		return s.fail("xl header: optional data length %d over %d", optLen, MaxConfigLen)
	}
	if optLen == 0 {
		return nil
	}
	if optLen < 4 {
		return s.fail("xl header: optional data length %d, shorter than its config length field", optLen)
	}
	// Grown as the bytes arrive, so that a short stream claiming a long
	// config costs no more than it sent.
	var b bytes.Buffer
	got, err := b.ReadFrom(io.LimitReader(s.r, int64(optLen)))
	s.off += got
	if s.x.meta != nil {
		if _, werr := s.x.meta.Write(b.Bytes()); werr != nil {
			return werr
		}
	}
	if err != nil {
		return fmt.Errorf("xl stream at byte %d: reading xl header optional data: %w", s.off, err)
	}
	if got < int64(optLen) {
		return s.fail("stream ends inside xl header optional data")
	}
	opt := b.Bytes()
	n := le.Uint32(opt)
	if uint64(n) > uint64(optLen-4) {
		return s.fail("xl header: config length %d over the optional data's %d bytes", n, optLen-4)
	}
	s.info.Config = opt[4 : 4+n]
	return nil
}

func (s *streamReader) libxlHeader() error {
	var h [16]byte
	if err := s.full(h[:], "libxl header"); err != nil {
		return err
	}
	be := binary.BigEndian
	if id := be.Uint64(h[:]); id != libxlIdent {
		return s.fail("libxl header: ident %#x, want %#x (LibxlFmt)", id, uint64(libxlIdent))
	}
	if v := be.Uint32(h[8:]); v != libxlVersion {
		return s.fail("libxl header: version %d, want %d", v, libxlVersion)
	}
	if o := be.Uint32(h[12:]); o != 0 {
		return s.fail("libxl header: options %#x, want 0 (little-endian, not legacy)", o)
	}
	return nil
}

// libxc reads the libxc stream from its image header to its END record.
func (s *streamReader) libxc() error {
	var h [24 + 16]byte
	if err := s.full(h[:], "libxc image and domain headers"); err != nil {
		return err
	}
	be, le := binary.BigEndian, binary.LittleEndian
	if m := be.Uint64(h[:]); m != libxcMarker {
		return s.fail("libxc image header: marker %#x, want %#x", m, uint64(libxcMarker))
	}
	if id := be.Uint32(h[8:]); id != libxcID {
		return s.fail("libxc image header: id %#x, want %#x (XENF)", id, libxcID)
	}
	v := be.Uint32(h[12:])
	if v != 2 && v != 3 {
		return s.fail("libxc image header: version %d, want 2 or 3", v)
	}
	if o := be.Uint16(h[16:]); o != 0 {
		return s.fail("libxc image header: options %#x, want 0 (little-endian)", o)
	}
	d := h[24:]
	typ := le.Uint32(d)
	if typ != DomainX86PV && typ != DomainX86HVM {
		return s.fail("libxc domain header: type %d, want x86 PV or HVM", typ)
	}
	if ps := le.Uint16(d[4:]); ps != pageShift {
		return s.fail("libxc domain header: page shift %d, want %d", ps, pageShift)
	}
	s.info.LibxcVersion, s.info.DomainType = v, typ
	s.info.XenMajor, s.info.XenMinor = le.Uint32(d[8:]), le.Uint32(d[12:])
	for {
		if s.x.libxcRecord != nil {
			s.x.libxcRecord(s.off)
		}
		var rh [8]byte
		s.noMeta = true
		err := s.full(rh[:], "libxc record header")
		s.noMeta = false
		if err != nil {
			return err
		}
		typ, length := le.Uint32(rh[:4]), le.Uint32(rh[4:])
		if length > MaxRecordLen {
			return s.fail("libxc record type %#x: length %d over %d", typ, length, MaxRecordLen)
		}
		if typ == libxcPageData {
			if s.x.pageRecord != nil {
				s.x.pageRecord()
			}
			s.noMeta = true
		} else if s.x.meta != nil {
			if _, err := s.x.meta.Write(rh[:]); err != nil {
				return err
			}
		}
		switch {
		case typ == libxcEnd:
			if length != 0 {
				return s.fail("libxc END record: length %d, want 0", length)
			}
			return nil
		case typ == libxcPageData:
			if err := s.pageData(length); err != nil {
				return err
			}
		case typ == libxcCheckpoint || typ == libxcCheckpointDirty:
			return s.fail("libxc record type %#x: checkpointed streams are not supported", typ)
		case typ <= libxcLastKnownRecType || typ&libxcOptionalFlag != 0:
			if err := s.skip(int64(length), "libxc record"); err != nil {
				return err
			}
		default:
			return s.fail("unknown mandatory libxc record type %#x", typ)
		}
		if err := s.padding(length, "libxc record"); err != nil {
			return err
		}
		s.noMeta = false
	}
}

// pageData reads one PAGE_DATA body of the given length.
func (s *streamReader) pageData(length uint32) error {
	if length < 8 {
		return s.fail("PAGE_DATA record: length %d, shorter than its header", length)
	}
	var h [8]byte
	if err := s.full(h[:], "PAGE_DATA header"); err != nil {
		return err
	}
	count := binary.LittleEndian.Uint32(h[:])
	if count == 0 || count > MaxPagesPerRecord {
		return s.fail("PAGE_DATA record: count %d, want 1 to %d", count, MaxPagesPerRecord)
	}
	if uint64(length) < 8+8*uint64(count) {
		return s.fail("PAGE_DATA record: length %d too short for %d pfns", length, count)
	}
	raw := make([]byte, 8*count) // bounded by MaxPagesPerRecord above
	if err := s.full(raw, "PAGE_DATA pfns"); err != nil {
		return err
	}
	withData := 0
	for i := range count {
		p := binary.LittleEndian.Uint64(raw[8*i:])
		if p&^pfnMask&^(0xf<<pfnTypeShift) != 0 {
			return s.fail("PAGE_DATA record: entry %#x has bits set between its pfn and its type", p)
		}
		t := uint8(p >> pfnTypeShift)
		if !validPageType(t) {
			return s.fail("PAGE_DATA record: pfn %#x has reserved type %#x", p&pfnMask, t)
		}
		if pageTypeHasData(t) {
			withData++
		}
	}
	if want := 8 + 8*uint64(count) + pageSize*uint64(withData); uint64(length) != want {
		return s.fail("PAGE_DATA record: length %d, want %d for %d pfns of which %d carry data", length, want, count, withData)
	}
	for i := range count {
		p := binary.LittleEndian.Uint64(raw[8*i:])
		pfn, t := p&pfnMask, uint8(p>>pfnTypeShift)
		var page []byte
		if pageTypeHasData(t) {
			page = s.buf[:]
			if err := s.full(page, "PAGE_DATA page"); err != nil {
				return err
			}
			if s.onPage != nil {
				if err := s.onPage(pfn, page); err != nil {
					return fmt.Errorf("page %#x: %w", pfn, err)
				}
			}
		}
		if s.x.entry != nil {
			if err := s.x.entry(pfn, t, page); err != nil {
				return fmt.Errorf("page %#x: %w", pfn, err)
			}
		}
	}
	s.info.Pages += int64(withData)
	s.info.PageRecords++
	return nil
}
