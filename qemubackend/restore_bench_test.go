package qemubackend_test

import (
	"bufio"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/vnsnap/vnsnap/internal/testutil"
	"github.com/vnsnap/vnsnap/qemubackend"
	"github.com/vnsnap/vnsnap/qemubackend/guestimg"
	"github.com/vnsnap/vnsnap/qemubackend/qemutest"
	"github.com/vnsnap/vnsnap/store"
	"github.com/vnsnap/vnsnap/store/pages"
)

// BenchmarkRestoreVsQEMUFile measures, in one run and on the same guest
// memory, the restore of a VM's memory
//
//   - through vnsnap's store: the page image written back from the store
//     into a tmpfs file (pages.RestoreFile on every core: every block's
//     CRC-32C, decoding and size checked, as realbackend restores) while a
//     new QEMU starts, then loaded by it from that file (`store` below;
//     store-to-file is the write-back alone), and the same with every
//     block's hash checked too (`store-hashed`);
//   - through the store with the guest's RAM on the restored file
//     (`onfile`: qemubackend.RestoreOnFile, what realbackend does): the
//     write-back (onfile-fill) overlaps QEMU's start, and QEMU loads only
//     the small RAMBlocks and the device state;
//   - by QEMU alone from a plain file holding the same mapped-ram image
//     (`qemu-file`), the baseline of issue 9's "within 1.2x";
//   - by QEMU alone from a plain file holding the classic migration stream
//     of the same memory (`qemu-stream`).
//
// The two files are stop-and-copy saves of one running guest taken a moment
// apart (the stream's holds what its dirtier wrote in between). Each
// restore starts a QEMU process with -incoming defer and ends when
// QEMU reports the load completed (the VM is then paused, ready to run).
// It reports the mean of each per restore and the ratios onfile/qemu-file
// (issue 9's) and store/qemu-file.
// The files are in tmpfs (/dev/shm) or the page cache, so the disk is left
// out on both sides. Run:
//
//	CI=1 go test ./qemubackend -run XXX -bench RestoreVsQEMUFile -benchtime 5x
func BenchmarkRestoreVsQEMUFile(b *testing.B) {
	h := qemutest.RequireQEMU(b)
	img := qemutest.GuestImage(b, "..")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	spec := qemubackend.Spec{
		Name: "bench", MemoryMiB: 256, Kernel: img.Kernel, Initrd: img.Initrd,
		Append: guestimg.KernelArgs("", "",
			guestimg.Program{Name: "heartbeat"},
			guestimg.Program{Name: "dirtier", Args: []string{"-rate=1", "-ws=64"}}),
	}
	vm, err := qemubackend.Start(ctx, h, spec)
	if err != nil {
		b.Fatal(err)
	}
	defer vm.Kill()
	if _, _, err := vm.Console.WaitPrefix(ctx, 0, "DIRTIER OK"); err != nil {
		b.Fatal(err)
	}
	dir := testutil.ShmDir(b)
	mapped := filepath.Join(dir, "mapped.img")
	stream := filepath.Join(dir, "stream.img")
	f, err := os.Create(mapped)
	if err != nil {
		b.Fatal(err)
	}
	mst, err := vm.Snapshot(ctx, f, qemubackend.Options{Method: qemubackend.StopCopy, MappedRAM: true, Resume: true})
	if err != nil {
		b.Fatal(err)
	}
	f.Close()
	sf, err := os.Create(stream)
	if err != nil {
		b.Fatal(err)
	}
	bw := bufio.NewWriterSize(sf, 1<<20)
	sst, err := vm.Snapshot(ctx, bw, qemubackend.Options{Method: qemubackend.StopCopy, Resume: true})
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("stop-copy save: mapped-ram %v (QEMU total %v, pause seen from outside %v), stream %v (QEMU total %v, pause %v)",
		mst.Duration, mst.QEMUTotal, mst.Pause.Gap, sst.Duration, sst.QEMUTotal, sst.Pause.Gap)
	if err := bw.Flush(); err != nil {
		b.Fatal(err)
	}
	sf.Close()
	vm.Kill()

	root := b.TempDir()
	w, err := store.Create(root, "s", store.Meta{Created: time.Unix(0, 0)})
	if err != nil {
		b.Fatal(err)
	}
	mf, err := os.Open(mapped)
	if err != nil {
		b.Fatal(err)
	}
	fi, _ := mf.Stat()
	if _, err := w.ImageAt("bench", "memory", mf, fi.Size()); err != nil {
		b.Fatal(err)
	}
	mf.Close()
	if err := w.Commit(); err != nil {
		b.Fatal(err)
	}
	snap, err := store.Open(root, "s")
	if err != nil {
		b.Fatal(err)
	}
	defer snap.Close()
	im, _ := snap.Image("bench", "memory")
	b.Logf("guest %d MiB: mapped-ram file %d bytes, stored %d bytes; stream file %d bytes", spec.MemoryMiB, fi.Size(), im.Stored, fileSize(b, stream))

	load := func(path string, mapped bool) time.Duration {
		start := time.Now()
		f, err := os.Open(path)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		s := spec
		s.Name = "restored"
		var r *qemubackend.VM
		if mapped {
			r, err = qemubackend.RestoreFile(ctx, h, s, f)
		} else {
			r, err = qemubackend.Restore(ctx, h, s, bufio.NewReaderSize(f, 1<<20))
		}
		if err != nil {
			b.Fatal(err)
		}
		d := time.Since(start)
		r.Kill()
		return d
	}
	var viaStore, fromStore, viaStoreHashed, fromStoreHashed, qemuFile, qemuStream time.Duration
	restored := filepath.Join(dir, "restored.img")
	// The store's path as realbackend takes it: the image is written back
	// while QEMU starts (RestoreFileFrom), then loaded; every block's CRC,
	// decoding and size checked (realbackend's RestoreOptions), or with
	// hashed also its BLAKE3 against its address.
	viaStoreLoad := func(hashed bool, fromStore *time.Duration) time.Duration {
		start := time.Now()
		var f *os.File
		s := spec
		s.Name = "restored"
		r, err := qemubackend.RestoreFileFrom(ctx, h, s, func() (*os.File, error) {
			t0 := time.Now()
			if _, err := snap.RestoreImage("bench", "memory", restored, pages.RestoreOptions{SkipHash: !hashed}); err != nil {
				return nil, err
			}
			*fromStore += time.Since(t0)
			var err error
			f, err = os.Open(restored)
			return f, err
		})
		if err != nil {
			b.Fatal(err)
		}
		d := time.Since(start)
		r.Kill()
		f.Close()
		os.Remove(restored)
		return d
	}
	// The store's path with the guest's RAM on the restored file
	// (RestoreOnFile, as realbackend takes it now): the layout read from
	// the store, the file written back while QEMU starts with its RAM
	// mapped from it, then QEMU loads the small blocks and the device
	// state alone.
	var onFile, onFileFill time.Duration
	onFileLoad := func() time.Duration {
		start := time.Now()
		s := spec
		s.Name = "restored"
		ra, size, err := snap.ImageReader("bench", "memory", pages.RestoreOptions{SkipHash: true})
		if err != nil {
			b.Fatal(err)
		}
		f, err := os.Create(restored)
		if err != nil {
			b.Fatal(err)
		}
		os.Remove(restored) // QEMU's descriptor keeps it
		r, err := qemubackend.RestoreOnFile(ctx, h, s, qemubackend.RAMImage{File: f, Image: ra, Size: size, Fill: func() error {
			t0 := time.Now()
			_, err := snap.RestoreImageInto("bench", "memory", f, pages.RestoreOptions{SkipHash: true})
			onFileFill += time.Since(t0)
			return err
		}})
		if err != nil {
			b.Fatal(err)
		}
		d := time.Since(start)
		f.Close()
		r.Kill()
		return d
	}
	b.ResetTimer()
	for range b.N {
		// Interleaved, so that load on the machine affects all alike.
		onFile += onFileLoad()
		viaStore += viaStoreLoad(false, &fromStore)
		qemuFile += load(mapped, true)
		viaStoreHashed += viaStoreLoad(true, &fromStoreHashed)
		qemuStream += load(stream, false)
	}
	b.StopTimer()
	n := time.Duration(b.N)
	ms := func(d time.Duration) float64 { return float64(d/n) / float64(time.Millisecond) }
	b.ReportMetric(ms(onFile), "onfile-ms/op")
	b.ReportMetric(ms(onFileFill), "onfile-fill-ms/op")
	b.ReportMetric(float64(onFile)/float64(qemuFile), "onfile/qemu-file")
	b.ReportMetric(ms(viaStore), "store-ms/op")
	b.ReportMetric(ms(fromStore), "store-to-file-ms/op")
	b.ReportMetric(ms(viaStoreHashed), "store-hashed-ms/op")
	b.ReportMetric(ms(fromStoreHashed), "store-hashed-to-file-ms/op")
	b.ReportMetric(float64(viaStoreHashed)/float64(qemuFile), "store-hashed/qemu-file")
	b.ReportMetric(ms(qemuFile), "qemu-file-ms/op")
	b.ReportMetric(ms(qemuStream), "qemu-stream-ms/op")
	b.ReportMetric(float64(viaStore)/float64(qemuFile), "store/qemu-file")
	b.ReportMetric(float64(viaStore)/float64(qemuStream), "store/qemu-stream")
}

func fileSize(b *testing.B, p string) int64 {
	fi, err := os.Stat(p)
	if err != nil {
		b.Fatal(err)
	}
	return fi.Size()
}
