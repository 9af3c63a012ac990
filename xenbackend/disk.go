package xenbackend

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/vnsnap/vnsnap/internal/durable"
	"github.com/vnsnap/vnsnap/internal/regfile"
	"github.com/vnsnap/vnsnap/realbackend/hv"
)

// Disks of Xen domUs.
//
// A domU's disk is a raw image file in the state directory, attached to a
// loop device in dom0 and given to the domain as xvda through blkback (a
// "phy" disk), with a hotplug script of ours (BlockScript) instead of Xen's
// block script, which needs bash and a full dom0. Raw files, not qcow2:
// blkback reads block devices only, and qcow2 on Xen needs a QEMU in dom0
// (qdisk) for every domain. Raw files also keep every image whole, so an
// image frozen at a snapshot point is restored, verified or copied on its
// own, with no chain of overlays to reassemble.
//
// Freezing (FreezeDisk) happens while the domain is suspended at its
// snapshot point, after its last memory pass: the running image's contents
// are cloned into a new file, which takes the running image's name (the
// frozen image), while the running file itself, still the loop device's,
// is renamed to the new overlay's name. A clone is a reflink (FICLONE) where
// the state directory's filesystem has them (XFS, Btrfs): no data moves,
// whatever the disk's size. Elsewhere (tmpfs, ext4) it is a copy of the
// allocated extents only (SEEK_DATA/SEEK_HOLE and copy_file_range), which
// the domain's pause then includes.
//
// Consistency: blkback may still complete a request the domain issued
// before it suspended. Its data is then in the frozen image (the clone comes
// after), while the memory image, copied before, shows the request
// outstanding: the restored domain's blkfront issues it again (blkif_recover),
// which leaves the same data. A completion the memory image does show was
// written before the clone.
//
// Why not a device-mapper snapshot: dm's origin/COW pairs would make each
// frozen image a chain of devices to rebuild at restore and to tear down on
// every failure path, where a file is restored by attaching it.

// DiskFormat is the format, and file extension, of Xen domUs' disk images.
const DiskFormat = "raw"

// BlockScript is the hotplug script the domains' disks get: libxl runs it in
// dom0 ("add" or "remove") with the disk's backend path in $XENBUS_PATH,
// whose params is the loop device the backend attached. It tells blkback
// the device (physical-device, major:minor in hex) and reports it
// connected; the backend detaches the loop device itself.
const BlockScript = `#!/bin/sh
# written by vnsnap (xenbackend): a domU's disk on a loop device vnsnap attached
case "$1" in
add)
	dev=$(xenstore-read "$XENBUS_PATH/params") || exit 1
	[ -b "$dev" ] || { echo "block-vnsnap: $dev is not a block device" >&2; exit 1; }
	mm=$(stat -L -c '%t:%T' "$dev") || exit 1
	xenstore-write "$XENBUS_PATH/physical-device" "$mm" \
		"$XENBUS_PATH/physical-device-path" "$dev" \
		"$XENBUS_PATH/hotplug-status" connected || exit 1 ;;
esac
exit 0
`

var (
	_ hv.DiskImages  = (*Hypervisor)(nil)
	_ hv.DiskFreezer = (*Machine)(nil)
)

// DiskFormat returns DiskFormat.
func (h *Hypervisor) DiskFormat() string { return DiskFormat }

// NewDisk creates the raw image path holding base's contents (a reflink
// where the filesystem has them, else a copy of base's allocated extents).
// base is only read.
func (h *Hypervisor) NewDisk(ctx context.Context, base, path string) error {
	if err := checkPath("disk image", base); err != nil {
		return err
	}
	if err := checkPath("new disk image", path); err != nil {
		return err
	}
	if err := cloneFile(ctx, base, path); err != nil {
		return fmt.Errorf("disk image %s from %s: %w", path, base, err)
	}
	return nil
}

// cloneFile creates dst (which must not exist) with src's contents and
// size, synced; on error dst is removed.
func cloneFile(ctx context.Context, src, dst string) (err error) {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is %s", src, regfile.Kind(fi.Mode()))
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(dst)
		}
	}()
	if unix.IoctlFileClone(int(out.Fd()), int(in.Fd())) == nil {
		return out.Sync()
	}
	if err := copyExtents(ctx, in, out, fi.Size()); err != nil {
		return err
	}
	if err := out.Truncate(fi.Size()); err != nil {
		return err
	}
	return out.Sync()
}

// copyExtents copies the allocated extents of in (size bytes) to the same
// offsets of out, leaving holes as holes.
func copyExtents(ctx context.Context, in, out *os.File, size int64) error {
	for off := int64(0); off < size; {
		if err := ctx.Err(); err != nil {
			return err
		}
		data, err := unix.Seek(int(in.Fd()), off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			return nil // no data after off
		}
		if err != nil {
			// No SEEK_DATA: one extent, the whole file.
			return copyRange(in, out, off, size-off)
		}
		hole, err := unix.Seek(int(in.Fd()), data, unix.SEEK_HOLE)
		if err != nil {
			hole = size
		}
		if err := copyRange(in, out, data, hole-data); err != nil {
			return err
		}
		off = hole
	}
	return nil
}

// copyRange copies n bytes at off of in to off of out (copy_file_range,
// or read and write where it is refused).
func copyRange(in, out *os.File, off, n int64) error {
	ro, wo := off, off
	for n > 0 {
		c, err := unix.CopyFileRange(int(in.Fd()), &ro, int(out.Fd()), &wo, int(min(n, 1<<30)), 0)
		if err != nil || c == 0 {
			if err == nil {
				return fmt.Errorf("copy_file_range: %d bytes short", n)
			}
			// EXDEV, ENOSYS, EINVAL: copy through memory.
			c, err := io.Copy(io.NewOffsetWriter(out, wo), io.NewSectionReader(in, ro, n))
			if err == nil && c != n {
				err = fmt.Errorf("copy: %d of %d bytes (the file shrank)", c, n)
			}
			return err
		}
		n -= int64(c)
	}
	return nil
}

// loopDev is a loop device attached to an image, with
// LO_FLAGS_AUTOCLEAR: the kernel detaches it once its last opener closes
// it, so holding f keeps it until blkback has opened it, and closing f
// after the domain is gone detaches it (or at once, if no domain ever
// opened it). A crashed vnsnap leaks no loop device past its domains.
type loopDev struct {
	path string
	f    *os.File
}

// attachLoop attaches image to a free loop device (LOOP_CONFIGURE).
func attachLoop(image string) (*loopDev, error) {
	img, err := os.OpenFile(image, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("loop device for %s: %w", image, err)
	}
	defer img.Close()
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("loop device for %s: %w (is the loop module loaded?)", image, err)
	}
	defer ctl.Close()
	for try := 0; ; try++ {
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return nil, fmt.Errorf("loop device for %s: LOOP_CTL_GET_FREE: %w", image, err)
		}
		dev := fmt.Sprintf("/dev/loop%d", n)
		f, err := os.OpenFile(dev, os.O_RDWR, 0)
		if err != nil {
			return nil, fmt.Errorf("loop device for %s: %w", image, err)
		}
		cfg := unix.LoopConfig{Fd: uint32(img.Fd())}
		cfg.Info.Flags = unix.LO_FLAGS_AUTOCLEAR
		copy(cfg.Info.File_name[:], filepath.Base(image))
		err = unix.IoctlLoopConfigure(int(f.Fd()), &cfg)
		if err == nil {
			return &loopDev{path: dev, f: f}, nil
		}
		f.Close()
		if !errors.Is(err, unix.EBUSY) || try >= 8 {
			return nil, fmt.Errorf("loop device for %s: LOOP_CONFIGURE %s: %w", image, dev, err)
		}
		// Another process took the free device between the two calls.
	}
}

// detach lets the loop device go (see loopDev). Safe on nil.
func (l *loopDev) detach() {
	if l != nil && l.f != nil {
		l.f.Close()
		l.f = nil
	}
}

// FreezeDisk freezes the disk at the snapshot point (see the package's
// notes on disks): the running image's contents are cloned under its own
// name, which it returns (the frozen image), and the running file, the loop
// device's, is renamed overlay. A machine without disk returns "".
//
// In a live save the domain is suspended at its snapshot point when the
// core freezes its disk, and the clone is made at once. A domain paused by
// Pause is not at its snapshot point yet: a stop-and-copy save must let it
// run until it suspends itself (see Save), and what it writes meanwhile is
// in the memory image. So the clone is made by that save, once the domain
// has suspended; if no save comes, by Resume (the domain was paused all
// along, and the names are then as FreezeDisk said).
func (m *Machine) FreezeDisk(ctx context.Context, overlay string) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.disk == "" {
		return "", nil
	}
	if err := checkPath("disk overlay", overlay); err != nil {
		return "", err
	}
	if _, err := os.Lstat(overlay); !errors.Is(err, os.ErrNotExist) || m.freezeTo != "" {
		return "", fmt.Errorf("freeze disk of %s: %s already exists or a freeze is pending", m.spec.Name, overlay)
	}
	if m.paused && m.held == nil {
		m.freezeTo = overlay
		return m.disk, nil
	}
	return m.freeze(ctx, overlay)
}

// freezePending makes the clone a FreezeDisk left for the snapshot point.
// m.mu is held.
func (m *Machine) freezePending(ctx context.Context) error {
	if m.freezeTo == "" {
		return nil
	}
	overlay := m.freezeTo
	m.freezeTo = ""
	_, err := m.freeze(ctx, overlay)
	return err
}

// freeze clones the running image under its own name and renames the
// running file overlay. m.mu is held.
func (m *Machine) freeze(ctx context.Context, overlay string) (string, error) {
	cur := m.disk
	tmp := overlay + ".freezing"
	os.Remove(tmp) // a crash's debris: never an image (its name is not one)
	if err := cloneFile(ctx, cur, tmp); err != nil {
		return "", fmt.Errorf("freeze disk of %s: %w", m.spec.Name, err)
	}
	if err := os.Rename(cur, overlay); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("freeze disk of %s: %w", m.spec.Name, err)
	}
	if err := os.Rename(tmp, cur); err != nil {
		if rerr := os.Rename(overlay, cur); rerr != nil {
			// The running file keeps the overlay's name: it is the
			// machine's disk all the same.
			m.disk = overlay
			err = errors.Join(err, rerr)
		}
		os.Remove(tmp)
		return "", fmt.Errorf("freeze disk of %s: %w", m.spec.Name, err)
	}
	m.disk = overlay
	// Best effort: a directory that cannot be synced is no reason to fail
	// a freeze that happened.
	_ = durable.SyncDir(filepath.Dir(cur))
	return cur, nil
}
