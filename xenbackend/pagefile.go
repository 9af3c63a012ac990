package xenbackend

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
)

// PageFileFormat names the page file (hv.FileRestorer.FileFormat): a Xen
// stream with each page at a fixed, page-aligned offset, written by
// WritePageFile and read back as a stream by OpenPageFile.
//
// # xen-pfn-file-v1
//
// All integers little-endian; offsets are from the start of the file.
//
//	header   [0, 4096)          magic "VNSNAP XEN PFN\n\x00" (16 bytes),
//	                            then uint32 version (2), uint32 flags (0),
//	                            then uint64 fields: file length, data
//	                            offset, slots, table offset, meta offset,
//	                            meta length, page offset, bare entries;
//	                            the rest zero
//	data     [data, table)      slots pages of 4096 bytes: slot i holds the
//	                            last copy the stream sent of table entry
//	                            i's pfn (zeros if it has no data now)
//	table    [table, meta)      slots + bare uint64 entries, pfn (bits
//	                            0-51) and libxc page type (bits 60-63) as in
//	                            PAGE_DATA: first the slots' entries, then
//	                            the bare ones, pfns the stream never sent
//	                            with data (their type has none)
//	meta     [meta, length)     the stream without its PAGE_DATA records,
//	                            every other byte in order; the page offset
//	                            is where in it the first PAGE_DATA record
//	                            stood (a libxc record boundary)
//
// The data offset is 256 KiB (writers may choose another multiple of 4096):
// the header stays out of the store's first block. A slot is given to a pfn
// when the stream first sends it with data, so a stream's first pass (every
// pfn, in order) fixes the slots and two snapshots of one domain, or two
// domains of one size, put the same pfn at the same offset: the store
// deduplicates their blocks. A page sent again in a later pass overwrites
// its slot (the last copy wins, as for libxc); a zero page never written is
// a hole (zero pages are free). Every pfn the stream sent has an entry,
// those without data (BROKEN, XALLOC, XTAB) included, since libxc's restore
// populates every pfn it is sent; but only pfns sent with data have a slot.
// A PVH domain's stream covers its whole guest-physical space up to Xen's
// special pages below 4 GiB (0xff000 pfns): a 128 MiB domain's first pass
// sends about 32 thousand pages and a million XTAB pfns, which in version 1
// (a slot for every entry) made a sparse 4 GiB file the store then read
// whole. An entry keeps the last type the stream sent: a pfn sent with data
// and later as XTAB (a page ballooned out during a live save) comes back as
// XTAB, unpopulated, where "xl restore" of the original stream would have
// populated it in the first pass and left it so.
//
// OpenPageFile rebuilds a stream "xl restore" accepts: meta up to the page
// offset, the entries in table order (slots, then bare) as PAGE_DATA
// records of at most 1024, then the rest of meta.
const PageFileFormat = "xen-pfn-file-v2"

const (
	pageFileMagic      = "VNSNAP XEN PFN\n\x00"
	pageFileVersion    = 2
	pageFileHeaderLen  = 16 + 4 + 4 + 8*8
	pageFileDataOffset = 256 << 10
	// MaxPageFileSlots bounds a page file's entries, slots and bare ones
	// together (1 TiB of pages).
	MaxPageFileSlots = 1 << 28
	// MaxPageFileMeta bounds a page file's meta (the stream without its
	// pages): the xl config and libxc's device state records.
	MaxPageFileMeta = 256 << 20
	// rebuildBatch is the PAGE_DATA batch of a rebuilt stream (libxc's
	// MAX_BATCH_SIZE).
	rebuildBatch = 1024
)

// PageFileError is a page file that is malformed, naming the field.
type PageFileError struct {
	Field string
	Msg   string
}

func (e *PageFileError) Error() string {
	return fmt.Sprintf("xen page file: %s: %s", e.Field, e.Msg)
}

func pfErr(field, format string, a ...any) error {
	return &PageFileError{Field: field, Msg: fmt.Sprintf(format, a...)}
}

// pageFileHeader is the header's fields.
type pageFileHeader struct {
	length, data, slots, table, meta, metaLen, pageAt, bare uint64
}

func (h pageFileHeader) encode() []byte {
	b := make([]byte, pageFileHeaderLen)
	copy(b, pageFileMagic)
	le := binary.LittleEndian
	le.PutUint32(b[16:], pageFileVersion)
	for i, v := range []uint64{h.length, h.data, h.slots, h.table, h.meta, h.metaLen, h.pageAt, h.bare} {
		le.PutUint64(b[24+8*i:], v)
	}
	return b
}

// PageFileStats describe a page file written.
type PageFileStats struct {
	Stream StreamInfo
	// Slots is the number of distinct pfns sent with data, Bare that of
	// those sent only without; Size is the file's length.
	Slots, Bare int64
	Size        int64
}

// pageFileWriter places a stream's pages in f as ReadStream delivers them.
type pageFileWriter struct {
	f       *os.File
	data    int64
	slot    map[uint64]int64 // pfn -> slot
	entries []uint64         // slot -> pfn | type<<60
	written []bool           // slot ever written with data
	// bare holds the pfns sent so far only without data, in the order
	// first sent: pfn -> index in bareEntries, whose entry is goneEntry
	// once the pfn got a slot.
	bare        map[uint64]int
	bareEntries []uint64
	bareGone    int
	meta        bytes.Buffer
	pageAt      int64 // meta length at the first PAGE_DATA record; -1 before
	zero        [pageSize]byte
	// pending coalesces writes of consecutive slots.
	pending     []byte
	pendingSlot int64
	// staged holds the pages sent again (a later pass's, scattered over
	// the slots) until the stream ends or stageCap bytes are staged: then
	// they are written in slot order, runs of consecutive slots at once,
	// so that a later pass costs a write per run rather than per page (a
	// system call is dear in a dom0 under emulation) and a page sent in
	// several passes is written once. stagedAt maps a slot to its page in
	// staged.
	staged   []byte
	stagedAt map[int64]int
	stageCap int
}

// defaultStageCap bounds the pages a page file writer holds in memory.
const defaultStageCap = 32 << 20

func (w *pageFileWriter) Write(p []byte) (int, error) {
	if int64(w.meta.Len())+int64(len(p)) > MaxPageFileMeta {
		return 0, fmt.Errorf("stream's non-page records exceed %d bytes", MaxPageFileMeta)
	}
	return w.meta.Write(p)
}

func (w *pageFileWriter) flush() error {
	if len(w.pending) == 0 {
		return nil
	}
	_, err := w.f.WriteAt(w.pending, w.data+w.pendingSlot*pageSize)
	w.pending = w.pending[:0]
	return err
}

// stage keeps data as slot s's newest copy until flushStaged.
func (w *pageFileWriter) stage(s int64, data []byte) error {
	if i, ok := w.stagedAt[s]; ok {
		copy(w.staged[i:i+pageSize], data)
		return nil
	}
	if len(w.staged)+pageSize > w.stageCap {
		if err := w.flushStaged(); err != nil {
			return err
		}
	}
	w.stagedAt[s] = len(w.staged)
	w.staged = append(w.staged, data...)
	return nil
}

// flushStaged writes the pending pages, then the staged ones over them in
// slot order, each run of consecutive slots in one write.
func (w *pageFileWriter) flushStaged() error {
	if err := w.flush(); err != nil || len(w.stagedAt) == 0 {
		return err
	}
	slots := make([]int64, 0, len(w.stagedAt))
	for s := range w.stagedAt {
		slots = append(slots, s)
	}
	slices.Sort(slots)
	run := make([]byte, 0, min(len(w.staged), 1<<20))
	for i := 0; i < len(slots); {
		j := i
		run = run[:0]
		for j < len(slots) && slots[j] == slots[i]+int64(j-i) && len(run) < 1<<20 {
			at := w.stagedAt[slots[j]]
			run = append(run, w.staged[at:at+pageSize]...)
			j++
		}
		if _, err := w.f.WriteAt(run, w.data+slots[i]*pageSize); err != nil {
			return err
		}
		i = j
	}
	w.staged = w.staged[:0]
	clear(w.stagedAt)
	return nil
}

// goneEntry marks a bare entry whose pfn has a slot now (bits between the
// pfn and the type set: never a valid entry).
const goneEntry = ^uint64(0)

func (w *pageFileWriter) entry(pfn uint64, typ uint8, data []byte) error {
	s, ok := w.slot[pfn]
	if !ok {
		b, isBare := w.bare[pfn]
		switch {
		case data == nil && isBare:
			w.bareEntries[b] = pfn | uint64(typ)<<pfnTypeShift
			return nil
		case len(w.entries)+len(w.bareEntries)-w.bareGone >= MaxPageFileSlots && !isBare:
			return fmt.Errorf("over %d distinct pfns", MaxPageFileSlots)
		case data == nil:
			w.bare[pfn] = len(w.bareEntries)
			w.bareEntries = append(w.bareEntries, pfn|uint64(typ)<<pfnTypeShift)
			return nil
		case isBare:
			w.bareEntries[b] = goneEntry
			w.bareGone++
			delete(w.bare, pfn)
		}
		s = int64(len(w.entries))
		w.slot[pfn] = s
		w.entries = append(w.entries, 0)
		w.written = append(w.written, false)
	}
	w.entries[s] = pfn | uint64(typ)<<pfnTypeShift
	switch {
	case data == nil && !w.written[s]:
		return nil
	case data == nil:
		data = w.zero[:] // no stale copy stays behind
	case !w.written[s] && bytes.Equal(data, w.zero[:]):
		return nil // a hole
	}
	if w.written[s] {
		return w.stage(s, data)
	}
	w.written[s] = true
	if len(w.pending) > 0 && (s != w.pendingSlot+int64(len(w.pending)/pageSize) || len(w.pending) >= 1<<20) {
		if err := w.flush(); err != nil {
			return err
		}
	}
	if len(w.pending) == 0 {
		w.pendingSlot = s
	}
	w.pending = append(w.pending, data...)
	return nil
}

// WritePageFile reads an xl stream or save file from r (as ReadStream
// does, calling onPage for every page) and writes it into f, an empty
// regular file, as a page file (PageFileFormat).
func WritePageFile(r io.Reader, f *os.File, onPage PageFunc) (PageFileStats, error) {
	return writePageFile(r, f, onPage, pageFileDataOffset)
}

// writePageFile is WritePageFile with the data at offset data (a multiple
// of pageSize, at least pageSize): the fuzz seeds are small with 4096.
func writePageFile(r io.Reader, f *os.File, onPage PageFunc, data int64) (PageFileStats, error) {
	return writePageFileStaged(r, f, onPage, data, defaultStageCap)
}

// writePageFileStaged is writePageFile holding at most stageCap bytes of
// pages sent again (tests make it small).
func writePageFileStaged(r io.Reader, f *os.File, onPage PageFunc, data int64, stageCap int) (PageFileStats, error) {
	w := &pageFileWriter{f: f, data: data, slot: map[uint64]int64{}, bare: map[uint64]int{}, pageAt: -1,
		pending: make([]byte, 0, 1<<20), stagedAt: map[int64]int{}, stageCap: max(stageCap, pageSize)}
	info, err := readStream(r, onPage, streamHooks{
		meta:  w,
		entry: w.entry,
		pageRecord: func() {
			if w.pageAt < 0 {
				w.pageAt = int64(w.meta.Len())
			}
		},
	})
	st := PageFileStats{Stream: info, Slots: int64(len(w.entries)), Bare: int64(len(w.bareEntries) - w.bareGone)}
	if err != nil {
		return st, err
	}
	if w.pageAt < 0 {
		return st, errors.New("xen page file: the stream has no PAGE_DATA record")
	}
	if err := w.flushStaged(); err != nil {
		return st, fmt.Errorf("xen page file: %w", err)
	}
	table := w.data + int64(len(w.entries))*pageSize
	tb := make([]byte, 0, 8*(st.Slots+st.Bare))
	for _, e := range w.entries {
		tb = binary.LittleEndian.AppendUint64(tb, e)
	}
	for _, e := range w.bareEntries {
		if e != goneEntry {
			tb = binary.LittleEndian.AppendUint64(tb, e)
		}
	}
	meta := table + int64(len(tb))
	h := pageFileHeader{
		length: uint64(meta) + uint64(w.meta.Len()), data: uint64(w.data), slots: uint64(st.Slots),
		table: uint64(table), meta: uint64(meta), metaLen: uint64(w.meta.Len()), pageAt: uint64(w.pageAt),
		bare: uint64(st.Bare),
	}
	for _, part := range []struct {
		b   []byte
		off int64
	}{{tb, table}, {w.meta.Bytes(), meta}, {h.encode(), 0}} {
		if _, err := f.WriteAt(part.b, part.off); err != nil {
			return st, fmt.Errorf("xen page file: %w", err)
		}
	}
	st.Size = int64(h.length)
	return st, nil
}

// PageFile is a page file checked by OpenPageFile.
type PageFile struct {
	r       io.ReaderAt
	h       pageFileHeader
	entries []uint64
	meta    []byte
	// Info is what the meta says of the stream (its pages not counted).
	Info StreamInfo
}

// OpenPageFile reads and checks the header, the table and the meta of the
// page file r of size bytes, which it does not trust: every length, offset,
// pfn and type is checked, the meta must parse as a stream without
// PAGE_DATA records, and the page offset must be a libxc record boundary.
func OpenPageFile(r io.ReaderAt, size int64) (*PageFile, error) {
	hb := make([]byte, pageSize)
	if size < pageSize {
		return nil, pfErr("length", "file of %d bytes is shorter than its %d-byte header", size, pageSize)
	}
	if _, err := r.ReadAt(hb, 0); err != nil {
		return nil, fmt.Errorf("xen page file: reading header: %w", err)
	}
	if !bytes.Equal(hb[:16], []byte(pageFileMagic)) {
		return nil, pfErr("magic", "got %q, want %q", hb[:16], pageFileMagic)
	}
	le := binary.LittleEndian
	if v := le.Uint32(hb[16:]); v != pageFileVersion {
		return nil, pfErr("version", "got %d, want %d", v, pageFileVersion)
	}
	if fl := le.Uint32(hb[20:]); fl != 0 {
		return nil, pfErr("flags", "got %#x, want 0", fl)
	}
	for i, c := range hb[pageFileHeaderLen:] {
		if c != 0 {
			return nil, pfErr("header", "reserved byte %d is %#x, want 0", pageFileHeaderLen+i, c)
		}
	}
	var h pageFileHeader
	for i, p := range []*uint64{&h.length, &h.data, &h.slots, &h.table, &h.meta, &h.metaLen, &h.pageAt, &h.bare} {
		*p = le.Uint64(hb[24+8*i:])
	}
	switch {
	case h.length != uint64(size):
		return nil, pfErr("file length", "header says %d, file has %d bytes", h.length, size)
	case h.data < pageSize || h.data%pageSize != 0:
		return nil, pfErr("data offset", "%d is not a multiple of %d past the header", h.data, pageSize)
	case h.slots > MaxPageFileSlots:
		return nil, pfErr("slots", "%d, want at most %d", h.slots, MaxPageFileSlots)
	case h.bare > MaxPageFileSlots-h.slots || h.slots+h.bare == 0:
		return nil, pfErr("bare entries", "%d beside %d slots, want 1 to %d entries in all", h.bare, h.slots, MaxPageFileSlots)
	case h.data > h.length || h.slots > (h.length-h.data)/pageSize || h.table != h.data+h.slots*pageSize:
		return nil, pfErr("table offset", "%d, want data offset %d + %d slots of %d bytes, within the file's %d", h.table, h.data, h.slots, pageSize, h.length)
	case h.table > h.length || h.slots+h.bare > (h.length-h.table)/8 || h.meta != h.table+8*(h.slots+h.bare):
		return nil, pfErr("meta offset", "%d, want table offset %d + 8 x (%d slots + %d bare entries), within the file", h.meta, h.table, h.slots, h.bare)
	case h.metaLen > MaxPageFileMeta:
		return nil, pfErr("meta length", "%d over %d", h.metaLen, MaxPageFileMeta)
	case h.meta > h.length || h.metaLen != h.length-h.meta:
		return nil, pfErr("meta length", "%d, want file length %d - meta offset %d", h.metaLen, h.length, h.meta)
	case h.pageAt > h.metaLen:
		return nil, pfErr("page offset", "%d past the meta's %d bytes", h.pageAt, h.metaLen)
	}
	n := h.slots + h.bare
	tb := make([]byte, 8*n)
	if _, err := r.ReadAt(tb, int64(h.table)); err != nil {
		return nil, fmt.Errorf("xen page file: reading table: %w", err)
	}
	p := &PageFile{r: r, h: h, entries: make([]uint64, n), meta: make([]byte, h.metaLen)}
	seen := make(map[uint64]struct{}, n)
	for i := range p.entries {
		e := le.Uint64(tb[8*i:])
		pfn, t := e&pfnMask, uint8(e>>pfnTypeShift)
		if e&^pfnMask&^(0xf<<pfnTypeShift) != 0 {
			return nil, pfErr("table", "entry %d (%#x) has bits set between its pfn and its type", i, e)
		}
		if !validPageType(t) {
			return nil, pfErr("table", "entry %d: pfn %#x has reserved type %#x", i, pfn, t)
		}
		if uint64(i) >= h.slots && pageTypeHasData(t) {
			return nil, pfErr("table", "bare entry %d: pfn %#x has type %#x, which has data, and no slot", i, pfn, t)
		}
		if _, dup := seen[pfn]; dup {
			return nil, pfErr("table", "entry %d: pfn %#x appears twice", i, pfn)
		}
		seen[pfn] = struct{}{}
		p.entries[i] = e
	}
	if _, err := r.ReadAt(p.meta, int64(h.meta)); err != nil && !(errors.Is(err, io.EOF) && h.metaLen == 0) {
		return nil, fmt.Errorf("xen page file: reading meta: %w", err)
	}
	boundary := false
	info, err := readStream(bytes.NewReader(p.meta), nil, streamHooks{
		libxcRecord: func(off int64) { boundary = boundary || uint64(off) == h.pageAt },
		entry:       func(uint64, uint8, []byte) error { return errors.New("meta holds a PAGE_DATA record") },
	})
	if err != nil {
		return nil, pfErr("meta", "%v", err)
	}
	if info.PageRecords != 0 {
		return nil, pfErr("meta", "holds %d PAGE_DATA records", info.PageRecords)
	}
	if info.Bytes != int64(h.metaLen) {
		return nil, pfErr("meta", "stream ends at byte %d of %d", info.Bytes, h.metaLen)
	}
	if !boundary {
		return nil, pfErr("page offset", "%d is not the start of a libxc record", h.pageAt)
	}
	p.Info = info
	return p, nil
}

// Slots returns the number of pfns in the file that have a slot (were sent
// with data).
func (p *PageFile) Slots() int64 { return int64(p.h.slots) }

// WriteStream writes the stream the file holds to w (see PageFileFormat)
// and returns its length.
func (p *PageFile) WriteStream(w io.Writer) (int64, error) {
	var n int64
	put := func(b []byte) error {
		k, err := w.Write(b)
		n += int64(k)
		return err
	}
	if err := put(p.meta[:p.h.pageAt]); err != nil {
		return n, err
	}
	var buf []byte // grown to the largest batch
	le := binary.LittleEndian
	for first := 0; first < len(p.entries); first += rebuildBatch {
		batch := p.entries[first:min(first+rebuildBatch, len(p.entries))]
		withData := 0
		for _, e := range batch {
			if pageTypeHasData(uint8(e >> pfnTypeShift)) {
				withData++
			}
		}
		if need := 16 + 8*len(batch) + pageSize*withData; cap(buf) < need {
			buf = make([]byte, 0, need)
		}
		buf = buf[:16+8*len(batch)]
		le.PutUint32(buf[0:], libxcPageData)
		le.PutUint32(buf[4:], uint32(8+8*len(batch)+pageSize*withData))
		le.PutUint32(buf[8:], uint32(len(batch)))
		le.PutUint32(buf[12:], 0)
		for i, e := range batch {
			le.PutUint64(buf[16+8*i:], e)
		}
		// Runs of consecutive slots with data are read at once.
		for i := 0; i < len(batch); {
			if !pageTypeHasData(uint8(batch[i] >> pfnTypeShift)) {
				i++
				continue
			}
			j := i + 1
			for j < len(batch) && pageTypeHasData(uint8(batch[j]>>pfnTypeShift)) {
				j++
			}
			at := len(buf)
			buf = buf[:at+(j-i)*pageSize]
			if _, err := p.r.ReadAt(buf[at:], int64(p.h.data)+int64(first+i)*pageSize); err != nil {
				return n, fmt.Errorf("xen page file: reading slots %d to %d: %w", first+i, first+j-1, err)
			}
			i = j
		}
		if err := put(buf); err != nil {
			return n, err
		}
	}
	if err := put(p.meta[p.h.pageAt:]); err != nil {
		return n, err
	}
	return n, nil
}
