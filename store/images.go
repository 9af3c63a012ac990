package store

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"

	"github.com/vnsnap/vnsnap/store/pages"
)

// Image is one page image of a VM in the manifest (schema 2): a VM's
// memory stored as fixed, page-aligned blocks by package pages rather than
// as a chunked stream. The index (one entry per block: page mask and block
// address) is a file of its own, named by the image checksum, which covers
// every block's address.
type Image struct {
	Name string `json:"name"`
	// Length is the image's size in bytes: what RestoreImage writes. The
	// index covers it rounded up to whole pages (the rest reads as zeros).
	Length int64 `json:"length"`
	// Index is the hex image checksum (pages.Index.Sum): the index file's
	// name and the image's ID.
	Index string `json:"index"`
	// IndexSize is the index file's size in bytes.
	IndexSize int64 `json:"index_size"`
	BlockSize int   `json:"block_size"`
	// Objects is the number of distinct block objects the image references
	// and Stored their total size plus the index's: the image on its own.
	Objects int   `json:"objects"`
	Stored  int64 `json:"stored"`
}

// BlockTotals counts the distinct block objects and index files all page
// images of a snapshot reference, and their size: the page images' share of
// the snapshot's stored size, deduplication between its VMs included.
type BlockTotals struct {
	Objects int   `json:"objects"`
	Stored  int64 `json:"stored"`
}

// maxIndex bounds an index file (and so the images a manifest may
// describe): 256 MiB holds 6.7 million entries, 400 GiB of memory in 64 KiB
// blocks.
const maxIndex = 256 << 20

// indexName is the name an image's index carries (and its errors show).
func indexName(vm, image string) string { return vm + "/" + image }

// pagedLength is an image's length rounded up to whole pages: the index's.
func pagedLength(n int64) int64 { return (n + pages.PageSize - 1) / pages.PageSize * pages.PageSize }

// checkImages validates a VM's image entries (field names field[i].x);
// names must be sorted, unique and distinct from the VM's stream names.
func checkImages(field, vm string, imgs []Image, streams []Stream) error {
	prev := ""
	for i, im := range imgs {
		f := fmt.Sprintf("%s[%d]", field, i)
		if err := ValidName(im.Name); err != nil {
			return fmt.Errorf("%s.name: %w", f, err)
		}
		if i > 0 && im.Name <= prev {
			return fmt.Errorf("%s.name: %q not sorted after %q, or duplicate", f, im.Name, prev)
		}
		prev = im.Name
		for _, s := range streams {
			if s.Name == im.Name {
				return fmt.Errorf("%s.name: %q is also a stream of the VM", f, im.Name)
			}
		}
		if im.Length <= 0 || im.Length > pages.MaxLength {
			return fmt.Errorf("%s.length: %d outside 1-%d", f, im.Length, int64(pages.MaxLength))
		}
		if bs := im.BlockSize; bs < pages.MinBlockSize || bs > pages.MaxBlockSize || bs&(bs-1) != 0 {
			return fmt.Errorf("%s.block_size: %d is not a power of two from %d to %d", f, bs, pages.MinBlockSize, pages.MaxBlockSize)
		}
		if !validAddr(im.Index) {
			return fmt.Errorf("%s.index: %q is not 64 lowercase hex digits", f, im.Index)
		}
		want := pages.EncodedSize(indexName(vm, im.Name), pagedLength(im.Length), im.BlockSize)
		if im.IndexSize != want || want > maxIndex {
			return fmt.Errorf("%s.index_size: %d, want %d for its length and block size (at most %d)", f, im.IndexSize, want, maxIndex)
		}
		blocks := pages.NumBlocks(pagedLength(im.Length), im.BlockSize)
		if im.Objects < 0 || im.Objects > blocks {
			return fmt.Errorf("%s.objects: %d outside 0-%d", f, im.Objects, blocks)
		}
		if im.Stored < im.IndexSize || im.Stored > im.IndexSize+int64(im.Objects)*pages.MaxObjectSize {
			return fmt.Errorf("%s.stored: %d out of range for %d objects and a %d-byte index", f, im.Stored, im.Objects, im.IndexSize)
		}
	}
	return nil
}

// checkBlockTotals bounds the snapshot-wide totals by its images.
func (m *Manifest) checkBlockTotals() error {
	var objects int
	var stored int64
	for _, vm := range m.VMs {
		for _, im := range vm.Images {
			objects += im.Objects + 1
			stored += im.Stored
		}
	}
	b := m.Blocks
	switch {
	case b == nil && objects > 0:
		return errors.New("blocks: missing, but the snapshot has page images")
	case b == nil:
		return nil
	case objects == 0:
		return errors.New("blocks: present, but the snapshot has no page image")
	case b.Objects <= 0 || b.Objects > objects || b.Stored <= 0 || b.Stored > stored:
		return fmt.Errorf("blocks: %d objects of %d bytes, out of range for images of %d objects and %d bytes", b.Objects, b.Stored, objects, stored)
	}
	return nil
}

// findImage returns the image called name of vm, or nil.
func (m *Manifest) findImage(vm, name string) *Image {
	for i := range m.VMs {
		if m.VMs[i].Name != vm {
			continue
		}
		for j := range m.VMs[i].Images {
			if m.VMs[i].Images[j].Name == name {
				return &m.VMs[i].Images[j]
			}
		}
	}
	return nil
}

// eachImage calls fn for every page image, in manifest order.
func (m *Manifest) eachImage(fn func(vm string, im *Image)) {
	for i := range m.VMs {
		for j := range m.VMs[i].Images {
			fn(m.VMs[i].Name, &m.VMs[i].Images[j])
		}
	}
}

func indexPath(root, sum string) string { return filepath.Join(root, imagesDir, sum[:2], sum) }

// loadIndex reads, bounds and verifies the index of image im of vm: a
// regular file of exactly the recorded size that decodes (pages.DecodeIndex
// checks every field and its own checksum), with the recorded checksum,
// name, length and block size. A failure is a *CorruptError.
func loadIndex(root, snapshot, vm string, im *Image) (*pages.Index, *CorruptError) {
	path := indexPath(root, im.Index)
	corrupt := func(reason string, err error) (*pages.Index, *CorruptError) {
		return nil, &CorruptError{Snapshot: snapshot, VM: vm, Image: im.Name, Chunk: -1, Addr: im.Index, Path: path, Reason: reason, Err: err}
	}
	f, size, why, err := openRegular(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return corrupt("missing index file", err)
	case err != nil:
		return corrupt("cannot open index file", err)
	case why != "":
		return corrupt("index file is "+why, nil)
	}
	defer f.Close()
	if size != im.IndexSize {
		return corrupt(fmt.Sprintf("index file is %d bytes, want %d", size, im.IndexSize), nil)
	}
	b := make([]byte, im.IndexSize+1) // bounded by the manifest's check
	n, err := io.ReadFull(f, b)
	if !errors.Is(err, io.ErrUnexpectedEOF) || int64(n) != im.IndexSize {
		return corrupt(fmt.Sprintf("index file changed size while read (%d bytes)", n), err)
	}
	x, err := pages.DecodeIndex(path, b[:n])
	if err != nil {
		return corrupt("index does not decode", err)
	}
	sum, _ := x.Sum() // decoded, so consistent
	switch {
	case sum.String() != im.Index:
		return corrupt(fmt.Sprintf("index checksum %s", sum), nil)
	case x.Name != indexName(vm, im.Name) || x.Length != pagedLength(im.Length) || x.BlockSize != im.BlockSize:
		return corrupt(fmt.Sprintf("index describes %q, %d bytes in %d-byte blocks; want %q, %d, %d",
			x.Name, x.Length, x.BlockSize, indexName(vm, im.Name), pagedLength(im.Length), im.BlockSize), nil)
	}
	return x, nil
}

// fromPages turns a damaged block reported by package pages into the
// store's error, naming the VM, the image, the block and its offset.
func fromPages(snapshot, vm, image, path string, pe *pages.CorruptError) *CorruptError {
	return &CorruptError{Snapshot: snapshot, VM: vm, Image: image, Chunk: pe.Block, Offset: pe.Offset, Len: pe.Len,
		Addr: pe.Addr.String(), Path: path, Reason: pe.Reason, Err: pe.Err}
}

// ImageAt stores the page image called name of VM vm, read from r at
// offsets 0 to length (length need not be a multiple of the page size; r
// must read as zeros up to the next page boundary, or end at length). The
// blocks are written by the writer's one pages.Ingester, shared by every
// image of the snapshot, on every core; images of different VMs may be
// written concurrently. It returns what writing the image cost. It fails
// with ErrInvalidName, ErrDuplicate (a stream or image of that name exists),
// ErrFinished after Commit or Abort; an image that failed is not recorded,
// and Commit still succeeds without it (the caller decides).
func (w *Writer) ImageAt(vm, name string, r io.ReaderAt, length int64) (pages.Stats, error) {
	if err := checkName("vm name", vm); err != nil {
		return pages.Stats{}, err
	}
	if err := checkName("image name", name); err != nil {
		return pages.Stats{}, err
	}
	k := streamKey{vm, name}
	if length <= 0 || length > pages.MaxLength {
		return pages.Stats{}, fmt.Errorf("store: snapshot %q: vm %q image %q: length %d outside 1-%d", w.name, vm, name, length, int64(pages.MaxLength))
	}
	g, err := w.beginImage(k)
	if err != nil {
		return pages.Stats{}, err
	}
	defer w.endImage()
	x, st, err := g.IngestAt(indexName(vm, name), padReaderAt{r, length}, pagedLength(length))
	if err != nil {
		w.dropImage(k)
		return st, fmt.Errorf("store: snapshot %q: vm %q image %q: %w", w.name, vm, name, err)
	}
	im, created, err := w.publishIndex(vm, name, x, length)
	if err != nil {
		w.dropImage(k)
		return st, fmt.Errorf("store: snapshot %q: vm %q image %q: %w", w.name, vm, name, err)
	}
	w.poolMu.Lock()
	w.images[k] = im
	for _, b := range x.Blocks {
		if b.Mask != 0 {
			w.blockSet[b.Addr] = true
		}
	}
	w.indexSet[im.Index] = im.IndexSize
	w.added.Objects += st.NewObjects
	w.added.ObjectBytes += st.NewBytes
	if created {
		w.added.Objects++
		w.added.ObjectBytes += im.IndexSize
	}
	w.poolMu.Unlock()
	return st, nil
}

// beginImage reserves the image's name and returns the writer's ingester,
// created on first use; endImage must follow.
func (w *Writer) beginImage(k streamKey) (*pages.Ingester, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.state != writerOpen {
		return nil, fmt.Errorf("store: snapshot %q: vm %q image %q: %w", w.name, k.vm, k.stream, ErrFinished)
	}
	if _, dup := w.streams[k]; dup {
		return nil, fmt.Errorf("store: snapshot %q: vm %q image %q: %w", w.name, k.vm, k.stream, ErrDuplicate)
	}
	if w.imageNames[k] {
		return nil, fmt.Errorf("store: snapshot %q: vm %q image %q: %w", w.name, k.vm, k.stream, ErrDuplicate)
	}
	for _, d := range []string{blocksDir, imagesDir} {
		p := filepath.Join(w.root, d)
		if err := os.MkdirAll(p, 0o755); err != nil {
			return nil, fmt.Errorf("store: %w", err)
		}
		if err := checkRealDir(p); err != nil {
			return nil, fmt.Errorf("store: %w", err)
		}
	}
	if w.ingester == nil {
		w.blocks = newBlockPool(w.root)
		g, err := pages.NewIngester(w.blocks, w.pageOptions)
		if err != nil {
			return nil, fmt.Errorf("store: %w", err)
		}
		w.ingester = g
	}
	w.imageNames[k] = true
	w.imagesActive++
	return w.ingester, nil
}

// endImage closes the ingester once the writer is finished and no image is
// being written any more.
func (w *Writer) endImage() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.imagesActive--
	w.closeIngesterLocked()
}

func (w *Writer) closeIngesterLocked() {
	if w.state != writerOpen && w.imagesActive == 0 && w.ingester != nil {
		w.ingester.Close()
		w.ingester = nil
	}
}

func (w *Writer) dropImage(k streamKey) {
	w.mu.Lock()
	delete(w.imageNames, k)
	w.mu.Unlock()
}

// publishIndex writes the index file (unless a sound copy is there) and
// returns the image's manifest entry, and whether it created the file.
func (w *Writer) publishIndex(vm, name string, x *pages.Index, length int64) (Image, bool, error) {
	b, err := x.MarshalBinary()
	if err != nil {
		return Image{}, false, err
	}
	sum := b[len(b)-32:]
	im := Image{Name: name, Length: length, Index: fmt.Sprintf("%x", sum), IndexSize: int64(len(b)), BlockSize: x.BlockSize}
	if im.IndexSize > maxIndex {
		return Image{}, false, fmt.Errorf("index is %d bytes, larger than the %d-byte limit readers accept", im.IndexSize, maxIndex)
	}
	seen := make(map[pages.Addr]bool)
	im.Stored = im.IndexSize
	for _, e := range x.Blocks {
		if e.Mask == 0 || seen[e.Addr] {
			continue
		}
		seen[e.Addr] = true
		n := w.blocks.size(e.Addr)
		if n < 0 {
			return Image{}, false, fmt.Errorf("block %s: not accounted for by the pool", e.Addr)
		}
		im.Objects++
		im.Stored += n
	}
	path := indexPath(w.root, im.Index)
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Image{}, false, err
	}
	if err := checkRealDir(dir); err != nil {
		return Image{}, false, err
	}
	w.poolMu.Lock()
	w.imageShards[dir] = true
	w.poolMu.Unlock()
	if old, _, why, err := openRegular(path); err == nil && why == "" {
		have := make([]byte, len(b)+1)
		n, _ := io.ReadFull(old, have)
		old.Close()
		if bytes.Equal(have[:n], b) {
			return im, false, nil
		}
	}
	// Absent or damaged: write it, replacing whatever is there.
	f, err := os.CreateTemp(dir, tmpPrefix+"*")
	if err != nil {
		return Image{}, false, err
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		return Image{}, false, fmt.Errorf("write index: %w", err)
	}
	return im, true, nil
}

// imageTotals returns the snapshot's images per VM, sorted, and its block
// totals (nil without images). Called by manifest with poolMu held.
func (w *Writer) imageTotals() (map[string][]Image, *BlockTotals) {
	if len(w.images) == 0 {
		return nil, nil
	}
	per := make(map[string][]Image)
	for _, k := range slices.SortedFunc(maps.Keys(w.images), func(a, b streamKey) int {
		return cmp.Or(cmp.Compare(a.vm, b.vm), cmp.Compare(a.stream, b.stream))
	}) {
		per[k.vm] = append(per[k.vm], w.images[k])
	}
	t := &BlockTotals{}
	for a := range w.blockSet {
		t.Objects++
		t.Stored += w.blocks.size(a)
	}
	for _, n := range w.indexSet {
		t.Objects++
		t.Stored += n
	}
	return per, t
}

// syncImages makes the index files' directory entries durable (the block
// objects were synced by the ingester, once per image).
func (w *Writer) syncImages() error {
	w.poolMu.Lock()
	dirs := slices.Sorted(maps.Keys(w.imageShards))
	w.poolMu.Unlock()
	for _, d := range dirs {
		if err := syncDir(d); err != nil {
			return err
		}
	}
	if len(dirs) > 0 {
		if err := syncDir(filepath.Join(w.root, imagesDir)); err != nil {
			return err
		}
		return syncDir(w.root)
	}
	return nil
}

// padReaderAt reads r up to n and zeros after it, so that an image whose
// length is not a multiple of the page size is ingested as whole pages.
type padReaderAt struct {
	r io.ReaderAt
	n int64
}

func (p padReaderAt) ReadAt(b []byte, off int64) (int, error) {
	if off >= p.n {
		clear(b)
		return len(b), nil
	}
	want := min(int64(len(b)), p.n-off)
	k, err := p.r.ReadAt(b[:want], off)
	if int64(k) < want {
		if err == nil || errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return k, err
	}
	clear(b[want:])
	return len(b), nil
}

// Image returns the manifest entry of VM vm's page image name. It fails
// with ErrNoStream if the snapshot has no such image.
func (s *Snapshot) Image(vm, name string) (*Image, error) {
	im := s.m.findImage(vm, name)
	if im == nil {
		return nil, fmt.Errorf("store: snapshot %q vm %q image %q: %w", s.name, vm, name, ErrNoStream)
	}
	return im, nil
}

// RestoreImage writes VM vm's page image name into a new file at path (any
// file there is replaced), in parallel on every core; zero pages are holes.
// Every block is checked before it is placed (o.SkipHash leaves out the
// SHA-256, not the CRC), and the index against the manifest. Damage is a
// *CorruptError naming the VM, image, block and its offset in the image.
func (s *Snapshot) RestoreImage(vm, name, path string, o pages.RestoreOptions) (pages.RestoreStats, error) {
	return s.restoreImage(vm, name, func(x *pages.Index, bp *blockPool) (pages.RestoreStats, error) {
		return pages.RestoreFile(x, bp, path, o)
	}, func(length int64) error { return os.Truncate(path, length) })
}

// restoreImage is RestoreImage and RestoreImageInto: it checks VM vm's
// image name and its index against the manifest, has restore write the
// index's blocks out (wrapping its errors, a damaged block's as a
// *CorruptError), then has truncate cut the file to the image's length
// where the index rounds it up to whole pages. Nothing is written before
// the image and its index are found good.
func (s *Snapshot) restoreImage(vm, name string, restore func(*pages.Index, *blockPool) (pages.RestoreStats, error), truncate func(length int64) error) (pages.RestoreStats, error) {
	im, err := s.Image(vm, name)
	if err != nil {
		return pages.RestoreStats{}, err
	}
	x, ce := loadIndex(s.root, s.name, vm, im)
	if ce != nil {
		return pages.RestoreStats{}, ce
	}
	bp := newBlockPool(s.root)
	st, err := restore(x, bp)
	if err != nil {
		if pe := (*pages.CorruptError)(nil); errors.As(err, &pe) {
			return st, fromPages(s.name, vm, name, bp.path(pe.Addr), pe)
		}
		return st, fmt.Errorf("store: snapshot %q vm %q image %q: %w", s.name, vm, name, err)
	}
	if im.Length != x.Length {
		if err := truncate(im.Length); err != nil {
			return st, fmt.Errorf("store: snapshot %q vm %q image %q: %w", s.name, vm, name, err)
		}
	}
	return st, nil
}

// verifyImages checks every page image: its index, then every block on
// every core (pages.Verify); each damaged block is reported once per image
// that references it.
func (s *Snapshot) verifyImages() []*CorruptError {
	var problems []*CorruptError
	bp := newBlockPool(s.root)
	s.m.eachImage(func(vm string, im *Image) {
		x, ce := loadIndex(s.root, s.name, vm, im)
		if ce != nil {
			problems = append(problems, ce)
			return
		}
		for _, pe := range pages.Verify(x, bp, 0) {
			problems = append(problems, fromPages(s.name, vm, im.Name, bp.path(pe.Addr), pe))
		}
	})
	return problems
}

// imageRefs adds to live the block addresses and index files the
// manifest's images reference; an index that cannot be read is an error
// (its blocks cannot be known).
func imageRefs(root string, m *Manifest, liveBlocks, liveIndexes map[string]bool) error {
	var err error
	m.eachImage(func(vm string, im *Image) {
		if err != nil {
			return
		}
		x, ce := loadIndex(root, m.Name, vm, im)
		if ce != nil {
			err = ce
			return
		}
		liveIndexes[im.Index] = true
		for _, b := range x.Blocks {
			if b.Mask != 0 {
				liveBlocks[b.Addr.String()] = true
			}
		}
	})
	return err
}

// ImageReader returns a reader of VM vm's page image name at its offsets,
// fetching and checking the blocks each read covers (o.SkipHash as in
// RestoreImage); for a few small reads, such as the headers of a file
// before RestoreImageInto writes it. Damage is a *CorruptError as in
// RestoreImage.
func (s *Snapshot) ImageReader(vm, name string, o pages.RestoreOptions) (io.ReaderAt, int64, error) {
	im, err := s.Image(vm, name)
	if err != nil {
		return nil, 0, err
	}
	x, ce := loadIndex(s.root, s.name, vm, im)
	if ce != nil {
		return nil, 0, ce
	}
	bp := newBlockPool(s.root)
	return imageReaderAt{s: s, vm: vm, name: name, bp: bp, r: pages.NewImageReader(x, bp, o), length: im.Length}, im.Length, nil
}

// imageReaderAt names the snapshot, VM and image in a damaged block's
// error.
type imageReaderAt struct {
	s        *Snapshot
	vm, name string
	bp       *blockPool
	r        *pages.ImageReader
	length   int64 // the image's, which the index rounds up to whole pages
}

func (r imageReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if off >= r.length {
		return 0, io.EOF
	}
	short := int64(len(p)) > r.length-off
	if short {
		p = p[:r.length-off]
	}
	n, err := r.r.ReadAt(p, off)
	if err == nil && short {
		err = io.EOF
	}
	if pe := (*pages.CorruptError)(nil); errors.As(err, &pe) {
		return n, fromPages(r.s.name, r.vm, r.name, r.bp.path(pe.Addr), pe)
	}
	return n, err
}

// RestoreImageInto is RestoreImage into the open, empty file f (which
// another process may have mapped meanwhile): f ends at the image's
// length and stays open; it is not fsynced.
func (s *Snapshot) RestoreImageInto(vm, name string, f *os.File, o pages.RestoreOptions) (pages.RestoreStats, error) {
	return s.restoreImage(vm, name, func(x *pages.Index, bp *blockPool) (pages.RestoreStats, error) {
		return pages.RestoreInto(x, bp, f, o)
	}, f.Truncate)
}
