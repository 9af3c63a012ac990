package xenbackend

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// pageFileOf writes stream into a page file in a temporary directory and
// returns its bytes.
func pageFileOf(t testing.TB, stream []byte) ([]byte, PageFileStats) {
	return pageFileAt(t, stream, pageFileDataOffset)
}

// pageFileAt is pageFileOf with the data at offset data. The file is
// also written holding one and two pages sent again at a time (the writer
// then writes its staged pages mid-stream): the files must be the same.
func pageFileAt(t testing.TB, stream []byte, data int64) ([]byte, PageFileStats) {
	t.Helper()
	var first []byte
	var firstSt PageFileStats
	for _, stageCap := range []int{defaultStageCap, pageSize, 2 * pageSize} {
		f, err := os.Create(filepath.Join(t.TempDir(), "pf"))
		if err != nil {
			t.Fatal(err)
		}
		st, err := writePageFileStaged(bytes.NewReader(stream), f, nil, data, stageCap)
		f.Close()
		if err != nil {
			t.Fatalf("WritePageFile (staging %d bytes): %v", stageCap, err)
		}
		b, err := os.ReadFile(f.Name())
		if err != nil {
			t.Fatal(err)
		}
		if int64(len(b)) != st.Size {
			t.Fatalf("page file: %d bytes, stats say %d", len(b), st.Size)
		}
		if first == nil {
			first, firstSt = b, st
		} else if !bytes.Equal(b, first) || st.Size != firstSt.Size || st.Slots != firstSt.Slots || st.Bare != firstSt.Bare {
			t.Fatalf("page file staging %d bytes differs from the one staging %d", stageCap, defaultStageCap)
		}
	}
	return first, firstSt
}

// rebuild opens a page file's bytes and returns the stream it holds.
func rebuild(t testing.TB, file []byte) []byte {
	t.Helper()
	p, err := OpenPageFile(bytes.NewReader(file), int64(len(file)))
	if err != nil {
		t.Fatalf("OpenPageFile: %v", err)
	}
	var out bytes.Buffer
	n, err := p.WriteStream(&out)
	if err != nil || n != int64(out.Len()) {
		t.Fatalf("WriteStream: %d bytes, %v (wrote %d)", n, err, out.Len())
	}
	return out.Bytes()
}

// sentOrder returns the pfns of stream in the order each was first sent.
func sentOrder(t testing.TB, stream []byte) []uint64 {
	t.Helper()
	var order []uint64
	seen := map[uint64]bool{}
	if _, err := readStream(bytes.NewReader(stream), nil, streamHooks{entry: func(pfn uint64, _ uint8, _ []byte) error {
		if !seen[pfn] {
			seen[pfn] = true
			order = append(order, pfn)
		}
		return nil
	}}); err != nil {
		t.Fatalf("ReadStream: %v", err)
	}
	return order
}

type entryCopy struct {
	typ  uint8
	data string // "" for no data
}

// lastCopies is the naive model: every pfn's last type and page, read from
// a stream by the parser, with the order of a page file's table: the pfns
// in the order each was first sent with data, then those never sent with
// data in the order first sent.
func lastCopies(t testing.TB, stream []byte) (map[uint64]entryCopy, []uint64, StreamInfo) {
	t.Helper()
	m := map[uint64]entryCopy{}
	var order, bare []uint64
	withData := map[uint64]bool{}
	info, err := readStream(bytes.NewReader(stream), nil, streamHooks{entry: func(pfn uint64, typ uint8, data []byte) error {
		if _, ok := m[pfn]; !ok {
			bare = append(bare, pfn)
		}
		if data != nil && !withData[pfn] {
			withData[pfn] = true
			order = append(order, pfn)
		}
		m[pfn] = entryCopy{typ, string(data)}
		return nil
	}})
	if err != nil {
		t.Fatalf("ReadStream: %v", err)
	}
	for _, pfn := range bare {
		if !withData[pfn] {
			order = append(order, pfn)
		}
	}
	return m, order, info
}

func TestPageFileRealCapture(t *testing.T) {
	b, err := os.ReadFile(realCapture)
	if err != nil {
		t.Fatal(err)
	}
	file, st := pageFileOf(t, b)
	if st.Slots != 1 || st.Stream.Bytes != int64(len(b)) {
		t.Errorf("page file of %s: %d slots, %d bytes read; want 1, %d", realCapture, st.Slots, st.Stream.Bytes, len(b))
	}
	// One PAGE_DATA record of one page: the rebuilt stream is the capture.
	if got := rebuild(t, file); !bytes.Equal(got, b) {
		t.Errorf("rebuilt stream of %s: %d bytes differing from the capture's %d", realCapture, len(got), len(b))
	}
}

func TestPageFileTestStream(t *testing.T) {
	stream, _ := testStream()
	file, st := pageFileOf(t, stream)
	if st.Slots != 3 || st.Bare != 2 {
		t.Errorf("slots: got %d and %d bare, want 3 and 2", st.Slots, st.Bare)
	}
	// The expected stream, written independently: the pages in the first
	// PAGE_DATA record's place, those sent with data in the order first
	// sent, then those without, last copies.
	var e enc
	e.xl(`{"c_info":{"type":"pvh","name":"domu1"}}` + "\x00")
	e.libxl()
	e.libxcHeaders()
	e.record(0x11, bytes.Repeat([]byte{1}, 21))
	e.record(0x10, nil)
	e.record(libxcPageData, pageBody([]testPage{{pfn: 0, fill: 0xa0}, {pfn: 1, fill: 0xb1}, {pfn: 0x12345, fill: 0xa2}, {pfn: 7, typ: 0xf}, {pfn: 9, typ: 0xe}}))
	e.record(0x80000123, []byte("optional"))
	e.record(0x08, make([]byte, 24))
	e.record(0x0a, make([]byte, 8+16))
	e.record(0x09, make([]byte, 1000))
	e.record(libxcEnd, nil)
	e.record(libxlEnd, nil)
	if got := rebuild(t, file); !bytes.Equal(got, e.Bytes()) {
		t.Errorf("rebuilt stream: %d bytes, want the %d expected (differs)", len(got), e.Len())
	}
}

// multiPass is a live stream over n pfns: pass 1 sends all in batches of
// 1024, pass 2 and 3 resend some, change types, and send zero pages.
func multiPass(n int) []byte {
	var e enc
	e.xl(`{"c_info":{"type":"pvh","name":"domu1"}}` + "\x00")
	e.libxl()
	e.libxcHeaders()
	e.record(0x10, nil)
	var pass1 []testPage
	for i := range n {
		p := testPage{pfn: uint64(i), fill: byte(i)}
		switch {
		case i%97 == 5:
			p.fill = 0 // a zero page
		case i == 13:
			p.typ = 0xd // BROKEN
		case i%11 == 0:
			p.typ = 1 << 0 // L1TAB-like typed page with data
		}
		pass1 = append(pass1, p)
	}
	for i := 0; i < len(pass1); i += 1024 {
		e.record(libxcPageData, pageBody(pass1[i:min(i+1024, len(pass1))]))
	}
	e.record(libxcPageData, pageBody([]testPage{{pfn: 3, fill: 0xc3}, {pfn: 5, fill: 0x55}, {pfn: 6, typ: 0xf}, {pfn: 9, fill: 0}}))
	e.record(libxcPageData, pageBody([]testPage{{pfn: 3, fill: 0xd3}, {pfn: uint64(n) + 100, fill: 0xee}, {pfn: 13, fill: 0x13}}))
	e.record(0x09, make([]byte, 100))
	e.record(libxcEnd, nil)
	e.record(libxlEnd, nil)
	return e.Bytes()
}

func TestPageFileMultiPass(t *testing.T) {
	stream := multiPass(2500)
	want, order, _ := lastCopies(t, stream)
	file, st := pageFileOf(t, stream)
	if st.Slots+st.Bare != int64(len(want)) || st.Bare != 0 {
		t.Errorf("slots: got %d and %d bare, want %d and none (BROKEN pfn 13 got data later)", st.Slots, st.Bare, len(want))
	}
	out := rebuild(t, file)
	got, _, info := lastCopies(t, out)
	gotOrder := sentOrder(t, out)
	if len(got) != len(want) {
		t.Fatalf("rebuilt stream: %d pfns, want %d", len(got), len(want))
	}
	for pfn, w := range want {
		if g := got[pfn]; g != w {
			t.Errorf("pfn %d: got type %#x, %d bytes of data (first %x), want type %#x, %d bytes", pfn, g.typ, len(g.data), g.data[:min(1, len(g.data))], w.typ, len(w.data))
		}
	}
	for i := range order {
		if order[i] != gotOrder[i] {
			t.Fatalf("rebuilt stream: pfn %d at %d, want %d (the order first sent with data)", gotOrder[i], i, order[i])
		}
	}
	if wantRecs := int64((len(want) + 1023) / 1024); info.PageRecords != wantRecs {
		t.Errorf("rebuilt stream: %d PAGE_DATA records, want %d (batches of 1024)", info.PageRecords, wantRecs)
	}
	// Checked by hand: 3 ends with its third copy, 6 became XTAB, 13 got
	// data after BROKEN, 9 was overwritten with zeros.
	for pfn, w := range map[uint64]entryCopy{3: {0, string(bytes.Repeat([]byte{0xd3}, pageSize))}, 6: {0xf, ""}, 13: {0, string(bytes.Repeat([]byte{0x13}, pageSize))}, 9: {0, string(make([]byte, pageSize))}} {
		if got[pfn] != w {
			t.Errorf("pfn %d: got type %#x with %d bytes, want type %#x with %d", pfn, got[pfn].typ, len(got[pfn].data), w.typ, len(w.data))
		}
	}
	// Every non-page byte is the stream's: the two parse the same way.
	_, _, oi := lastCopies(t, stream)
	withData := 0
	for _, w := range want {
		if w.data != "" {
			withData++
		}
	}
	if info.Config == nil || string(info.Config) != string(oi.Config) || info.Pages != int64(withData) || withData != len(want)-1 {
		t.Errorf("rebuilt stream: %+v, want config %q and %d pages with data, all pfns but the XTAB one", info, oi.Config, withData)
	}
}

// mutate returns a copy of file with f applied to it.
func mutate(file []byte, f func(b []byte) []byte) []byte {
	return f(append([]byte(nil), file...))
}

func TestOpenPageFileRejects(t *testing.T) {
	stream, _ := testStream()
	file, _ := pageFileOf(t, stream)
	le := binary.LittleEndian
	h := func(i int) int { return 24 + 8*i } // header field offsets
	table := le.Uint64(file[h(3):])
	meta := le.Uint64(file[h(4):])
	set := func(off int, v uint64) func([]byte) []byte {
		return func(b []byte) []byte { le.PutUint64(b[off:], v); return b }
	}
	for _, tc := range []struct {
		name, field string
		f           func([]byte) []byte
	}{
		{"magic", "magic", func(b []byte) []byte { b[0] = 'X'; return b }},
		{"version", "version", func(b []byte) []byte { le.PutUint32(b[16:], 1); return b }},
		{"flags", "flags", func(b []byte) []byte { le.PutUint32(b[20:], 1); return b }},
		{"reserved", "header", func(b []byte) []byte { b[200] = 1; return b }},
		{"truncated", "file length", func(b []byte) []byte { return b[:len(b)-1] }},
		{"short", "length", func(b []byte) []byte { return b[:100] }},
		{"data offset", "data offset", set(h(1), 100)},
		{"no entries", "bare entries", func(b []byte) []byte { le.PutUint64(b[h(2):], 0); le.PutUint64(b[h(7):], 0); return b }},
		{"huge bare", "bare entries", set(h(7), 1<<40)},
		{"bare past the file", "meta offset", set(h(7), 1<<20)},
		{"bare entry with data", "table", func(b []byte) []byte { le.PutUint64(b[meta-8:], 0x777); return b }},
		{"huge slots", "slots", set(h(2), 1<<40)},
		{"table offset", "table offset", set(h(3), table+8)},
		{"meta offset", "meta offset", set(h(4), meta+8)},
		{"meta length", "meta length", set(h(5), 7)},
		{"page offset past", "page offset", set(h(6), 1<<30)},
		{"page offset inside a record", "page offset", func(b []byte) []byte { le.PutUint64(b[h(6):], le.Uint64(b[h(6):])+4); return b }},
		{"reserved type", "table", func(b []byte) []byte { le.PutUint64(b[table:], 6<<pfnTypeShift); return b }},
		{"middle bits", "table", func(b []byte) []byte { le.PutUint64(b[table:], 1<<55); return b }},
		{"duplicate pfn", "table", func(b []byte) []byte { copy(b[table+8:], b[table:table+8]); return b }},
		{"meta damaged", "meta", func(b []byte) []byte { b[meta] ^= 1; return b }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := mutate(file, tc.f)
			_, err := OpenPageFile(bytes.NewReader(b), int64(len(b)))
			var pe *PageFileError
			if !errors.As(err, &pe) || pe.Field != tc.field {
				t.Errorf("got %v, want a PageFileError on field %q", err, tc.field)
			}
		})
	}
	if _, err := OpenPageFile(bytes.NewReader(file), int64(len(file))); err != nil {
		t.Errorf("the unmutated file: %v", err)
	}
}

func TestWritePageFileRejectsStreamWithoutPages(t *testing.T) {
	var e enc
	e.xl("")
	e.libxl()
	e.libxcHeaders()
	e.record(libxcEnd, nil)
	e.record(libxlEnd, nil)
	f, err := os.Create(filepath.Join(t.TempDir(), "pf"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := WritePageFile(bytes.NewReader(e.Bytes()), f, nil); err == nil {
		t.Error("a stream without PAGE_DATA: got no error")
	}
}

func FuzzOpenPageFile(f *testing.F) {
	stream, _ := testStream()
	file, _ := pageFileAt(f, stream, pageSize)
	f.Add(file)
	real, err := os.ReadFile(realCapture)
	if err != nil {
		f.Fatal(err)
	}
	rf, _ := pageFileAt(f, real, pageSize)
	f.Add(rf)
	f.Add(file[:len(file)-3])
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := OpenPageFile(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			return
		}
		var out bytes.Buffer
		if _, err := p.WriteStream(&out); err != nil {
			t.Fatalf("WriteStream of an accepted file: %v", err)
		}
		info, err := ReadStream(bytes.NewReader(out.Bytes()), nil)
		if err != nil || info.Bytes != int64(out.Len()) {
			t.Fatalf("rebuilt stream of an accepted file: %v (%d of %d bytes)", err, info.Bytes, out.Len())
		}
	})
}

// TestPageFileSparseDomain: a PVH domain's first pass sends its few
// populated pages and, up to Xen's special pages, a great many XTAB pfns;
// only the pages get slots, so the file is the size of the pages and the
// table, not of the guest-physical space (version 1's 4 GiB for a 128 MiB
// domain), and it rebuilds to every pfn's last type and page.
func TestPageFileSparseDomain(t *testing.T) {
	const pages, holes = 300, 60000
	var e enc
	e.xl(`{"c_info":{"type":"pvh","name":"domu1"}}` + "\x00")
	e.libxl()
	e.libxcHeaders()
	e.record(0x10, nil)
	var pass []testPage
	for pfn := uint64(0); pfn < pages+holes; pfn++ {
		p := testPage{pfn: pfn, typ: 0xf} // XTAB
		if pfn < pages/2 || pfn >= pages/2+holes {
			p = testPage{pfn: pfn, fill: byte(pfn) | 1}
		}
		pass = append(pass, p)
	}
	for i := 0; i < len(pass); i += 1024 {
		e.record(libxcPageData, pageBody(pass[i:min(i+1024, len(pass))]))
	}
	e.record(0x09, make([]byte, 100))
	e.record(libxcEnd, nil)
	e.record(libxlEnd, nil)
	stream := e.Bytes()
	file, st := pageFileOf(t, stream)
	if st.Slots != pages || st.Bare != holes {
		t.Errorf("got %d slots and %d bare entries, want %d and %d", st.Slots, st.Bare, pages, holes)
	}
	if max := int64(pageFileDataOffset + pages*pageSize + 8*(pages+holes) + 64<<10); st.Size > max {
		t.Errorf("page file of %d pages: %d bytes, want at most %d (the pages, the table and the meta)", pages, st.Size, max)
	}
	want, _, _ := lastCopies(t, stream)
	got, _, _ := lastCopies(t, rebuild(t, file))
	if len(got) != len(want) {
		t.Fatalf("rebuilt stream: %d pfns, want %d", len(got), len(want))
	}
	for pfn, w := range want {
		if got[pfn] != w {
			t.Fatalf("pfn %d: got type %#x with %d bytes, want type %#x with %d", pfn, got[pfn].typ, len(got[pfn].data), w.typ, len(w.data))
		}
	}
}
