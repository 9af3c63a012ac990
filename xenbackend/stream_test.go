package xenbackend

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"strings"
	"testing"
)

type gotPage struct {
	pfn  uint64
	fill byte
}

// readAll parses b and collects its pages (each checked to be one byte
// repeated).
func readAll(t testing.TB, b []byte) (StreamInfo, []gotPage, int, error) {
	r := bytes.NewReader(b)
	var pages []gotPage
	info, err := ReadStream(r, func(pfn uint64, data []byte) error {
		if len(data) != pageSize {
			t.Fatalf("page %#x: got %d bytes, want %d", pfn, len(data), pageSize)
		}
		if !bytes.Equal(data, bytes.Repeat(data[:1], pageSize)) {
			t.Fatalf("page %#x: data is not its fill byte repeated", pfn)
		}
		pages = append(pages, gotPage{pfn, data[0]})
		return nil
	})
	return info, pages, r.Len(), err
}

func TestReadStreamPagesAndEnd(t *testing.T) {
	stream, want := testStream()
	trailer := []byte("domain is yours, you are cleared to unpause\x00")
	info, pages, left, err := readAll(t, append(append([]byte{}, stream...), trailer...))
	if err != nil {
		t.Fatal(err)
	}
	if left != len(trailer) {
		t.Errorf("bytes left after END: got %d, want %d (the parser must stop at libxl's END)", left, len(trailer))
	}
	if info.Bytes != int64(len(stream)) {
		t.Errorf("Bytes: got %d, want %d", info.Bytes, len(stream))
	}
	if len(pages) != len(want) {
		t.Fatalf("pages: got %d, want %d", len(pages), len(want))
	}
	for i, p := range want {
		if pages[i] != (gotPage{p.pfn, p.fill}) {
			t.Errorf("page %d: got pfn %#x fill %#x, want pfn %#x fill %#x", i, pages[i].pfn, pages[i].fill, p.pfn, p.fill)
		}
	}
	if info.Pages != int64(len(want)) || info.PageRecords != 2 {
		t.Errorf("Pages, PageRecords: got %d, %d, want %d, 2", info.Pages, info.PageRecords, len(want))
	}
	if got := string(info.Config); !strings.Contains(got, `"name":"domu1"`) {
		t.Errorf("Config: got %q, want the JSON config", got)
	}
	if info.DomainType != DomainX86HVM || info.LibxcVersion != 3 || info.XenMajor != 4 || info.XenMinor != 17 {
		t.Errorf("headers: got type %d, libxc v%d, Xen %d.%d, want 2, v3, 4.17", info.DomainType, info.LibxcVersion, info.XenMajor, info.XenMinor)
	}
}

// TestReadStreamTruncated: every proper prefix is an error, never a panic
// or a success.
func TestReadStreamTruncated(t *testing.T) {
	stream, _ := testStream()
	for n := 0; n < len(stream); n += 1 + n/64 {
		_, err := ReadStream(bytes.NewReader(stream[:n]), nil)
		var se *StreamError
		if !errors.As(err, &se) || !strings.Contains(se.Msg, "stream ends inside") {
			t.Fatalf("prefix of %d bytes: got %v, want a StreamError saying where the stream ends", n, err)
		}
	}
}

// TestReadStreamRejects: each malformed or unsupported stream is refused
// with an error that names what is wrong.
func TestReadStreamRejects(t *testing.T) {
	le := binary.LittleEndian
	// upTo builds a well-formed stream's beginning: xl header, libxl
	// header, and (with libxc) libxc's headers.
	upTo := func(libxc bool) *enc {
		e := &enc{}
		e.xl("{}\x00")
		e.libxl()
		if libxc {
			e.libxcHeaders()
		}
		return e
	}
	patch := func(b []byte, off int, v []byte) []byte {
		b = append([]byte{}, b...)
		copy(b[off:], v)
		return b
	}
	full, _ := testStream()
	libxlOff := bytes.Index(full, []byte("LibxlFmt"))
	libxcOff := bytes.Index(full, bytes.Repeat([]byte{0xff}, 8))
	withRec := func(typ uint32, body []byte) []byte {
		e := upTo(true)
		e.record(typ, body)
		return e.Bytes()
	}
	withRecHdr := func(typ, length uint32) []byte {
		e := upTo(true)
		e.le32(typ)
		e.le32(length)
		return e.Bytes()
	}
	pages := func(count uint32, pfns ...uint64) []byte {
		var b enc
		b.le32(count)
		b.le32(0)
		for _, p := range pfns {
			b.le64(p)
		}
		return b.Bytes()
	}
	for _, tc := range []struct {
		name   string
		stream []byte
		want   string
	}{
		{"magic", patch(full, 0, []byte("Xen saved domain, xm format")), "bad magic"},
		{"byte order", patch(full, 32, be32(xlByteOrder)), "byte order"},
		{"mandatory flag", patch(full, 36, le.AppendUint32(nil, 7)), "unknown mandatory flags"},
		{"stream v1", patch(full, 36, le.AppendUint32(nil, xlFlagJSON)), "not a stream v2"},
		{"optional flag", patch(full, 40, le.AppendUint32(nil, 1)), "unknown optional flags"},
		{"optional data huge", patch(full, 44, le.AppendUint32(nil, 0xffffffff)), "optional data length"},
		{"optional data tiny", patch(full, 44, le.AppendUint32(nil, 2)), "shorter than its config length"},
		{"config length", patch(upTo(false).Bytes(), 48, le.AppendUint32(nil, 4)), "config length 4 over"},
		{"libxl ident", patch(full, libxlOff, []byte("LibxlFmX")), "libxl header: ident"},
		{"libxl version", patch(full, libxlOff+8, be32(3)), "libxl header: version 3"},
		{"libxl big-endian", patch(full, libxlOff+12, be32(1)), "libxl header: options"},
		{"libxl legacy", patch(full, libxlOff+12, be32(2)), "libxl header: options"},
		{"libxc marker", patch(full, libxcOff, []byte{0}), "libxc image header: marker"},
		{"libxc id", patch(full, libxcOff+8, []byte("XENG")), "libxc image header: id"},
		{"libxc version", patch(full, libxcOff+12, be32(4)), "libxc image header: version 4"},
		{"libxc big-endian", patch(full, libxcOff+16, []byte{0, 1}), "libxc image header: options"},
		{"domain type", patch(full, libxcOff+24, le.AppendUint32(nil, 3)), "libxc domain header: type 3"},
		{"page shift", patch(full, libxcOff+28, []byte{16}), "page shift 16"},
		{"libxl unknown record", func() []byte { e := upTo(false); e.record(9, nil); return e.Bytes() }(), "unknown libxl record type 9"},
		{"libxl checkpoint", func() []byte { e := upTo(false); e.record(libxlCheckpointEnd, nil); return e.Bytes() }(), "checkpointed"},
		{"libxl END first", func() []byte { e := upTo(false); e.record(libxlEnd, nil); return e.Bytes() }(), "before any LIBXC_CONTEXT"},
		{"libxl END body", func() []byte { e := upTo(false); e.record(libxlEnd, []byte{0}); return e.Bytes() }(), "END record: length 1"},
		{"libxl record huge", func() []byte { e := upTo(false); e.le32(libxlEmulatorContext); e.le32(0xffffffff); return e.Bytes() }(), "over"},
		{"libxc record huge", withRecHdr(0x09, MaxRecordLen+1), "over"},
		{"libxc unknown mandatory", withRec(0x13, nil), "unknown mandatory libxc record type 0x13"},
		{"libxc checkpoint", withRec(libxcCheckpoint, nil), "checkpointed"},
		{"libxc END body", withRec(libxcEnd, []byte{1}), "libxc END record: length 1"},
		{"padding", patch(withRec(0x11, []byte{1}), len(withRec(0x11, []byte{1}))-1, []byte{1}), "padding is not zero"},
		{"pages short", withRec(libxcPageData, []byte{1, 0, 0, 0}), "shorter than its header"},
		{"pages none", withRec(libxcPageData, pages(0)), "count 0"},
		{"pages too many", withRecHdr(libxcPageData, 8+8*(MaxPagesPerRecord+1)), "PAGE_DATA header"},
		{"pages count huge", withRec(libxcPageData, pages(0xffffffff, 0)), "count 4294967295"},
		{"pages pfns missing", withRec(libxcPageData, pages(2, 0xf<<pfnTypeShift)), "too short for 2 pfns"},
		{"pages data missing", withRec(libxcPageData, pages(1, 5)), "want 4112"},
		{"pages reserved type", withRec(libxcPageData, pages(1, 0x6<<pfnTypeShift|5)), "reserved type"},
		{"pages extra data", withRec(libxcPageData, append(pages(1, 0xf<<pfnTypeShift), make([]byte, 8)...)), "want 16"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ReadStream(bytes.NewReader(tc.stream), nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func be32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

// TestReadStreamPageErrorStops: an error from the page callback ends the
// parse and is returned wrapped.
func TestReadStreamPageErrorStops(t *testing.T) {
	stream, _ := testStream()
	boom := errors.New("boom")
	n := 0
	_, err := ReadStream(bytes.NewReader(stream), func(uint64, []byte) error { n++; return boom })
	if !errors.Is(err, boom) || n != 1 {
		t.Fatalf("got %v after %d pages, want boom after 1", err, n)
	}
}

// FuzzReadStream: on any input the parser returns (no panic, no huge
// allocation), a success consumed at most the input, and the consumed
// prefix parses again to the same result.
func FuzzReadStream(f *testing.F) {
	stream, _ := testStream()
	f.Add(stream)
	real, err := os.ReadFile(realCapture)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(real)
	f.Add(stream[:len(stream)/2])
	var e enc
	e.xl("")
	e.libxl()
	e.libxcHeaders()
	e.record(libxcPageData, pageBody([]testPage{{pfn: 3, typ: 0xf}}))
	e.record(libxcEnd, nil)
	e.record(libxlEmulatorXSData, []byte("x"))
	e.record(libxlEnd, nil)
	f.Add(e.Bytes())
	f.Fuzz(func(t *testing.T, b []byte) {
		info, err := ReadStream(bytes.NewReader(b), func(uint64, []byte) error { return nil })
		if info.Bytes > int64(len(b)) {
			t.Fatalf("consumed %d bytes of %d", info.Bytes, len(b))
		}
		if err != nil {
			return
		}
		again, err := ReadStream(bytes.NewReader(b[:info.Bytes]), nil)
		if err != nil || again.Bytes != info.Bytes || again.Pages != info.Pages {
			t.Fatalf("reparse of the consumed %d bytes: got %+v, %v", info.Bytes, again, err)
		}
	})
}
