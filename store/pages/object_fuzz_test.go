package pages

import (
	"bytes"
	"testing"
)

// FuzzDecodeObject feeds arbitrary objects to the decoder a restore uses:
// whatever a damaged or crafted sink holds, decodeObject returns an error or
// exactly the n bytes asked for, never panics, and never decodes more than
// the block it was asked for.
func FuzzDecodeObject(f *testing.F) {
	data := bytes.Repeat([]byte("vnsnap page "), 2*PageSize/12+1)[:2*PageSize]
	for _, c := range []Codec{CodecS2, CodecZstd, CodecRaw} {
		enc := newBlockEncoder(c, DefaultLevel)
		f.Add(encodeObject(enc, nil, data), uint8(2), false)
		enc.close()
	}
	f.Add([]byte{objS2, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f}, uint8(1), true)
	dec := newDecoder()
	f.Fuzz(func(t *testing.T, obj []byte, pages uint8, skipHash bool) {
		n := int(pages%(MaxBlockSize/PageSize)+1) * PageSize
		h := Hash(pages % 2) // both index versions' hashes
		addr := h.sum(data)
		got, err := decodeObject(dec, make([]byte, 0, MaxBlockSize), obj, n, h, addr, skipHash)
		if err != nil {
			return
		}
		if len(got) != n {
			t.Fatalf("decoded %d bytes, asked for %d", len(got), n)
		}
		if !skipHash && !bytes.Equal(got, data) {
			t.Fatalf("content that does not hash to the address accepted")
		}
	})
}
