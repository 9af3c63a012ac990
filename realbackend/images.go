package realbackend

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/vnsnap/vnsnap/core"
	"github.com/vnsnap/vnsnap/realbackend/hv"
	"github.com/vnsnap/vnsnap/store"
	"github.com/vnsnap/vnsnap/store/pages"
)

// Page images. A machine that can save into a file with its memory at fixed
// offsets (hv.FileSaver: QEMU's mapped-ram, xenbackend's xen-pfn-file-v2) is saved into one, and the
// file is stored as the VM's page image "memory" (store.Writer.ImageAt:
// fixed blocks, deduplicated across VMs and snapshots, zero pages free)
// rather than as a stream. The memory sink's file lives in tmpfs (memShm)
// and takes the RAM the host's budget counts for the VM; the disk sink's in
// Options.Dir, stored in the background once the save is complete (the VM
// does not wait for it) and before the commit. The copy-on-write save (hv.BackgroundSaver) keeps the
// stream "memory": qemubackend offers mapped-ram for pre-copy and
// stop-and-copy only.

// imageName is the name of a VM's memory in the store, as a page image or
// as a stream.
const imageName = "memory"

// LabelImageFileFormat is the manifest label naming the format of the
// snapshot's page-image files (hv.FileRestorer.FileFormat); absent when no
// VM's memory is a page image.
const LabelImageFileFormat = "image-file-format"

// memShm is where a memory-sink image file is written: tmpfs, so the
// file is memory, as the RAM buffer of a stream save is. Without it the
// state directory is used.
const memShm = "/dev/shm"

// imageDir returns the directory of a VM's image file for sink s.
func (e *Env) imageDir(s core.Sink) string {
	if s == core.MemorySink {
		if fi, err := os.Stat(memShm); err == nil && fi.IsDir() {
			return memShm
		}
	}
	return e.opts.Dir
}

// newImageFile creates an empty image file for VM name (a checked name) in
// dir, readable by this user only.
func newImageFile(dir, name string) (*os.File, error) {
	f, err := os.CreateTemp(dir, "vnsnap-"+name+"-*.img")
	if err != nil {
		return nil, fmt.Errorf("image file of %s: %w", name, err)
	}
	return f, nil
}

// dropImageFile closes and removes v's image file, if any.
func (v *vmRun) dropImageFile() {
	if v.file != nil {
		v.file.Close()
		os.Remove(v.file.Name())
		v.file = nil
	}
}

// fileSaver returns v's machine as an hv.FileSaver if the snapshot should
// use page images: the hypervisor restores such files, and the snapshot
// records their format.
func (d *driver) fileSaver(v *vmRun) (hv.FileSaver, bool) {
	if d.fileFormat == "" {
		return nil, false
	}
	fs, ok := v.vm.(hv.FileSaver)
	return fs, ok
}

// saveFile runs fs.SaveFile into a new image file for v, counting as
// progress the bytes the save reports (hv.SaveOptions.Progress) or, while
// it reports none, the file's growth.
func (d *driver) saveFile(v *vmRun, fs hv.FileSaver, s core.Sink, opts hv.SaveOptions) (hv.SaveStats, error) {
	f, err := newImageFile(d.env.imageDir(s), v.name)
	if err != nil {
		return hv.SaveStats{}, err
	}
	v.file, v.fileSink = f, s
	// A page sent again in a later pass overwrites its place in the file
	// and does not grow it: a long pass over pages already there would
	// look like a stall. A save that counts its bytes says so.
	var reported atomic.Bool
	opts.Progress = func(n int64) {
		reported.Store(true)
		d.moved.Add(n)
		if v.copied != nil {
			v.copied.Add(n)
		}
	}
	stop := watchGrowth(f, &d.moved, v.copied, &reported)
	st, err := fs.SaveFile(v.ctx, f, opts)
	counted := stop()
	// The file is sparse: zero pages are holes, never allocated. Once the
	// image is complete they count as copied too, so that the bytes copied
	// end at the image's length, as they do when the save streams.
	if fi, serr := f.Stat(); err == nil && serr == nil && !reported.Load() && fi.Size() > counted {
		d.moved.Add(fi.Size() - counted)
		if v.copied != nil {
			v.copied.Add(fi.Size() - counted)
		}
	}
	return st, err
}

// watchGrowth adds the growth of f's allocated size to n, and to vm if set
// (the VM's progress counter) while reported is false, every 100 ms until
// stop is called: the hypervisor writes the file itself, so no byte passes
// through a countingWriter, and a snapshot's stall check needs progress.
// Once the save reports its own bytes (reported), vm counts only those.
// stop returns the growth seen.
func watchGrowth(f *os.File, n, vm *atomic.Int64, reported *atomic.Bool) (stop func() int64) {
	done := make(chan struct{})
	finished := make(chan struct{})
	var last int64
	go func() {
		defer close(finished)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			fi, err := f.Stat()
			if err != nil {
				continue
			}
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				if a := st.Blocks * 512; a > last {
					n.Add(a - last)
					if vm != nil && !reported.Load() {
						vm.Add(a - last)
					}
					last = a
				}
			}
		}
	}()
	return func() int64 { close(done); <-finished; return last }
}

// imageLen returns the size of v's memory-sink image: its file's or its RAM
// buffer's.
func (v *vmRun) imageLen() int64 {
	switch {
	case v.file != nil:
		if fi, err := v.file.Stat(); err == nil {
			return fi.Size()
		}
	case v.ram != nil:
		return v.ram.Len()
	}
	return 0
}

// ingestFile stores v's image file as its page image and removes the file,
// counting the bytes read as progress (and in vm, if set: the VM's flush
// counter).
func (d *driver) ingestFile(v *vmRun, vm *atomic.Int64) error {
	defer v.dropImageFile()
	fi, err := v.file.Stat()
	if err != nil {
		return fmt.Errorf("image file of %s: %w", v.name, err)
	}
	if fi.Size() == 0 {
		return fmt.Errorf("image file of %s is empty", v.name)
	}
	r := countingReaderAt{v.file, &d.moved, vm}
	if _, err := d.w.ImageAt(v.name, imageName, r, fi.Size()); err != nil {
		return fmt.Errorf("store image of %s: %w", v.name, err)
	}
	return nil
}

// ingestLater stores v's disk-sink image file in a goroutine; the commit
// waits for it (ingested).
func (d *driver) ingestLater(v *vmRun) {
	d.ingests.Add(1)
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		defer d.ingests.Done()
		if err := d.ingestFile(v, nil); err != nil {
			d.ingestMu.Lock()
			d.ingestErrs = append(d.ingestErrs, err)
			d.ingestMu.Unlock()
		}
	}()
}

// ingested waits until every image ingestLater started is stored, and
// returns their failures.
func (d *driver) ingested() error {
	d.ingests.Wait()
	d.ingestMu.Lock()
	defer d.ingestMu.Unlock()
	return errors.Join(d.ingestErrs...)
}

// countingReaderAt adds the bytes read through it to n and, if set, vm
// (progress).
type countingReaderAt struct {
	r  io.ReaderAt
	n  *atomic.Int64
	vm *atomic.Int64
}

func (c countingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	k, err := c.r.ReadAt(p, off)
	c.n.Add(int64(k))
	if c.vm != nil {
		c.vm.Add(int64(k))
	}
	return k, err
}

// imageFormat returns the format of the hypervisor's image files, or ""
// if it restores none.
func imageFormat(h Hypervisor) string {
	if fr, ok := h.(hv.FileRestorer); ok {
		return fr.FileFormat()
	}
	return ""
}

// restoreImage writes VM spec.Name's page image from s into a file (tmpfs
// if there is one) and restores the machine from it; the file is removed
// once the hypervisor has loaded it.
func (e *Env) restoreImage(ctx context.Context, s *store.Snapshot, spec hv.MachineSpec, format string, tr *tracker, i int) (hv.Machine, error) {
	fr, ok := e.opts.Hypervisor.(hv.FileRestorer)
	if !ok || fr.FileFormat() != format {
		return nil, fmt.Errorf("%w: vm %s: its memory is a page image of format %q, which %s does not restore",
			ErrWrongHypervisor, spec.Name, format, e.opts.Hypervisor.Info().Name)
	}
	if rr, ok := fr.(hv.RAMFileRestorer); ok {
		return e.restoreOnFile(ctx, s, spec, rr, tr, i)
	}
	f, err := newImageFile(e.imageDir(core.MemorySink), spec.Name)
	if err != nil {
		return nil, err
	}
	path := f.Name()
	f.Close()
	defer os.Remove(path)
	var loaded *os.File
	defer func() {
		if loaded != nil {
			loaded.Close()
		}
	}()
	// The image is written back while the hypervisor starts the machine.
	tr.phase(i, PhaseRestoring, 0)
	open := func() (*os.File, error) {
		_, err := s.RestoreImage(spec.Name, imageName, path, restoreOptions())
		if err := restoredImage(s, spec.Name, err, tr.counter(i)); err != nil {
			return nil, err
		}
		f, err := os.Open(path)
		if err != nil {
			return nil, fmt.Errorf("vm %s: %w", spec.Name, err)
		}
		loaded = f
		return f, nil
	}
	m, err := fr.RestoreFile(ctx, spec, open)
	if err == nil {
		tr.phase(i, PhaseLoaded, 0)
	}
	return m, err
}

// restoreOptions returns the write-back's options: each block's CRC-32C,
// decoding and size are checked, not its hash: the write-back is on the
// restore's critical path, the CRC catches damage to an object, and the
// hash would add only the case of a sound object under another's name,
// which the store's writers (trusting CRC-checked objects they find) do
// not guard against either; vnsnap verify checks the hashes
// (store/doc.go).
func restoreOptions() pages.RestoreOptions { return pages.RestoreOptions{SkipHash: true} }

// restoredImage ends the write-back of VM vm's image with its error err:
// on success the image's whole length is added to c (if set; holes, the
// zero pages, included, as a streamed restore counts it), and an error
// names the VM unless a store.ErrCorrupt names it already.
func restoredImage(s *store.Snapshot, vm string, err error, c *atomic.Int64) error {
	if err != nil {
		if errors.Is(err, store.ErrCorrupt) {
			return err // names the VM, image and block already
		}
		return fmt.Errorf("vm %s: restore image: %w", vm, err)
	}
	if c != nil {
		if im, ierr := s.Image(vm, imageName); ierr == nil {
			c.Add(im.Length)
		}
	}
	return nil
}

// restoreOnFile is restoreImage on a hypervisor that runs the machine
// with its memory on the image's file (hv.RAMFileRestorer): the file is
// unlinked at once, so that the hypervisor's descriptor alone keeps it
// and it is freed with the machine, whatever becomes of this process.
func (e *Env) restoreOnFile(ctx context.Context, s *store.Snapshot, spec hv.MachineSpec, rr hv.RAMFileRestorer, tr *tracker, i int) (hv.Machine, error) {
	r, size, err := s.ImageReader(spec.Name, imageName, restoreOptions())
	if err != nil {
		return nil, restoredImage(s, spec.Name, err, nil)
	}
	f, err := newImageFile(e.imageDir(core.MemorySink), spec.Name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if err := os.Remove(f.Name()); err != nil {
		return nil, fmt.Errorf("vm %s: %w", spec.Name, err)
	}
	tr.phase(i, PhaseRestoring, 0)
	fill := func() error {
		_, err := s.RestoreImageInto(spec.Name, imageName, f, restoreOptions())
		return restoredImage(s, spec.Name, err, tr.counter(i))
	}
	m, err := rr.RestoreRAMFile(ctx, spec, hv.RAMImage{File: f, Image: r, Size: size, Fill: fill})
	if err == nil {
		tr.phase(i, PhaseLoaded, 0)
	}
	return m, err
}
