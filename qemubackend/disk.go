package qemubackend

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"

	"github.com/vnsnap/vnsnap/realbackend/hv"
	"github.com/vnsnap/vnsnap/vne"
)

// DiskFormat is the format of the images QEMU machines run on: qcow2, so
// that an image is an overlay on the one below it (a freeze and a restore
// cost no copy).
const DiskFormat = "qcow2"

var _ hv.DiskImages = (*Hypervisor)(nil)

// DiskFormat returns DiskFormat.
func (h *Hypervisor) DiskFormat() string { return DiskFormat }

// NewDisk creates a qcow2 overlay at path whose backing file is base
// (qemu-img create -b). base must be absolute: QEMU resolves a relative
// backing file against the overlay's directory, not ours.
func (h *Hypervisor) NewDisk(ctx context.Context, base, path string) error {
	if err := vne.CheckPath(base); err != nil {
		return fmt.Errorf("backing file of %s: %w", path, err)
	}
	if err := vne.CheckPath(path); err != nil {
		return fmt.Errorf("overlay: %w", err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("overlay %s: already exists", path)
	}
	out, err := exec.CommandContext(ctx, "qemu-img", "create", "-q", "-f", "qcow2",
		"-b", base, "-F", "qcow2", path).CombinedOutput()
	if err != nil {
		return fmt.Errorf("qemu-img create overlay %s on %s: %w: %s", path, base, err, strings.TrimSpace(string(out)))
	}
	return nil
}
