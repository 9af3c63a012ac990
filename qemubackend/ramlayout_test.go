package qemubackend

import (
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// sparseFile is a file of size bytes that reads as zeros but for its
// segments: a mapped-ram file's headers without its megabytes of pages.
type sparseFile struct {
	size int64
	segs []fileSeg
}

type fileSeg struct {
	off int64
	b   []byte
}

func (s *sparseFile) ReadAt(p []byte, off int64) (int, error) {
	if off >= s.size {
		return 0, io.EOF
	}
	n := len(p)
	if int64(n) > s.size-off {
		n = int(s.size - off)
	}
	clear(p[:n])
	for _, g := range s.segs {
		lo, hi := max(off, g.off), min(off+int64(n), g.off+int64(len(g.b)))
		if lo < hi {
			copy(p[lo-off:hi-off], g.b[lo-g.off:hi-g.off])
		}
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// marshal encodes s for the fuzzer: its size, then each segment's offset,
// length and bytes.
func (s *sparseFile) marshal() []byte {
	b := binary.BigEndian.AppendUint64(nil, uint64(s.size))
	for _, g := range s.segs {
		b = binary.BigEndian.AppendUint64(b, uint64(g.off))
		b = binary.BigEndian.AppendUint16(b, uint16(len(g.b)))
		b = append(b, g.b...)
	}
	return b
}

// unmarshalSparse is marshal's inverse, taking whatever it can of b.
func unmarshalSparse(b []byte) *sparseFile {
	s := &sparseFile{}
	if len(b) < 8 {
		return s
	}
	s.size = int64(binary.BigEndian.Uint64(b) >> 1) // non-negative
	for b = b[8:]; len(b) >= 10; {
		off := int64(binary.BigEndian.Uint64(b) >> 1)
		n := int(binary.BigEndian.Uint16(b[8:]))
		b = b[10:]
		n = min(n, len(b))
		s.segs = append(s.segs, fileSeg{off, b[:n]})
		b = b[n:]
	}
	return s
}

type testBlock struct {
	name   string
	length int64
}

// encodeMappedRAM writes the headers of a mapped-ram file as QEMU 10
// lays them out: the file header, the configuration section (machine
// type, capabilities), the RAM section's start, then each block's entry
// and mapped-ram header, its bitmap and pages (zeros here) up to the next
// 1 MiB, the next entry after its pages, and 4 KiB of device state at the
// end. It also returns the layout ParseMappedRAM should read.
func encodeMappedRAM(machine string, caps []string, blocks []testBlock) (*sparseFile, *MappedRAMLayout) {
	be32 := binary.BigEndian.AppendUint32
	be64 := binary.BigEndian.AppendUint64
	short := func(b []byte, s string) []byte { return append(append(b, byte(len(s))), s...) }
	h := be32(be32(nil, vmFileMagic), vmFileVersion)
	h = append(h, vmConfiguration)
	h = append(be32(h, uint32(len(machine))), machine...)
	h = short(append(h, vmSubsection), "configuration/capabilities")
	h = be32(be32(h, 1), uint32(len(caps)))
	for _, c := range caps {
		h = short(h, c)
	}
	h = be32(append(h, vmSectionStart), 2) // the section's id
	h = be32(be32(short(h, "ram"), 0), ramSectionVer)
	var total int64
	for _, b := range blocks {
		total += b.length
	}
	h = be64(h, uint64(total)|ramFlagMemSize)
	f := &sparseFile{}
	l := &MappedRAMLayout{Machine: machine, Capabilities: caps}
	off, seg := int64(0), h
	for _, b := range blocks {
		seg = be64(short(seg, b.name), uint64(b.length))
		hdr := off + int64(len(seg))
		bm := hdr + mappedRAMHdrLen
		bmLen := (b.length/ramPageSize + 63) / 64 * 8
		po := (bm + bmLen + mappedRAMAlign - 1) / mappedRAMAlign * mappedRAMAlign
		seg = be64(be64(be64(be32(seg, mappedRAMVersion), ramPageSize), uint64(bm)), uint64(po))
		f.segs = append(f.segs, fileSeg{off, seg})
		l.Blocks = append(l.Blocks, RAMBlock{Name: b.name, Length: b.length, PageSize: ramPageSize,
			BitmapOffset: bm, BitmapLen: bmLen, PagesOffset: po})
		off, seg = po+b.length, nil
	}
	f.size = off + 4096
	return f, l
}

var pcBlocks = []testBlock{
	{"pc.ram", 128 << 20}, {"/rom@etc/acpi/tables", 128 << 10}, {"pc.bios", 256 << 10},
	{"0000:00:02.0/virtio-net-pci.rom", 256 << 10}, {"pc.rom", 128 << 10}, {"/rom@etc/table-loader", 4096},
}

var pcCaps = []string{"events", "mapped-ram", "multifd"}

func TestParseMappedRAM(t *testing.T) {
	f, want := encodeMappedRAM("pc-i440fx-10.0", pcCaps, pcBlocks)
	got, err := ParseMappedRAM(f, f.size)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("layout (-want +got):\n%s", d)
	}
	ram, ok := got.Block("pc.ram")
	if !ok || ram.PagesOffset != 1<<20 || ram.BitmapLen != 128<<20/4096/8 {
		t.Errorf("pc.ram = %+v, %v: want its pages at 1 MiB and a 4 KiB bitmap", ram, ok)
	}
	if _, ok := got.Block("nope"); ok {
		t.Error(`Block("nope") found a block`)
	}
}

// TestParseMappedRAMRefuses damages one field at a time of a good file
// and checks that the error names it.
func TestParseMappedRAMRefuses(t *testing.T) {
	good, l := encodeMappedRAM("pc-i440fx-10.0", pcCaps, pcBlocks)
	head := good.segs[0].b
	find := func(s string) int {
		i := strings.Index(string(head), s)
		if i < 0 {
			t.Fatalf("%q not in the header", s)
		}
		return i
	}
	ram := l.Blocks[0]
	hdr := ram.BitmapOffset - mappedRAMHdrLen // pc.ram's mapped-ram header
	tests := []struct {
		name  string
		edit  func(b []byte) // on a copy of the first segment
		size  int64          // if set, the file's size
		field string         // in the error
	}{
		{"magic", func(b []byte) { b[0] = 'X' }, 0, "magic"},
		{"version", func(b []byte) { b[7] = 4 }, 0, "version"},
		{"no configuration", func(b []byte) { b[8] = 0x01 }, 0, "configuration section"},
		{"long machine name", func(b []byte) { binary.BigEndian.PutUint32(b[9:], 1000) }, 0, "machine type length"},
		{"machine name charset", func(b []byte) { b[13] = '\n' }, 0, "machine type"},
		{"unknown subsection", func(b []byte) { b[find("capabilities")] = 'k' }, 0, "configuration subsection"},
		{"subsection version", func(b []byte) { b[find("capabilities")+len("capabilities")+3] = 2 }, 0, "version"},
		{"no mapped-ram", func(b []byte) { b[find("mapped-ram")] = 'n' }, 0, "capabilities"},
		{"capability charset", func(b []byte) { b[find("events")] = 0 }, 0, "capability"},
		{"not ram first", func(b []byte) { b[find("ram\x00")] = 'x' }, 0, "section name"},
		{"ram version", func(b []byte) { b[find("ram\x00")+3+7] = 5 }, 0, "ram section version"},
		{"ram flags", func(b []byte) { b[find("ram\x00")+3+8+7] |= 0x10 }, 0, "ram total"},
		{"total past the file", func(b []byte) { b[find("ram\x00")+3+8] = 0x7f }, 0, "ram total"},
		{"empty block name", func(b []byte) { b[find("pc.ram")-1] = 0 }, 0, "ram block 0 name"},
		{"block name charset", func(b []byte) { b[find("pc.ram")+2] = ' ' }, 0, "ram block 0 name"},
		{"block length unaligned", func(b []byte) { b[hdr-1] = 1 }, 0, "ram block 0 (pc.ram) length"},
		{"block longer than the total", func(b []byte) { b[hdr-5] = 0x10 }, 0, "ram block 0 (pc.ram) length"},
		{"header version", func(b []byte) { b[hdr+3] = 2 }, 0, "header version"},
		{"page size", func(b []byte) { b[hdr+4+6] = 0x20 }, 0, "page size"},
		{"bitmap offset", func(b []byte) { b[hdr+4+8+7]++ }, 0, "bitmap offset"},
		{"pages unaligned", func(b []byte) { b[hdr+4+16+7] = 1 }, 0, "pages offset"},
		{"pages over the bitmap", func(b []byte) { binary.BigEndian.PutUint64(b[hdr+4+16:], 0) }, 0, "pages offset"},
		{"pages past the file", func(b []byte) { b[hdr+4+16] = 0x40 }, 0, "pages offset"},
		{"truncated after the header", nil, int64(len(head)) - 3, "ram total"},
		{"truncated in the pages", nil, ram.PagesOffset + ram.Length - 1, "ram block 0 (pc.ram) pages offset"},
		{"truncated in a later block", nil, l.Blocks[1].PagesOffset + 1, "ram block 1 (/rom@etc/acpi/tables) pages offset"},
		{"truncated in the header", nil, 20, "past the end"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &sparseFile{size: good.size, segs: append([]fileSeg(nil), good.segs...)}
			b := append([]byte(nil), head...)
			if tt.edit != nil {
				tt.edit(b)
			}
			f.segs[0].b = b
			if tt.size != 0 {
				f.size = tt.size
			}
			_, err := ParseMappedRAM(f, f.size)
			if !errors.Is(err, ErrBadMappedRAM) || !strings.Contains(err.Error(), tt.field) {
				t.Errorf("ParseMappedRAM = %v, want ErrBadMappedRAM naming %q", err, tt.field)
			}
		})
	}
}

func TestParseMappedRAMBlocks(t *testing.T) {
	tests := []struct {
		name   string
		blocks []testBlock
		ok     bool
	}{
		{"one block", []testBlock{{"pc.ram", 4096}}, true},
		{"duplicate name", []testBlock{{"pc.ram", 4096}, {"pc.ram", 4096}}, false},
		{"odd bitmap", []testBlock{{"a", 65 * 4096}, {"b", 3 * 4096}}, true},
	}
	for _, tt := range tests {
		f, want := encodeMappedRAM("pc", []string{"mapped-ram"}, tt.blocks)
		got, err := ParseMappedRAM(f, f.size)
		if (err == nil) != tt.ok {
			t.Errorf("%s: ParseMappedRAM = %v, want ok=%v", tt.name, err, tt.ok)
		}
		if err == nil {
			if d := cmp.Diff(want, got); d != "" {
				t.Errorf("%s: layout (-want +got):\n%s", tt.name, d)
			}
		}
	}
}

// FuzzParseMappedRAM: whatever the file, ParseMappedRAM returns a layout
// whose every range lies inside the file, in order, or an error; it never
// panics. The input is a sparse file (sparseFile.marshal), seeded with
// good files' headers.
func FuzzParseMappedRAM(f *testing.F) {
	for _, blocks := range [][]testBlock{pcBlocks, {{"pc.ram", 4096}}, {{"a", 65 * 4096}, {"b", 4096}}} {
		s, _ := encodeMappedRAM("pc-q35-10.0", pcCaps, blocks)
		f.Add(s.marshal())
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s := unmarshalSparse(data)
		l, err := ParseMappedRAM(s, s.size)
		if err != nil {
			return
		}
		end := int64(0)
		for i, b := range l.Blocks {
			if b.BitmapOffset < end || b.BitmapOffset+b.BitmapLen > b.PagesOffset ||
				b.PagesOffset%mappedRAMAlign != 0 || b.Length <= 0 || b.Length%ramPageSize != 0 ||
				b.PagesOffset+b.Length > s.size || b.BitmapLen*8*ramPageSize < b.Length {
				t.Fatalf("block %d %+v: a range outside the file or out of order (previous end %#x, size %#x)", i, b, end, s.size)
			}
			end = b.PagesOffset + b.Length
		}
		if len(l.Blocks) == 0 {
			t.Fatal("a layout without blocks")
		}
	})
}

func TestRAMBackendArgs(t *testing.T) {
	s := Spec{Name: "r", MemoryMiB: 128, VCPUs: 1, Machine: "pc", ram: &ramBackend{Offset: 1 << 20, Size: 128 << 20}}
	a, err := s.Args("/q.sock", true)
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(a, " ")
	for _, want := range []string{
		"-machine type=pc,memory-backend=pc.ram ",
		"-object memory-backend-file,id=pc.ram,share=on,mem-path=/proc/self/fd/3,offset=1048576,size=134217728 ",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("args %q: want %q", got, want)
		}
	}
	if ramPath != "/proc/self/fd/"+string(rune('0'+ramFD)) {
		t.Errorf("ramPath %q is not descriptor %d", ramPath, ramFD)
	}
	for _, r := range []ramBackend{{Offset: 1 << 20, Size: 64 << 20}, {Offset: 100, Size: 128 << 20}, {Offset: -4096, Size: 128 << 20}} {
		s.ram = &r
		if _, err := s.Args("/q.sock", true); !errors.Is(err, ErrBadValue) {
			t.Errorf("ram %+v: Args = %v, want ErrBadValue", r, err)
		}
	}
}
