package simload

import "testing"

func TestParse(t *testing.T) {
	good := map[string]string{
		"npb-cg-A-16":          "npb-cg-A-16",
		"npb-LU-b-64-x3":       "npb-lu-B-64",
		"bittorrent-16-256MiB": "bittorrent-16-256MiB",
		"bittorrent-8-64MiB-2": "bittorrent-8-64MiB",
	}
	for spec, name := range good {
		w, err := Parse(spec)
		if err != nil {
			t.Errorf("Parse(%q): %v", spec, err)
			continue
		}
		if w.Name() != name {
			t.Errorf("Parse(%q).Name() = %q, want %q", spec, w.Name(), name)
		}
	}
	for _, spec := range []string{"", "npb", "npb-cg-A", "npb-cg-A-x", "npb-cg-A-12", "npb-zz-A-16", "npb-cg-A-16-3",
		"bittorrent-1-1MiB", "bittorrent-x-1MiB", "bittorrent-4-lots", "bittorrent-4-1MiB-4", "mpi-1"} {
		if _, err := Parse(spec); err == nil {
			t.Errorf("Parse(%q): got no error, want one", spec)
		}
	}
}
