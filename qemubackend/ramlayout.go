package qemubackend

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
)

// ErrBadMappedRAM is returned (wrapped, with the field and offset named)
// for a mapped-ram file whose RAMBlock list or headers ParseMappedRAM
// cannot accept.
var ErrBadMappedRAM = errors.New("not a mapped-ram file this build reads")

// RAMBlock is one RAMBlock of a mapped-ram file (MappedRAMFormat): its
// pages are the Length bytes at PagesOffset of the file, those present
// marked in the bitmap of BitmapLen bytes at BitmapOffset (one bit a page,
// in the saving host's unsigned longs; a clear bit is a zero page).
type RAMBlock struct {
	Name         string // QEMU's idstr, e.g. "pc.ram"
	Length       int64  // used_length: bytes of the block
	PageSize     int64
	BitmapOffset int64
	BitmapLen    int64
	PagesOffset  int64
}

// MappedRAMLayout is what ParseMappedRAM reads of a mapped-ram file: the
// machine type it was saved from, the migration capabilities it names and
// its RAMBlocks in file order.
type MappedRAMLayout struct {
	Machine      string
	Capabilities []string
	Blocks       []RAMBlock
}

// Block returns the block named name, if there is one.
func (l *MappedRAMLayout) Block(name string) (RAMBlock, bool) {
	for _, b := range l.Blocks {
		if b.Name == name {
			return b, true
		}
	}
	return RAMBlock{}, false
}

// The pieces of QEMU's migration stream (migration/savevm.c, ram.c) the
// parser reads. Every number is big-endian.
const (
	vmFileMagic      = 0x5145564d // "QEVM"
	vmFileVersion    = 3
	vmConfiguration  = 0x07
	vmSubsection     = 0x05
	vmSectionStart   = 0x01
	ramSectionVer    = 4
	ramFlagMemSize   = 0x04
	mappedRAMVersion = 1
	mappedRAMHdrLen  = 4 + 8 + 8 + 8
	// mappedRAMAlign is the alignment of each block's pages in the file.
	mappedRAMAlign = 1 << 20
	ramPageSize    = 4096 // x86's target page
	// maxRAMBlocks bounds the work on a hostile file; a PC has about ten.
	maxRAMBlocks = 1024
	// maxMachineName bounds the configuration's machine type name.
	maxMachineName = 256
	// maxCapabilities bounds the configuration's capability list (QEMU 10
	// has about 25).
	maxCapabilities = 256
)

// ParseMappedRAM reads the layout of the mapped-ram file r of size bytes:
// its header and configuration section (machine type, capabilities), then
// the RAM section's block list with each block's mapped-ram header, which
// it checks field by field against the format and the file's size (block
// names of printable ASCII, lengths whole pages summing to the section's
// total, bitmaps right after their headers and of the block's size, pages
// aligned to 1 MiB and inside the file, no two blocks overlapping). It
// reads only those headers (a few hundred bytes per block), never the
// pages or the bitmaps. A file it refuses is an error wrapping
// ErrBadMappedRAM that names the field and its offset, or r's error.
func ParseMappedRAM(r io.ReaderAt, size int64) (*MappedRAMLayout, error) {
	p := &layoutParser{r: r, size: size}
	l, err := p.parse()
	if err != nil {
		return nil, fmt.Errorf("mapped-ram file: %w", err)
	}
	return l, nil
}

type layoutParser struct {
	r    io.ReaderAt
	size int64
	off  int64
	buf  [256]byte
}

// bad returns the format error for field at offset at.
func bad(at int64, field, format string, a ...any) error {
	return fmt.Errorf("%s at %#x: %s: %w", field, at, fmt.Sprintf(format, a...), ErrBadMappedRAM)
}

// read returns the next n (<= 256) bytes, valid until the next call.
func (p *layoutParser) read(field string, n int) ([]byte, error) {
	if p.off < 0 || p.off > p.size-int64(n) {
		return nil, bad(p.off, field, "%d bytes past the end of the %d-byte file", n, p.size)
	}
	b := p.buf[:n]
	k, err := p.r.ReadAt(b, p.off)
	if k < n {
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("read %s at %#x: %w", field, p.off, err)
	}
	p.off += int64(n)
	return b, nil
}

func (p *layoutParser) u8(field string) (byte, error) {
	b, err := p.read(field, 1)
	if err != nil {
		return 0, err
	}
	return b[0], nil
}

func (p *layoutParser) u32(field string) (uint32, error) {
	b, err := p.read(field, 4)
	if err != nil {
		return 0, err
	}
	return binary.BigEndian.Uint32(b), nil
}

func (p *layoutParser) u64(field string) (uint64, error) {
	b, err := p.read(field, 8)
	if err != nil {
		return 0, err
	}
	return binary.BigEndian.Uint64(b), nil
}

// name reads a string of n bytes, each printable ASCII without a space.
func (p *layoutParser) name(field string, n int) (string, error) {
	at := p.off
	if n == 0 {
		return "", bad(at, field, "empty")
	}
	b, err := p.read(field, n)
	if err != nil {
		return "", err
	}
	for i, c := range b {
		if c <= 0x20 || c >= 0x7f {
			return "", bad(at, field, "byte %d is %#x, want printable ASCII", i, c)
		}
	}
	return string(b), nil
}

// shortName reads a string preceded by its length in one byte.
func (p *layoutParser) shortName(field string) (string, error) {
	n, err := p.u8(field + " length")
	if err != nil {
		return "", err
	}
	return p.name(field, int(n))
}

func (p *layoutParser) parse() (*MappedRAMLayout, error) {
	at := p.off
	magic, err := p.u32("magic")
	if err != nil {
		return nil, err
	}
	if magic != vmFileMagic {
		return nil, bad(at, "magic", "%#08x, want %#08x (QEVM)", magic, vmFileMagic)
	}
	at = p.off
	if v, err := p.u32("version"); err != nil {
		return nil, err
	} else if v != vmFileVersion {
		return nil, bad(at, "version", "%d, want %d", v, vmFileVersion)
	}
	l := &MappedRAMLayout{}
	if err := p.configuration(l); err != nil {
		return nil, err
	}
	for _, c := range []string{"mapped-ram"} {
		if !slices.Contains(l.Capabilities, c) {
			return nil, bad(0, "configuration capabilities", "%q missing: not a mapped-ram file", c)
		}
	}
	// Either would add fields to each block's entry (ignore-shared its
	// address; postcopy a page size), and neither goes with a file restore.
	for _, c := range []string{"x-ignore-shared", "postcopy-ram"} {
		if slices.Contains(l.Capabilities, c) {
			return nil, bad(0, "configuration capabilities", "%q: not read", c)
		}
	}
	if err := p.ramSection(l); err != nil {
		return nil, err
	}
	return l, nil
}

// configuration reads the configuration section: the machine type, then
// its subsections (target page bits, capabilities, UUID).
func (p *layoutParser) configuration(l *MappedRAMLayout) error {
	at := p.off
	t, err := p.u8("configuration section")
	if err != nil {
		return err
	}
	if t != vmConfiguration {
		return bad(at, "configuration section", "type %#x, want %#x", t, vmConfiguration)
	}
	at = p.off
	n, err := p.u32("machine type length")
	if err != nil {
		return err
	}
	if n > maxMachineName {
		return bad(at, "machine type length", "%d, want at most %d", n, maxMachineName)
	}
	if l.Machine, err = p.name("machine type", int(n)); err != nil {
		return err
	}
	seen := map[string]bool{}
	for {
		at := p.off
		b, err := p.read("section type", 1)
		if err != nil {
			return err
		}
		if b[0] != vmSubsection {
			p.off = at
			return nil
		}
		name, err := p.shortName("configuration subsection name")
		if err != nil {
			return err
		}
		if seen[name] {
			return bad(at, "configuration subsection", "%q twice", name)
		}
		seen[name] = true
		vat := p.off
		if v, err := p.u32("configuration subsection version"); err != nil {
			return err
		} else if v != 1 {
			return bad(vat, "configuration subsection "+name+" version", "%d, want 1", v)
		}
		switch name {
		case "configuration/target-page-bits":
			bat := p.off
			bits, err := p.u32("target page bits")
			if err != nil {
				return err
			}
			if bits != 12 {
				return bad(bat, "target page bits", "%d, want 12", bits)
			}
		case "configuration/capabilities":
			cat := p.off
			count, err := p.u32("capability count")
			if err != nil {
				return err
			}
			if count > maxCapabilities {
				return bad(cat, "capability count", "%d, want at most %d", count, maxCapabilities)
			}
			for range count {
				c, err := p.shortName("capability")
				if err != nil {
					return err
				}
				l.Capabilities = append(l.Capabilities, c)
			}
		case "configuration/uuid":
			if _, err := p.read("uuid", 16); err != nil {
				return err
			}
		default:
			return bad(at, "configuration subsection", "%q unknown", name)
		}
	}
}

// ramSection reads the RAM section's start (its header, then the total
// RAM size and each block's entry).
func (p *layoutParser) ramSection(l *MappedRAMLayout) error {
	at := p.off
	t, err := p.u8("section type")
	if err != nil {
		return err
	}
	if t != vmSectionStart {
		return bad(at, "section type", "%#x, want the RAM section's start (%#x)", t, vmSectionStart)
	}
	if _, err := p.u32("section id"); err != nil {
		return err
	}
	at = p.off
	id, err := p.shortName("section name")
	if err != nil {
		return err
	}
	if id != "ram" {
		return bad(at, "section name", "%q, want \"ram\" first", id)
	}
	if _, err := p.u32("ram instance id"); err != nil {
		return err
	}
	at = p.off
	if v, err := p.u32("ram section version"); err != nil {
		return err
	} else if v != ramSectionVer {
		return bad(at, "ram section version", "%d, want %d", v, ramSectionVer)
	}
	at = p.off
	v, err := p.u64("ram total")
	if err != nil {
		return err
	}
	if flags := v & (ramPageSize - 1); flags != ramFlagMemSize {
		return bad(at, "ram total", "flags %#x, want MEM_SIZE (%#x) alone", flags, ramFlagMemSize)
	}
	total := v &^ (ramPageSize - 1)
	if total == 0 || total > uint64(p.size) {
		return bad(at, "ram total", "%d bytes in a %d-byte file", total, p.size)
	}
	names := map[string]bool{}
	for left := int64(total); left > 0; {
		if len(l.Blocks) == maxRAMBlocks {
			return bad(p.off, "ram block", "more than %d blocks", maxRAMBlocks)
		}
		b, err := p.block(len(l.Blocks), left)
		if err != nil {
			return err
		}
		if names[b.Name] {
			return bad(p.off, fmt.Sprintf("ram block %d name", len(l.Blocks)), "%q twice", b.Name)
		}
		names[b.Name] = true
		l.Blocks = append(l.Blocks, b)
		left -= b.Length
		// The next entry follows the block's pages.
		p.off = b.PagesOffset + b.Length
	}
	return nil
}

// block reads block i's entry at p.off: its name, length and mapped-ram
// header; left is what the RAM total leaves for it and those after it.
func (p *layoutParser) block(i int, left int64) (RAMBlock, error) {
	field := func(f string) string { return fmt.Sprintf("ram block %d %s", i, f) }
	var b RAMBlock
	var err error
	if b.Name, err = p.shortName(field("name")); err != nil {
		return b, err
	}
	field = func(f string) string { return fmt.Sprintf("ram block %d (%s) %s", i, b.Name, f) }
	at := p.off
	n, err := p.u64(field("length"))
	if err != nil {
		return b, err
	}
	if n == 0 || n%ramPageSize != 0 || n > uint64(left) {
		return b, bad(at, field("length"), "%d, want a positive multiple of %d of at most the %d bytes the RAM total leaves", n, ramPageSize, left)
	}
	b.Length = int64(n)
	hdr := p.off
	at = p.off
	if v, err := p.u32(field("header version")); err != nil {
		return b, err
	} else if v != mappedRAMVersion {
		return b, bad(at, field("header version"), "%d, want %d", v, mappedRAMVersion)
	}
	at = p.off
	ps, err := p.u64(field("page size"))
	if err != nil {
		return b, err
	}
	if ps != ramPageSize {
		return b, bad(at, field("page size"), "%d, want %d", ps, ramPageSize)
	}
	b.PageSize = ramPageSize
	at = p.off
	bo, err := p.u64(field("bitmap offset"))
	if err != nil {
		return b, err
	}
	if want := uint64(hdr + mappedRAMHdrLen); bo != want {
		return b, bad(at, field("bitmap offset"), "%#x, want %#x (right after the header)", bo, want)
	}
	b.BitmapOffset = int64(bo)
	pages := b.Length / ramPageSize
	b.BitmapLen = (pages + 63) / 64 * 8
	at = p.off
	po, err := p.u64(field("pages offset"))
	if err != nil {
		return b, err
	}
	switch {
	case po%mappedRAMAlign != 0:
		return b, bad(at, field("pages offset"), "%#x, want a multiple of %#x", po, mappedRAMAlign)
	case po < uint64(b.BitmapOffset+b.BitmapLen):
		return b, bad(at, field("pages offset"), "%#x, want it after the bitmap's end %#x", po, b.BitmapOffset+b.BitmapLen)
	case po > uint64(p.size) || uint64(p.size)-po < uint64(b.Length):
		return b, bad(at, field("pages offset"), "%#x: its %d bytes end past the %d-byte file", po, b.Length, p.size)
	}
	b.PagesOffset = int64(po)
	return b, nil
}
