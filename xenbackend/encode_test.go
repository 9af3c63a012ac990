package xenbackend

import (
	"bytes"
	"encoding/binary"
)

// The test encoder writes streams from the specs (xl.h's save_file_header,
// libxl-migration-stream.pandoc, libxc-migration-stream.pandoc), so that
// the parser is checked against an independent writer of the format.

// testPage is one pfn of a PAGE_DATA record: its type (0 normal, 0xf XTAB
// and so on) and, for types with data, a fill byte for its 4 KiB.
type testPage struct {
	pfn  uint64
	typ  uint64
	fill byte
}

func hasData(typ uint64) bool { return typ < 0xd }

// enc builds a stream; every method appends one structure.
type enc struct{ bytes.Buffer }

func (e *enc) le32(v uint32) { e.Write(binary.LittleEndian.AppendUint32(nil, v)) }
func (e *enc) le64(v uint64) { e.Write(binary.LittleEndian.AppendUint64(nil, v)) }
func (e *enc) be16(v uint16) { e.Write(binary.BigEndian.AppendUint16(nil, v)) }
func (e *enc) be32(v uint32) { e.Write(binary.BigEndian.AppendUint32(nil, v)) }
func (e *enc) be64(v uint64) { e.Write(binary.BigEndian.AppendUint64(nil, v)) }

// xl writes xl's header with the JSON config as its optional data.
func (e *enc) xl(config string) {
	e.WriteString(XLMagic)
	e.le32(xlByteOrder)
	e.le32(xlFlagStreamV2 | xlFlagJSON)
	e.le32(0)
	e.le32(uint32(4 + len(config)))
	e.le32(uint32(len(config)))
	e.WriteString(config)
}

// libxl writes the libxl stream header.
func (e *enc) libxl() {
	e.be64(libxlIdent)
	e.be32(libxlVersion)
	e.be32(0)
}

// record writes a record (libxl's and libxc's share the framing).
func (e *enc) record(typ uint32, body []byte) {
	e.le32(typ)
	e.le32(uint32(len(body)))
	e.Write(body)
	e.Write(make([]byte, (8-len(body)%8)%8))
}

// libxcHeaders writes the LIBXC_CONTEXT record and libxc's image and
// domain headers (x86 HVM, Xen 4.17).
func (e *enc) libxcHeaders() {
	e.record(libxlLibxcContext, nil)
	e.be64(libxcMarker)
	e.be32(libxcID)
	e.be32(3)
	e.be16(0)
	e.Write(make([]byte, 6))
	e.le32(DomainX86HVM)
	e.Write([]byte{pageShift, 0, 0, 0})
	e.le32(4)
	e.le32(17)
}

// pageBody is a PAGE_DATA record body.
func pageBody(pages []testPage) []byte {
	var b enc
	b.le32(uint32(len(pages)))
	b.le32(0)
	for _, p := range pages {
		b.le64(p.typ<<pfnTypeShift | p.pfn)
	}
	for _, p := range pages {
		if hasData(p.typ) {
			b.Write(bytes.Repeat([]byte{p.fill}, pageSize))
		}
	}
	return b.Bytes()
}

// testStream is a whole stream shaped like a PVH domain's: static records,
// two rounds of pages (the second resends pfn 1), the trailing records and
// both END records. It returns the stream and the pages with data in order.
func testStream() ([]byte, []testPage) {
	round1 := []testPage{{pfn: 0, fill: 0xa0}, {pfn: 1, fill: 0xa1}, {pfn: 7, typ: 0xf}, {pfn: 0x12345, fill: 0xa2}}
	round2 := []testPage{{pfn: 1, fill: 0xb1}, {pfn: 9, typ: 0xe}}
	var e enc
	e.xl(`{"c_info":{"type":"pvh","name":"domu1"}}` + "\x00")
	e.libxl()
	e.libxcHeaders()
	e.record(0x11, bytes.Repeat([]byte{1}, 21)) // X86_CPUID_POLICY, padded
	e.record(0x10, nil)                         // STATIC_DATA_END
	e.record(libxcPageData, pageBody(round1))
	e.record(libxcPageData, pageBody(round2))
	e.record(0x80000123, []byte("optional")) // an unknown optional record
	e.record(0x08, make([]byte, 24))         // X86_TSC_INFO
	e.record(0x0a, make([]byte, 8+16))       // HVM_PARAMS
	e.record(0x09, make([]byte, 1000))       // HVM_CONTEXT
	e.record(libxcEnd, nil)
	e.record(libxlEnd, nil)
	var want []testPage
	for _, p := range append(round1, round2...) {
		if hasData(p.typ) {
			want = append(want, p)
		}
	}
	return e.Bytes(), want
}
