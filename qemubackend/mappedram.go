package qemubackend

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"
)

// MappedRAMFormat names the images written with Options.MappedRAM: QEMU's
// migration stream with the mapped-ram capability (QEMU 9+), in which each
// RAMBlock's pages sit at fixed offsets of the file, behind a header and a
// bitmap and aligned to 1 MiB, with the device state after them. Zero pages
// are never written, so they are holes in the file. A file is restored with
// RestoreFile, never as a stream.
const MappedRAMFormat = "qemu-mapped-ram-v1"

// mappedRAMChannels is the number of multifd channels of a mapped-ram save
// or load: without multifd QEMU writes the file a page at a time, and a
// stop-and-copy save took 2-4 x as long as the stream's.
const mappedRAMChannels = 4

// ErrNotFile reports a mapped-ram save or restore given something other
// than an open, regular file (QEMU needs to seek in it).
var ErrNotFile = errors.New("mapped-ram needs a regular file")

// mappedRAMFile returns w as the empty regular file a mapped-ram save
// writes into, or why it cannot be one.
func mappedRAMFile(w io.Writer, m Method) (*os.File, error) {
	if m == Background {
		return nil, errors.New("mapped-ram: not offered with background-snapshot (its copy-on-write save keeps the stream format)")
	}
	f, ok := w.(*os.File)
	if !ok {
		return nil, fmt.Errorf("%w: got a %T", ErrNotFile, w)
	}
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("mapped-ram file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: %s is %v", ErrNotFile, f.Name(), fi.Mode().Type())
	}
	if fi.Size() != 0 {
		return nil, fmt.Errorf("mapped-ram file %s: %d bytes, want an empty file", f.Name(), fi.Size())
	}
	return f, nil
}

// RestoreFile is Restore from a mapped-ram image (Options.MappedRAM) in the
// regular file f, which QEMU reads itself at its offsets. The VM stays
// paused until the caller calls Cont; on error it is killed.
func RestoreFile(ctx context.Context, host *Host, spec Spec, f *os.File) (*VM, error) {
	return RestoreFileFrom(ctx, host, spec, func() (*os.File, error) { return f, nil })
}

// RestoreFileFrom is RestoreFile whose file is prepared while QEMU starts:
// open runs in a goroutine of its own as soon as the QEMU process is being
// started, and returns the file to load (a caller may write it meanwhile,
// from a store); the load begins once both are done. The file open returns
// is the caller's to close. If open fails, the VM is killed and its error
// returned as it is.
func RestoreFileFrom(ctx context.Context, host *Host, spec Spec, open func() (*os.File, error)) (*VM, error) {
	type opened struct {
		f   *os.File
		err error
	}
	ch := make(chan opened, 1)
	go func() {
		f, err := open()
		ch <- opened{f, err}
	}()
	vm, err := start(ctx, host, spec, true, nil)
	o := <-ch // open is the caller's: it ends on its own
	if err != nil {
		return nil, fmt.Errorf("restore %s: %w", spec.Name, err)
	}
	if o.err != nil {
		vm.Kill()
		return nil, o.err
	}
	if err := vm.loadFile(ctx, o.f); err != nil {
		vm.Kill()
		return nil, fmt.Errorf("restore %s: %w", spec.Name, err)
	}
	return vm, nil
}

// loadFile loads the mapped-ram file f into a VM started with -incoming
// defer.
func (vm *VM) loadFile(ctx context.Context, f *os.File) error {
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%w: %s is %v", ErrNotFile, f.Name(), fi.Mode().Type())
	}
	return vm.restore(ctx, nil, f)
}

// addFdset hands QEMU a descriptor of f opened with access mode acc
// (os.O_WRONLY to save, os.O_RDONLY to load: QEMU's file: migration opens
// its fd set with exactly that mode) in a new fd set, whose id it returns.
// No path reaches QEMU: the descriptor is passed over the QMP socket.
func (vm *VM) addFdset(ctx context.Context, f *os.File, acc int) (int64, error) {
	// A fresh descriptor with the access mode QEMU asks for, of the same
	// open file (not the path, which may have been replaced).
	g, err := os.OpenFile(fmt.Sprintf("/proc/self/fd/%d", f.Fd()), acc, 0)
	if err != nil {
		return 0, fmt.Errorf("mapped-ram file %s: reopen: %w", f.Name(), err)
	}
	defer g.Close() // QEMU holds its own copy
	set := vm.fdsets.Add(1)
	if err := vm.QMP.ExecuteWithFile(ctx, "add-fd", map[string]any{"fdset-id": set}, nil, g); err != nil {
		return 0, fmt.Errorf("mapped-ram file %s: add-fd: %w", f.Name(), err)
	}
	return set, nil
}

// removeFdset drops fd set id from QEMU; QEMU closes the descriptor once
// the migration channel that duplicated it is closed too. Best effort.
func (vm *VM) removeFdset(set int64) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = vm.QMP.Execute(ctx, "remove-fd", map[string]any{"fdset-id": set}, nil)
}

func fdsetURI(set int64) string { return fmt.Sprintf("file:/dev/fdset/%d", set) }
