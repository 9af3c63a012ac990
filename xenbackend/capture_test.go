package xenbackend

import (
	"bytes"
	"os"
	"strings"
	"testing"
)

// realCapture is a real live stream from Xen 4.17 ("xl migrate" of a
// 128 MiB PVH domU to our receiver, in TestXenLiveSnapshotReceiver), with
// every PAGE_DATA record dropped but the first, cut to one page: xl's
// header and config, the libxl and libxc headers and every non-page record
// are Xen's own bytes.
const realCapture = "testdata/xen417-pvh-live-onepage.xlstream"

func TestReadStreamRealCapture(t *testing.T) {
	b, err := os.ReadFile(realCapture)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	info, err := ReadStream(bytes.NewReader(b), func(pfn uint64, data []byte) error { n++; return nil })
	if err != nil {
		t.Fatalf("%s: %v", realCapture, err)
	}
	if info.Bytes != int64(len(b)) || n != 1 || info.Pages != 1 {
		t.Errorf("%s: read %d of %d bytes, %d pages; want all, 1 page", realCapture, info.Bytes, len(b), n)
	}
	if info.DomainType != DomainX86HVM || info.LibxcVersion != 3 || info.XenMajor != 4 || info.XenMinor != 17 {
		t.Errorf("%s: got type %d, libxc v%d, Xen %d.%d, want 2, v3, 4.17", realCapture, info.DomainType, info.LibxcVersion, info.XenMajor, info.XenMinor)
	}
	if !strings.Contains(string(info.Config), `"domu1"`) {
		t.Errorf("%s: config %q does not name domu1", realCapture, info.Config)
	}
	// Every proper prefix of the real capture is refused.
	for k := 0; k < len(b); k += 1 + k/32 {
		if _, err := ReadStream(bytes.NewReader(b[:k]), nil); err == nil {
			t.Fatalf("%s: prefix of %d bytes parsed, want an error", realCapture, k)
		}
	}
}
