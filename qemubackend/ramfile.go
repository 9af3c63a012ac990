package qemubackend

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"syscall"
)

// RAMImage is a mapped-ram image (MappedRAMFormat) to restore with the
// guest's RAM on the image's file itself (RestoreOnFile).
type RAMImage struct {
	// File is the file the image is written into: regular, open
	// read-write and empty (best in tmpfs, and best unlinked: QEMU's
	// descriptor then keeps it, and it goes with the VM).
	File *os.File
	// Image reads the image's bytes before File holds them (a few
	// hundred bytes of headers per RAMBlock), and Size is its length.
	Image io.ReaderAt
	Size  int64
	// Fill writes the image into File, in full, and leaves it Size bytes
	// long; it runs in a goroutine of its own while QEMU starts.
	Fill func() error
}

// ErrNoGuestRAM reports a mapped-ram image without the guest's RAM block
// ("pc.ram" of the spec's size), which RestoreOnFile needs.
var ErrNoGuestRAM = errors.New("mapped-ram image has no RAM block of the guest's size")

// RestoreOnFile is RestoreFile with the guest's RAM on img.File: QEMU
// starts with its RAM ("pc.ram") a shared mapping of the RAM block's pages
// in that file (memory-backend-file on the descriptor it inherits, at the
// block's pages offset) while img.Fill writes the image into it; then the
// RAM block's bitmap in the file is cleared and QEMU loads the file, which
// reads the small RAMBlocks and the device state only. So the guest's
// pages are written once, by Fill, and QEMU's copy of them is gone. The
// device state loads only once Fill is done (a device's post_load may read
// guest RAM). Once loaded, the file's ranges other than the RAM are
// punched out (they are QEMU's again), and the caller may close File: the
// RAM lives as long as QEMU. The layout is read from img.Image before the
// start (ParseMappedRAM) and again from the written file, which must
// agree. The VM stays paused until the caller calls Cont; on error it is
// killed.
func RestoreOnFile(ctx context.Context, host *Host, spec Spec, img RAMImage) (*VM, error) {
	spec = spec.withDefaults(host)
	fail := func(err error) error { return fmt.Errorf("restore %s on its file: %w", spec.Name, err) }
	fi, err := img.File.Stat()
	if err != nil {
		return nil, fail(err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fail(fmt.Errorf("%w: %s is %v", ErrNotFile, img.File.Name(), fi.Mode().Type()))
	}
	layout, err := ParseMappedRAM(img.Image, img.Size)
	if err != nil {
		return nil, fail(err)
	}
	ram, ok := layout.Block(ramBackendID)
	if !ok || ram.Length != int64(spec.MemoryMiB)<<20 {
		return nil, fail(fmt.Errorf("%w: want %q of %d MiB, got %+v", ErrNoGuestRAM, ramBackendID, spec.MemoryMiB, layout.Blocks))
	}
	// QEMU maps the RAM's range at its start: the file must reach it.
	if err := img.File.Truncate(img.Size); err != nil {
		return nil, fail(err)
	}
	filled := make(chan error, 1)
	go func() { filled <- img.Fill() }()
	spec.ram = &ramBackend{Offset: ram.PagesOffset, Size: ram.Length}
	vm, err := start(ctx, host, spec, true, []*os.File{img.File})
	ferr := <-filled // Fill is the caller's: it ends on its own
	if err != nil {
		return nil, fail(err)
	}
	if ferr != nil {
		vm.Kill()
		return nil, ferr
	}
	if err := vm.loadOnFile(ctx, img.File, layout, ram); err != nil {
		vm.Kill()
		return nil, fail(err)
	}
	return vm, nil
}

// loadOnFile checks the written file's layout against the one QEMU was
// started with, clears the RAM block's bitmap and loads the file; then it
// punches out what is not RAM.
func (vm *VM) loadOnFile(ctx context.Context, f *os.File, want *MappedRAMLayout, ram RAMBlock) error {
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	got, err := ParseMappedRAM(f, fi.Size())
	if err != nil {
		return fmt.Errorf("written file: %w", err)
	}
	if !reflect.DeepEqual(got, want) {
		return fmt.Errorf("written file's layout %+v differs from the image's %+v: %w", got.Blocks, want.Blocks, ErrBadMappedRAM)
	}
	// QEMU loads only the pages the bitmap marks; the RAM's are in place.
	if _, err := f.WriteAt(make([]byte, ram.BitmapLen), ram.BitmapOffset); err != nil {
		return fmt.Errorf("clear the bitmap of %s: %w", ram.Name, err)
	}
	if err := vm.loadFile(ctx, f); err != nil {
		return err
	}
	// Best effort: the headers, the small blocks and the device state are
	// loaded into QEMU's own memory now and need not stay in the file.
	const punch = 0x02 | 0x01 // FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
	fd := int(f.Fd())
	_ = syscall.Fallocate(fd, punch, 0, ram.PagesOffset)
	if end := ram.PagesOffset + ram.Length; end < fi.Size() {
		_ = syscall.Fallocate(fd, punch, end, fi.Size()-end)
	}
	return nil
}
