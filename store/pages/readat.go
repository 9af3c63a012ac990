package pages

import (
	"errors"
	"fmt"
	"io"
	"math/bits"
	"os"
	"sync"
)

// ImageReader reads an image at guest-physical offsets, fetching and
// checking (as Restore does, o.SkipHash included) the blocks each read
// covers; zero pages read as zeros. It suits a few small reads, such as a
// file's headers before the image is written back; it is safe for
// concurrent use (reads take turns).
type ImageReader struct {
	x  *Index
	mu sync.Mutex
	br *blockReader
}

// NewImageReader returns a reader of x's image from sink.
func NewImageReader(x *Index, sink Sink, o RestoreOptions) *ImageReader {
	br := newBlockReader(x, sink)
	br.skipHash = o.SkipHash
	return &ImageReader{x: x, br: br}
}

// Size returns the image's length in bytes.
func (r *ImageReader) Size() int64 { return r.x.Length }

// ReadAt reads len(p) bytes at off (io.ReaderAt); damage is a
// *CorruptError naming the block.
func (r *ImageReader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("pages: image %q: read at %d: %w", r.x.Name, off, errors.ErrUnsupported)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	x := r.x
	n := 0
	for n < len(p) && off < x.Length {
		i := int(off / int64(x.BlockSize))
		ref := x.Blocks[i]
		var data []byte
		if ref.Mask != 0 {
			var ce *CorruptError
			if data, ce = r.br.load(i); ce != nil {
				return n, ce
			}
		}
		// Copy the pages of block i that [off, off+len(p)-n) covers.
		for n < len(p) && off < x.Length && int(off/int64(x.BlockSize)) == i {
			pg := int((off - x.Offset(i)) / PageSize)
			in := int(off % PageSize)
			k := min(len(p)-n, PageSize-in)
			if ref.Mask&(1<<pg) != 0 {
				packed := bits.OnesCount64(ref.Mask & (1<<pg - 1))
				copy(p[n:n+k], data[packed*PageSize+in:])
			} else {
				clear(p[n : n+k])
			}
			n += k
			off += int64(k)
		}
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// RestoreInto is RestoreFile into the open, empty file f, which it
// truncates to the image's length first (zero pages are holes, never
// written) and leaves open; it does not fsync. Another process may have f
// mapped meanwhile.
func RestoreInto(x *Index, sink Sink, f *os.File, o RestoreOptions) (RestoreStats, error) {
	if err := f.Truncate(x.Length); err != nil {
		return RestoreStats{}, fmt.Errorf("pages: restore %q: %w", x.Name, err)
	}
	return writeBack(x, sink, f, o)
}
