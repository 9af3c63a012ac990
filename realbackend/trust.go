package realbackend

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/vnsnap/vnsnap/qemubackend/guestimg"
	"github.com/vnsnap/vnsnap/vne"
)

// MaxLayoutSize is the largest layout.json DecodeLayout accepts.
const MaxLayoutSize = 16 << 20

// machineType is what a QEMU machine type name looks like
// (pc-i440fx-10.0, q35).
var machineType = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]*$`)

// Check validates the layout with the rules of a VNE file (package vne):
// the VNE, host and VM names, unique host and VM names, host addresses and
// budgets, each VM's host index, memory, vCPUs, machine type, MAC (unique,
// in canonical form), kernel command line, and the form of its file paths
// (absolute and clean). It does not look at the file system; Restore's
// policy (trustLayout) does. Every problem is reported, each naming the
// field ("layout: vms[1] (b).mac: ...").
func (l *Layout) Check() error {
	var errs []error
	bad := func(field string, err error) {
		if err != nil {
			errs = append(errs, fmt.Errorf("layout: %s: %w", field, err))
		}
	}
	bad("name", vne.CheckVNEName(l.Name))
	if len(l.Hosts) == 0 {
		bad("hosts", errors.New("at least one host is required"))
	}
	if len(l.VMs) == 0 {
		bad("vms", errors.New("at least one VM is required"))
	}
	hosts := make(map[string]bool, len(l.Hosts))
	for i, h := range l.Hosts {
		p := fmt.Sprintf("hosts[%d]", i)
		if err := vne.CheckName("host", h.Name); err != nil {
			bad(p+".name", err)
		} else if hosts[h.Name] {
			bad(p+".name", fmt.Errorf("duplicate host name %q", h.Name))
		}
		hosts[h.Name] = true
		bad(p+".address", vne.CheckAddress(h.Address))
		bad(p+".ram_budget", vne.CheckRAMBudget(h.RAMBudget))
	}
	vms := make(map[string]bool, len(l.VMs))
	macs := make(map[string]bool, len(l.VMs))
	for i, vm := range l.VMs {
		p := fmt.Sprintf("vms[%d]", i)
		if err := vne.CheckName("VM", vm.Name); err != nil {
			bad(p+".name", err)
		} else {
			p = fmt.Sprintf("vms[%d] (%s)", i, vm.Name)
			if vms[vm.Name] {
				bad(p+".name", fmt.Errorf("duplicate VM name %q", vm.Name))
			}
		}
		vms[vm.Name] = true
		if vm.Host < 0 || vm.Host >= len(l.Hosts) {
			bad(p+".host", fmt.Errorf("host index %d out of range (%d hosts)", vm.Host, len(l.Hosts)))
		}
		if vm.MemoryMiB <= 0 || int64(vm.MemoryMiB) > vne.MaxMemory>>20 {
			bad(p+".memory_mib", fmt.Errorf("%d MiB is out of range (want %d..%d)", vm.MemoryMiB, vne.MinMemory>>20, vne.MaxMemory>>20))
		} else {
			bad(p+".memory_mib", vne.CheckMemory(int64(vm.MemoryMiB)<<20))
		}
		bad(p+".vcpus", vne.CheckVCPUs(vm.VCPUs))
		if vm.Machine != "" && (!machineType.MatchString(vm.Machine) || len(vm.Machine) > 64) {
			bad(p+".machine", fmt.Errorf("%q is not a machine type", vm.Machine))
		}
		if mac, err := vne.ParseMAC(vm.MAC); err != nil {
			bad(p+".mac", err)
		} else if s := mac.String(); macs[s] {
			bad(p+".mac", fmt.Errorf("duplicate MAC %s", s))
		} else {
			macs[s] = true
		}
		for _, f := range []struct{ name, path string }{{"kernel", vm.Kernel}, {"initrd", vm.Initrd}, {"disk", vm.Disk}} {
			if f.path != "" {
				bad(p+"."+f.name, vne.CheckPath(f.path))
			}
		}
		if vm.Kernel == "" && (vm.Initrd != "" || vm.Append != "") {
			bad(p+".kernel", errors.New("required with initrd or append"))
		}
		if vm.Kernel == "" && vm.Disk == "" {
			bad(p, errors.New("neither kernel nor disk: nothing to boot"))
		}
		bad(p+".append", vne.CheckCmdline(vm.Append))
	}
	return errors.Join(errs...)
}

// DecodeLayout decodes a layout.json as Snapshot stores it and checks it
// (Layout.Check). It is strict: at most MaxLayoutSize bytes, one JSON
// object, no unknown fields. A layout read from a store is untrusted: its
// checksums prove integrity, not authorship.
func DecodeLayout(b []byte) (*Layout, error) {
	if len(b) > MaxLayoutSize {
		return nil, fmt.Errorf("layout.json: %d bytes is more than the limit of %d", len(b), MaxLayoutSize)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var l Layout
	if err := dec.Decode(&l); err != nil {
		return nil, fmt.Errorf("layout.json: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("layout.json: data after the layout object")
	}
	if err := l.Check(); err != nil {
		return nil, err
	}
	return &l, nil
}

// restoreDisk is the name of a disk image a snapshot may run on: the boot
// overlay, an image frozen at a snapshot point, or a restore's overlay,
// always inside the state directory and named after the VM.
var restoreDisk = regexp.MustCompile(`^(.+)\.(?:boot(?:-[0-9]+)?|e[0-9]+(?:-[0-9]+)?|restore-e[0-9]+-[0-9]+)\.([a-z0-9]+)$`)

// trustLayout applies Restore's policy to a checked layout from a store
// and returns the layout to run: the QEMU configuration comes from this
// machine wherever it can, and what must come from the snapshot is
// confined (see "Restoring untrusted snapshots" in doc.go).
func trustLayout(l *Layout, o Options) (*Layout, error) {
	if err := l.Check(); err != nil {
		return nil, err
	}
	if o.Hypervisor == nil {
		return nil, errors.New("restore needs a hypervisor (Options.Hypervisor)")
	}
	t := *l
	t.Hosts = append([]HostLayout(nil), l.Hosts...)
	t.VMs = append([]VMLayout(nil), l.VMs...)
	dir, err := filepath.Abs(o.Dir)
	if err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	var errs []error
	for i := range t.VMs {
		vm := &t.VMs[i]
		p := fmt.Sprintf("layout: vms[%d] (%s)", i, vm.Name)
		if err := trustVM(vm, o, dir); err != nil {
			errs = append(errs, fmt.Errorf("%s%w", p, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return &t, nil
}

// trustVM confines one VM of a snapshot's layout; errors start with the
// field (".kernel: ...").
func trustVM(vm *VMLayout, o Options, dir string) error {
	if in := o.Hypervisor.Info(); vm.Machine != "" && vm.Machine != in.Machine {
		return fmt.Errorf(".machine: snapshot needs %q, this %s pins %q", vm.Machine, in.Name, in.Machine)
	}
	vm.MAC = strings.ToLower(vm.MAC) // canonical form (Check parsed it)
	switch {
	case vm.Heartbeat:
		// A built-in guest: this machine's built-in image, and a command
		// line in exactly the form the image takes.
		if o.Image.Kernel == "" {
			return errors.New(": a built-in guest needs the built-in guest image (Options.Image)")
		}
		vm.Kernel, vm.Initrd = o.Image.Kernel, o.Image.Initrd
		if err := checkBuiltinArgs(vm.Append, vm.MAC); err != nil {
			return fmt.Errorf(".append: %w", err)
		}
	case vm.Kernel != "":
		// The user's kernel: its files and command line are those of the
		// VM of the same name in the VNE file the user runs.
		if o.VNE == nil {
			return errors.New(": restoring a guest with its own kernel needs the VNE file that describes it (Options.VNE)")
		}
		u := o.VNE.VM(vm.Name)
		if u == nil || u.Guest.Kind() != vne.KernelGuest {
			return fmt.Errorf(": %s has no kernel guest of that name", o.VNE.File)
		}
		if vm.Append != u.Guest.Cmdline {
			return fmt.Errorf(".append: %q is not the command line of VM %s in %s (%q)", vm.Append, vm.Name, o.VNE.File, u.Guest.Cmdline)
		}
		vm.Kernel, vm.Initrd = u.Guest.Kernel, u.Guest.Initrd
		for _, f := range []struct{ name, path string }{{"kernel", vm.Kernel}, {"initrd", vm.Initrd}} {
			if f.path != "" {
				if err := vne.CheckFile(f.path); err != nil {
					return fmt.Errorf(".%s (from %s): %w", f.name, o.VNE.File, err)
				}
			}
		}
	}
	if vm.Disk != "" {
		if err := checkRestoreDisk(vm.Disk, vm.Name, dir, o.Hypervisor); err != nil {
			return fmt.Errorf(".disk: %w", err)
		}
	}
	return nil
}

// checkBuiltinArgs accepts only the kernel command lines LayoutOf gives a
// built-in guest: the image's fixed parameters, the VM's own MAC, an
// address, and built-in programs whose arguments pass vne.CheckArg.
func checkBuiltinArgs(s, mac string) error {
	ip, m, progs, err := guestimg.ParseKernelArgs(s)
	if err != nil {
		return err
	}
	if ip != "" {
		if _, err := netip.ParsePrefix(ip); err != nil {
			return fmt.Errorf("vnsnap.ip=%q is not an address with prefix length", ip)
		}
	}
	if m != "" && m != mac {
		return fmt.Errorf("vnsnap.mac=%q is not the VM's MAC %s", m, mac)
	}
	for _, p := range progs {
		if p.Name != "heartbeat" {
			if err := vne.CheckBuiltin(p.Name); err != nil {
				return fmt.Errorf("vnsnap.run: %w", err)
			}
		}
		for _, a := range p.Args {
			if err := vne.CheckArg(a); err != nil {
				return fmt.Errorf("vnsnap.run %s: %w", p.Name, err)
			}
		}
	}
	return nil
}

// checkRestoreDisk accepts a disk image only if it is a regular file (not
// a symbolic link) directly in the state directory dir, named after the VM
// as Boot, FreezeDisk or Restore name their images, in the hypervisor's
// disk format.
func checkRestoreDisk(p, vm, dir string, h Hypervisor) error {
	di, err := diskImages(h, vm)
	if err != nil {
		return err
	}
	ext := di.DiskFormat()
	if err := vne.CheckPath(p); err != nil {
		return err
	}
	if filepath.Dir(p) != dir {
		return fmt.Errorf("%s is not in the state directory %s", p, dir)
	}
	if m := restoreDisk.FindStringSubmatch(filepath.Base(p)); m == nil || m[1] != vm || m[2] != ext {
		return fmt.Errorf("%s is not an image of VM %s (want %s.boot.%s, %s.eN.%s or %s.restore-eN-M.%s, or boot-N, eN-M)", p, vm, vm, ext, vm, ext, vm, ext)
	}
	fi, err := os.Lstat(p)
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", p)
	}
	return nil
}

// file returns the path of a runtime file in the state directory: name
// (a VM or host name) followed by suffix. Names are validated before any
// file is placed (Layout.Check in BootLayout and Restore), so a name that
// does not pass vne.CheckName here is a broken invariant.
func (e *Env) file(name, suffix string) string {
	if err := vne.CheckName("file", name); err != nil {
		panic(fmt.Sprintf("realbackend: runtime file from an unchecked name: %v", err))
	}
	return filepath.Join(e.opts.Dir, name+suffix)
}
