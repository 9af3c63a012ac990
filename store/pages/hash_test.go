package pages

import "testing"

// TestHashVectors: the block hashes are the standard ones (the published
// digests of the empty input), and each index version names its hash.
func TestHashVectors(t *testing.T) {
	for _, c := range []struct {
		h       Hash
		want    string
		version uint16
	}{
		{HashBLAKE3, "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262", 2},
		{HashSHA256, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", 1},
	} {
		if got := c.h.sum(nil).String(); got != c.want {
			t.Errorf("%v of nothing = %s, want %s", c.h, got, c.want)
		}
		if v := c.h.version(); v != c.version {
			t.Errorf("%v: index version %d, want %d", c.h, v, c.version)
		}
	}
}
