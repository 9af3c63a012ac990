package xentest

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/cavaliergopher/cpio"
)

// Dom0Modules are the kernel modules dom0 loads, in this order (their
// dependencies first, from modules.dep): the event channel, grant table and
// privcmd devices and xenfs, which xenstored and xl need.
var Dom0Modules = []string{"xen-evtchn", "xen-gntdev", "xen-gntalloc", "xen-privcmd", "xenfs"}

// Dom0Programs are the Xen programs copied into dom0, at their Debian paths,
// with the shared libraries they need.
var Dom0Programs = []string{
	"/usr/lib/xen-4.17/bin/xl",
	"/usr/lib/xen-4.17/bin/libxl-save-helper",
	"/usr/lib/xen-4.17/bin/xenstored",
	"/usr/lib/xen-4.17/bin/xen-init-dom0",
	"/usr/lib/xen-4.17/bin/xenconsoled",
	"/usr/lib/xen-4.17/bin/xenconsole",
	"/usr/bin/xenstore",
	"/usr/bin/xenstore-read",
	"/usr/bin/xenstore-write",
	"/usr/bin/xenstore-ls",
}

// hostLibs are loaded with dlopen, so no DT_NEEDED names them: glibc
// unwinds through libgcc_s (xl aborts after every operation without it).
var hostLibs = []string{"libgcc_s.so.1"}

// libDirs is the loader's default search path on Debian amd64.
var libDirs = []string{"/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/lib", "/usr/lib"}

// File is a file put into an initramfs.
type File struct {
	// Path is the absolute path inside the guest.
	Path string
	// Mode holds the permission bits; 0 means 0o644 (0o755 if Src is
	// executable).
	Mode os.FileMode
	// Data is the content, used when Src is empty.
	Data []byte
	// Src is a host file to copy.
	Src string
}

// Dom0Config says what goes into a dom0 initramfs beyond the base system.
type Dom0Config struct {
	// Files are added as they are (a static test binary, a domU kernel...).
	Files []File
	// Script is the shell script (busybox sh) that init runs once xenstored,
	// xen-init-dom0 and xenconsoled are up; init then prints
	// "VNSNAP-XEN-DONE rc=N" with its exit status and reboots, which ends
	// QEMU (it runs with -no-reboot).
	Script string
	// Modules are extra kernel modules to load after Dom0Modules.
	Modules []string
}

// Markers printed by the dom0 init on the console.
const (
	// MarkerReady: the Xen daemons run; the script starts.
	MarkerReady = "VNSNAP-XEN-DOM0-READY"
	// MarkerDone: the script ended; the line goes on with " rc=N".
	MarkerDone = "VNSNAP-XEN-DONE"
	// MarkerFail: init could not bring dom0 up; the line says what failed.
	MarkerFail = "VNSNAP-XEN-FAIL"
)

// dom0Init is /init. It has no stdio until devtmpfs is mounted (the
// archive holds no device nodes), so it mounts that first.
const dom0Init = `#!/bin/busybox sh
/bin/busybox mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
/bin/busybox --install -s /bin
export PATH=/usr/lib/xen-4.17/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
fail() { echo "VNSNAP-XEN-FAIL $*"; sleep 2; reboot -f; }
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mkdir -p /dev/pts /dev/shm /run /var/run/xen /var/lib/xen /var/lib/xenstored /var/log/xen/console /tmp
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
ln -sf /proc/self/fd /dev/fd
hostname dom0
for m in $(cat /etc/modules); do insmod /lib/modules/$m.ko || fail "insmod $m"; done
mount -t xenfs xenfs /proc/xen || fail "mount xenfs"
xenstored --pid-file /run/xenstored.pid || fail xenstored
xen-init-dom0 || fail xen-init-dom0
xenconsoled --pid-file=/run/xenconsoled.pid --log=guest --log-dir=/var/log/xen/console || fail xenconsoled
echo "VNSNAP-XEN-DOM0-READY"
cd /root
sh /etc/vnsnap-test.sh
echo "VNSNAP-XEN-DONE rc=$?"
sleep 1
reboot -f
`

// BuildDom0Initrd writes the gzip'ed newc initramfs of dom0 to out and
// returns its size.
func BuildDom0Initrd(env Env, cfg Dom0Config, out string) (int64, error) {
	a, err := bootArchive(env, dom0Init, append(append([]string{}, Dom0Modules...), cfg.Modules...))
	if err != nil {
		return 0, fmt.Errorf("dom0 initramfs: %w", err)
	}
	a.add(File{Path: "/etc/vnsnap-test.sh", Data: []byte(cfg.Script), Mode: 0o755})
	a.add(File{Path: "/etc/xen/xl.conf", Src: env.Path("/etc/xen/xl.conf")})
	for _, p := range Dom0Programs {
		if err := a.addELF(p, env.Path(p)); err != nil {
			return 0, fmt.Errorf("dom0 initramfs: %w", err)
		}
	}
	for _, l := range hostLibs {
		if err := a.addLib(l, nil); err != nil {
			return 0, fmt.Errorf("dom0 initramfs: %w", err)
		}
	}
	for _, f := range cfg.Files {
		a.add(f)
	}
	n, err := a.write(out, []string{"/dev", "/proc", "/sys", "/tmp", "/root", "/var", "/sbin", "/usr/sbin"})
	if err != nil {
		return 0, fmt.Errorf("dom0 initramfs %s: %w", out, err)
	}
	return n, nil
}

// DomUInitrd returns a gzip'ed initramfs for a small PVH domU: busybox at
// /bin/busybox, the given /init script, and the kernel modules named (with
// their dependencies) as /lib/modules/NAME.ko, listed in load order in
// /etc/modules for init to insmod.
func DomUInitrd(env Env, init string, modules ...string) ([]byte, error) {
	a, err := bootArchive(env, init, modules)
	if err != nil {
		return nil, fmt.Errorf("domU initramfs: %w", err)
	}
	var buf bytes.Buffer
	if err := a.encode(&buf, []string{"/dev", "/proc", "/sys", "/tmp"}); err != nil {
		return nil, fmt.Errorf("domU initramfs: %w", err)
	}
	return buf.Bytes(), nil
}

// bootArchive starts the archive both initramfs kinds share: busybox at
// /bin/busybox, init as /init, and the kernel modules named (with their
// dependencies) as /lib/modules/NAME.ko, listed in load order in
// /etc/modules for init to insmod.
func bootArchive(env Env, init string, modules []string) (*archive, error) {
	a := newArchive(env)
	a.add(File{Path: "/bin/busybox", Src: env.Busybox(), Mode: 0o755})
	a.add(File{Path: "/init", Data: []byte(init), Mode: 0o755})
	mods, err := moduleOrder(env.Path("/lib/modules/"+KernelVersion), modules)
	if err != nil {
		return nil, err
	}
	var order strings.Builder
	for _, m := range mods {
		a.add(File{Path: "/lib/modules/" + m.name + ".ko", Src: m.file})
		order.WriteString(m.name + "\n")
	}
	a.add(File{Path: "/etc/modules", Data: []byte(order.String())})
	return a, nil
}

// archive collects the files of an initramfs by guest path.
type archive struct {
	env   Env
	files map[string]File
	err   error
}

func newArchive(env Env) *archive { return &archive{env: env, files: map[string]File{}} }

func (a *archive) add(f File) {
	if !path.IsAbs(f.Path) {
		a.err = errors.Join(a.err, fmt.Errorf("guest path %q is not absolute", f.Path))
		return
	}
	a.files[path.Clean(f.Path)] = f
}

// addELF adds the executable or library src at guest path p, its
// interpreter, and every shared library it needs, transitively.
func (a *archive) addELF(p, src string) error {
	if _, ok := a.files[p]; ok {
		return nil
	}
	a.add(File{Path: p, Src: src, Mode: 0o755})
	f, err := elf.Open(src)
	if err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type != elf.PT_INTERP {
			continue
		}
		b, err := io.ReadAll(prog.Open())
		if err != nil {
			return fmt.Errorf("%s: interpreter: %w", p, err)
		}
		interp := strings.TrimRight(string(b), "\x00")
		host, err := filepath.EvalSymlinks(interp)
		if err != nil {
			return fmt.Errorf("%s: interpreter %s: %w", p, interp, err)
		}
		a.add(File{Path: interp, Src: host, Mode: 0o755})
	}
	needed, err := f.ImportedLibraries()
	if err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	var runpath []string
	for _, tag := range []elf.DynTag{elf.DT_RUNPATH, elf.DT_RPATH} {
		vals, _ := f.DynString(tag)
		for _, v := range vals {
			for _, d := range strings.Split(v, ":") {
				runpath = append(runpath, strings.ReplaceAll(d, "$ORIGIN", path.Dir(p)))
			}
		}
	}
	for _, lib := range needed {
		if err := a.addLib(lib, runpath); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
	}
	return nil
}

// addLib finds the library soname the way the loader would, in the unpacked
// packages first and then on the host (glibc and the other system
// libraries), and adds it at the guest path it was found at.
func (a *archive) addLib(soname string, runpath []string) error {
	for _, d := range append(runpath, libDirs...) {
		p := path.Join(d, soname)
		if _, ok := a.files[p]; ok {
			return nil
		}
		for _, host := range []string{a.env.Path(p), p} {
			real, err := filepath.EvalSymlinks(host)
			if err != nil {
				continue
			}
			return a.addELF(p, real)
		}
	}
	return fmt.Errorf("shared library %s not found in %s or on the host", soname, a.env.Path("/"))
}

// write encodes the archive (with the extra directories dirs) into out,
// atomically, and returns its size.
func (a *archive) write(out string, dirs []string) (int64, error) {
	tmp, err := os.CreateTemp(filepath.Dir(out), ".initrd-*")
	if err != nil {
		return 0, err
	}
	defer os.Remove(tmp.Name())
	bw := bufio.NewWriter(tmp)
	if err := a.encode(bw, dirs); err != nil {
		tmp.Close()
		return 0, err
	}
	if err := bw.Flush(); err != nil {
		tmp.Close()
		return 0, err
	}
	st, err := tmp.Stat()
	if err != nil {
		tmp.Close()
		return 0, err
	}
	if err := tmp.Close(); err != nil {
		return 0, err
	}
	return st.Size(), os.Rename(tmp.Name(), out)
}

// encode writes the gzip'ed cpio: every parent directory first, then the
// files in sorted order, so equal inputs give equal archives.
func (a *archive) encode(w io.Writer, dirs []string) error {
	if a.err != nil {
		return a.err
	}
	dirSet := map[string]bool{}
	for _, d := range dirs {
		dirSet[d] = true
	}
	names := make([]string, 0, len(a.files))
	for p := range a.files {
		names = append(names, p)
		for d := path.Dir(p); d != "/"; d = path.Dir(d) {
			dirSet[d] = true
		}
	}
	sort.Strings(names)
	ds := make([]string, 0, len(dirSet))
	for d := range dirSet {
		ds = append(ds, d)
	}
	sort.Strings(ds) // a parent sorts before its children
	zw, err := gzip.NewWriterLevel(w, gzip.BestSpeed)
	if err != nil {
		return err
	}
	cw := cpio.NewWriter(zw)
	for _, d := range ds {
		if err := cw.WriteHeader(&cpio.Header{Name: d[1:], Mode: cpio.TypeDir | 0o755, Links: 2}); err != nil {
			return err
		}
	}
	for _, p := range names {
		f := a.files[p]
		data, mode := f.Data, f.Mode
		if f.Src != "" {
			if data, err = os.ReadFile(f.Src); err != nil {
				return err
			}
			if st, err := os.Stat(f.Src); err == nil && mode == 0 && st.Mode()&0o111 != 0 {
				mode = 0o755
			}
		}
		if mode == 0 {
			mode = 0o644
		}
		hdr := &cpio.Header{Name: p[1:], Mode: cpio.TypeReg | cpio.FileMode(mode.Perm()), Size: int64(len(data)), Links: 1}
		if err := cw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		if _, err := cw.Write(data); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
	}
	if err := cw.Close(); err != nil {
		return err
	}
	return zw.Close()
}

type module struct{ name, file string }

// moduleOrder resolves the modules wanted (names with - or _) against
// modDir/modules.dep and returns them with their dependencies, each after
// what it depends on. Built-in modules are left out.
func moduleOrder(modDir string, wanted []string) ([]module, error) {
	norm := func(s string) string { return strings.ReplaceAll(s, "-", "_") }
	dep, err := os.ReadFile(filepath.Join(modDir, "modules.dep"))
	if err != nil {
		return nil, err
	}
	builtin, _ := os.ReadFile(filepath.Join(modDir, "modules.builtin"))
	deps := map[string][]string{} // module name -> dependency names
	files := map[string]string{}  // module name -> file relative to modDir
	for _, line := range strings.Split(string(dep), "\n") {
		file, rest, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		name := modName(file)
		files[name] = file
		for _, d := range strings.Fields(rest) {
			deps[name] = append(deps[name], modName(d))
		}
	}
	isBuiltin := map[string]bool{}
	for _, line := range strings.Split(string(builtin), "\n") {
		if line != "" {
			isBuiltin[modName(line)] = true
		}
	}
	var out []module
	seen := map[string]bool{}
	var visit func(string) error
	visit = func(n string) error {
		if seen[n] {
			return nil
		}
		seen[n] = true
		file, ok := files[n]
		if !ok {
			if isBuiltin[n] {
				return nil
			}
			return fmt.Errorf("kernel module %s not in %s/modules.dep", n, modDir)
		}
		// modules.dep lists the deepest dependency last.
		ds := deps[n]
		for i := len(ds) - 1; i >= 0; i-- {
			if err := visit(ds[i]); err != nil {
				return err
			}
		}
		out = append(out, module{name: n, file: filepath.Join(modDir, file)})
		return nil
	}
	for _, w := range wanted {
		if err := visit(norm(w)); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// modName is the module name of a modules.dep path: the file name without
// .ko (or .ko.xz ...), with - as _.
func modName(file string) string {
	base := path.Base(strings.TrimSpace(file))
	if i := strings.Index(base, ".ko"); i >= 0 {
		base = base[:i]
	}
	return strings.ReplaceAll(base, "-", "_")
}
