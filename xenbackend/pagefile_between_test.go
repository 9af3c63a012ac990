package xenbackend

import (
	"bytes"
	"testing"
)

// TestPageFileRecordBetweenPasses: a live stream of three passes over 3000
// pfns, with a non-page record between passes 1 and 2, rebuilds byte for
// byte into the stream written independently here: the other records in
// order, the one between passes after the pages, every pfn once with its
// last type and page, in PAGE_DATA records of 1024: first those sent with
// data in the order first sent so (pass 1's, here pfn order), then those
// never sent with data. XTAB and BROKEN entries in pass 1 carry no page;
// XTAB pfn 7 gets one in pass 2 (and its slot after pass 1's), BROKEN pfn 9
// never does, and XALLOC replaces pfn 5's page: it keeps its slot, rebuilt
// without one.
func TestPageFileRecordBetweenPasses(t *testing.T) {
	const n = 3000
	var pass1 []testPage
	for pfn := uint64(0); pfn < n; pfn++ {
		p := testPage{pfn: pfn, fill: byte(pfn) | 1}
		switch pfn {
		case 7:
			p.typ = 0xf // XTAB
		case 9:
			p.typ = 0xd // BROKEN
		}
		pass1 = append(pass1, p)
	}
	pass2 := []testPage{{pfn: 1, typ: 1, fill: 0xb1}, {pfn: 5, typ: 0xe}, {pfn: 7, fill: 0xb7}, {pfn: n - 1, typ: 0xc, fill: 0xb2}}
	pass3 := []testPage{{pfn: 1, fill: 0xc1}}
	last := append([]testPage(nil), pass1...)
	for _, p := range append(pass2, pass3...) {
		last[p.pfn] = p
	}
	head := func(e *enc) {
		e.xl(`{"c_info":{"type":"pvh","name":"domu1"}}` + "\x00")
		e.libxl()
		e.libxcHeaders()
		e.record(0x11, bytes.Repeat([]byte{1}, 21)) // X86_CPUID_POLICY
		e.record(0x10, nil)                         // STATIC_DATA_END
	}
	tail := func(e *enc) {
		e.record(0x08, make([]byte, 24))              // X86_TSC_INFO
		e.record(0x09, bytes.Repeat([]byte{9}, 1000)) // HVM_CONTEXT
		e.record(libxcEnd, nil)
		e.record(libxlEnd, nil)
	}
	var s enc
	head(&s)
	for i := 0; i < n; i += 1024 {
		s.record(libxcPageData, pageBody(pass1[i:min(i+1024, n)]))
	}
	s.record(0x80000123, []byte("between passes"))
	s.record(libxcPageData, pageBody(pass2))
	s.record(libxcPageData, pageBody(pass3))
	tail(&s)
	var want enc
	head(&want)
	var table []testPage
	for _, p := range last {
		if p.pfn != 7 && p.pfn != 9 {
			table = append(table, p)
		}
	}
	table = append(table, last[7], last[9])
	for i := 0; i < n; i += rebuildBatch {
		want.record(libxcPageData, pageBody(table[i:min(i+rebuildBatch, n)]))
	}
	want.record(0x80000123, []byte("between passes"))
	tail(&want)

	file, st := pageFileOf(t, s.Bytes())
	if st.Slots != n-1 || st.Bare != 1 {
		t.Errorf("slots: got %d and %d bare, want %d and 1", st.Slots, st.Bare, n-1)
	}
	got := rebuild(t, file)
	if !bytes.Equal(got, want.Bytes()) {
		at := 0
		for at < min(len(got), want.Len()) && got[at] == want.Bytes()[at] {
			at++
		}
		t.Errorf("rebuilt stream: %d bytes, want the %d expected; first difference at byte %d", len(got), want.Len(), at)
	}
	// The rebuilt stream's page file holds the same entries and pages
	// (pfn 5, sent once without data now, is bare there).
	again, _ := pageFileOf(t, got)
	m1, _, _ := lastCopies(t, got)
	m2, _, _ := lastCopies(t, rebuild(t, again))
	if len(m1) != n || len(m2) != n {
		t.Fatalf("rebuilt streams: %d and %d pfns, want %d", len(m1), len(m2), n)
	}
	for pfn, c := range m1 {
		if m2[pfn] != c {
			t.Errorf("pfn %d: the page file of the rebuilt stream gives type %#x with %d bytes, want type %#x with %d", pfn, m2[pfn].typ, len(m2[pfn].data), c.typ, len(c.data))
		}
	}
}
