package xentest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// Versions of the unpacked environment; scripts/setup-xen.sh pins the
// packages they come from.
const (
	// XenVersion is the Xen release; xl lives in /usr/lib/xen-<XenVersion>/bin.
	XenVersion = "4.17"
	// KernelVersion is the Debian kernel booted as dom0 and as domU.
	KernelVersion = "6.1.0-57-amd64"
)

// Env is an unpacked environment: the folder scripts/setup-xen.sh fills.
type Env struct {
	// Dir is the folder, normally <module>/.cache/xen.
	Dir string
}

// ErrNoEnv reports that the environment could not be set up.
var ErrNoEnv = errors.New("xen environment unavailable (run scripts/setup-xen.sh)")

// Setup runs scripts/setup-xen.sh of the module at moduleRoot, which returns
// at once when the environment is already unpacked and current, and returns
// the environment in $VNSNAP_XEN_DIR if set (so that checkouts can share
// one), else in <moduleRoot>/.cache/xen.
func Setup(ctx context.Context, moduleRoot string) (Env, error) {
	root, err := filepath.Abs(moduleRoot)
	if err != nil {
		return Env{}, fmt.Errorf("xentest setup: %w", err)
	}
	env := Env{Dir: filepath.Join(root, ".cache", "xen")}
	if d := os.Getenv("VNSNAP_XEN_DIR"); d != "" {
		if env.Dir, err = filepath.Abs(d); err != nil {
			return Env{}, fmt.Errorf("xentest setup: VNSNAP_XEN_DIR: %w", err)
		}
	}
	cmd := exec.CommandContext(ctx, "sh", filepath.Join(root, "scripts", "setup-xen.sh"), env.Dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		return Env{}, fmt.Errorf("xentest setup: scripts/setup-xen.sh: %v\n%s: %w", err, out, ErrNoEnv)
	}
	for _, p := range []string{env.QEMU(), env.Xen(), env.Kernel(), env.Busybox(), env.Path("/usr/lib/xen-" + XenVersion + "/bin/xl")} {
		if _, err := os.Stat(p); err != nil {
			return Env{}, fmt.Errorf("xentest setup: %w: %w", err, ErrNoEnv)
		}
	}
	return env, nil
}

// QEMU is the wrapper that runs Debian 12's QEMU 7.2 with its own modules and
// firmware.
func (e Env) QEMU() string { return filepath.Join(e.Dir, "qemu72", "qemu-system-x86_64") }

// Xen is the hypervisor, unzipped, for QEMU's multiboot -kernel.
func (e Env) Xen() string { return filepath.Join(e.Dir, "xen.elf") }

// Kernel is the Debian kernel (a bzImage) for dom0 and for PVH domUs.
func (e Env) Kernel() string { return e.Path("/boot/vmlinuz-" + KernelVersion) }

// Busybox is the static busybox from busybox-static.
func (e Env) Busybox() string { return e.Path("/bin/busybox") }

// Path maps an absolute path of the unpacked packages (e.g.
// /usr/lib/xen-4.17/bin/xl) to the host file.
func (e Env) Path(p string) string { return filepath.Join(e.Dir, "root", p) }
