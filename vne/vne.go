package vne

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"sort"

	"github.com/vnsnap/vnsnap/core"
	"github.com/vnsnap/vnsnap/internal/regfile"
)

// VNE is a parsed, defaulted description of a virtual networked environment:
// the hosts that run the VMs, the networks that join them and the VMs.
// Parse and Load return a VNE only when Validate finds no problem.
type VNE struct {
	// File is the name used in error messages (the path given to Load).
	File string
	// Name names the VNE; it matches [a-z0-9-]+.
	Name string
	// Algorithm is the default snapshot algorithm, or nil if unset.
	Algorithm *core.Algorithm
	// Sink is the default snapshot sink, or nil if unset.
	Sink *core.Sink
	// Hypervisor names the hypervisor that runs the VMs: one of
	// Hypervisors. Parse defaults it to DefaultHypervisor.
	Hypervisor string
	// Hosts lists the hosts in file order.
	Hosts []Host
	// Networks lists the networks in file order; never empty after Parse.
	Networks []Network
	// VMs lists the VMs in file order.
	VMs []VM

	// lines maps a field path ("vms[2].memory") to the line it came from.
	lines map[string]int
	// bad holds the field paths that failed to decode, so Validate does not
	// report a second, derived problem for them.
	bad map[string]bool
	// ipBits holds the prefix length written after a VM's IP
	// ("10.0.0.1/24"), keyed by field path, so Validate can check it
	// against the subnet.
	ipBits map[string]int
}

// Host is a machine that runs VMs and one virtual switch.
type Host struct {
	// Name is unique among the hosts.
	Name string
	// Address is where the host's switch tunnel listens: an IP address or
	// host:port. Parse defaults it to the IP of Agent when Agent is an IP
	// address, else to DefaultAddress.
	Address string
	// Agent is where the host's agent serves the coordinator (cluster
	// mode): host:port, see CheckAgent. Empty when the VNE runs in one
	// process; either every host names its agent or none does.
	Agent string
	// RAMBudget is the memory-sink budget in bytes; 0 means unset.
	RAMBudget int64
}

// Network is one virtual layer-2 network with an IPv4 or IPv6 subnet.
type Network struct {
	// Name is unique among the networks.
	Name string
	// Subnet is the network's prefix; it has no host bits set.
	Subnet netip.Prefix
}

// VM is one virtual machine of the VNE.
type VM struct {
	// Name is unique among the VMs.
	Name string
	// Host names the Host that runs the VM.
	Host string
	// Memory is the guest memory in bytes: a multiple of PageSize, at least
	// MinMemory.
	Memory int64
	// VCPUs is the number of virtual CPUs, 1..MaxVCPUs.
	VCPUs int
	// MAC is the VM's unicast MAC address; Parse defaults it to MACFor.
	MAC net.HardwareAddr
	// IP is the VM's address inside its network's subnet, or the zero Addr.
	IP netip.Addr
	// Network names the Network the VM's NIC joins; Parse defaults it when
	// there is exactly one network.
	Network string
	// Guest says what the VM boots.
	Guest Guest
}

// Guest says what a VM boots: exactly one of a built-in program, a kernel
// (with optional initramfs and command line) or a disk image.
type Guest struct {
	// Builtin names a program of the project's built-in image (see Builtins).
	Builtin string
	// Args are passed to the built-in program.
	Args []string
	// Kernel is the path of the user's kernel, made absolute by Parse.
	Kernel string
	// Initrd is the path of the user's initramfs, made absolute by Parse.
	Initrd string
	// Cmdline is the kernel command line.
	Cmdline string
	// Disk is the path of the user's disk image, made absolute by Parse:
	// the disk a disk guest boots from, or a kernel guest's disk (a Xen
	// PVH domU boots from a kernel, so its disk comes with one).
	Disk string
}

// GuestKind is the kind of a Guest.
type GuestKind uint8

// The guest kinds. NoGuest is also the kind of a Guest that sets more than
// one kind, which Validate rejects.
const (
	NoGuest GuestKind = iota
	BuiltinGuest
	KernelGuest
	DiskGuest
)

// String returns the field that selects the kind ("builtin", "kernel",
// "disk") or "none".
func (k GuestKind) String() string {
	switch k {
	case NoGuest:
		return "none"
	case BuiltinGuest:
		return "builtin"
	case KernelGuest:
		return "kernel"
	case DiskGuest:
		return "disk"
	default:
		panic(fmt.Sprintf("vne: unknown guest kind %d", uint8(k)))
	}
}

// kinds returns the kinds g selects, in the order builtin, kernel, disk.
// initrd and cmdline select the kernel kind too, so that a stray initrd is
// reported rather than ignored. A disk beside a kernel is the kernel
// guest's disk, not a kind of its own.
func (g Guest) kinds() []GuestKind {
	var ks []GuestKind
	if g.Builtin != "" || len(g.Args) > 0 {
		ks = append(ks, BuiltinGuest)
	}
	if g.Kernel != "" || g.Initrd != "" || g.Cmdline != "" {
		ks = append(ks, KernelGuest)
	}
	if g.Disk != "" && (len(ks) == 0 || ks[len(ks)-1] != KernelGuest) {
		ks = append(ks, DiskGuest)
	}
	return ks
}

// Kind returns the guest's kind, or NoGuest if it selects none or several.
func (g Guest) Kind() GuestKind {
	if ks := g.kinds(); len(ks) == 1 {
		return ks[0]
	}
	return NoGuest
}

// Limits and defaults of the format.
const (
	// PageSize is the granularity of VM memory.
	PageSize = 4 << 10
	// MinMemory is the smallest VM memory.
	MinMemory = 16 << 20
	// MaxVCPUs is the largest number of virtual CPUs of a VM.
	MaxVCPUs = 64
	// DefaultHypervisor is the hypervisor of a VNE file that names none.
	DefaultHypervisor = "qemu"
	// DefaultAddress is the host address used when a host gives none.
	DefaultAddress = "127.0.0.1"
	// DefaultNetwork names the network used when the file declares none.
	DefaultNetwork = "lan"
)

// DefaultSubnet returns the subnet of the default network, 10.0.0.0/24.
func DefaultSubnet() netip.Prefix { return netip.MustParsePrefix("10.0.0.0/24") }

// Builtins returns the names of the programs of the built-in guest image,
// sorted.
func Builtins() []string {
	return []string{"dirtier", "heartbeat", "idle", "npb", "swarm", "tcpstream"}
}

// MACFor returns the MAC address Parse gives a VM that declares none: the
// QEMU prefix 52:54:00 (locally administered, unicast) followed by three
// bytes of SHA-256 over the VNE and VM names. It depends on nothing else, so
// a VM keeps its MAC across runs and edits of the file.
func MACFor(vneName, vmName string) net.HardwareAddr {
	sum := sha256.Sum256([]byte(vneName + "\x00" + vmName))
	return net.HardwareAddr{0x52, 0x54, 0x00, sum[0], sum[1], sum[2]}
}

// VM returns the VM called name, or nil.
func (v *VNE) VM(name string) *VM {
	for i := range v.VMs {
		if v.VMs[i].Name == name {
			return &v.VMs[i]
		}
	}
	return nil
}

// Clustered reports whether the VNE runs in cluster mode: its hosts name
// their agents (Validate requires all or none).
func (v *VNE) Clustered() bool { return len(v.Hosts) > 0 && v.Hosts[0].Agent != "" }

// Host returns the host called name, or nil.
func (v *VNE) Host(name string) *Host {
	for i := range v.Hosts {
		if v.Hosts[i].Name == name {
			return &v.Hosts[i]
		}
	}
	return nil
}

// Network returns the network called name, or nil.
func (v *VNE) Network(name string) *Network {
	for i := range v.Networks {
		if v.Networks[i].Name == name {
			return &v.Networks[i]
		}
	}
	return nil
}

// Error is one problem in a VNE file. Parse, Load and Validate return them
// joined with errors.Join, ordered by line.
type Error struct {
	// File is the file name, or "" if unknown.
	File string
	// Line is the 1-based line, or 0 if unknown.
	Line int
	// Field is the path of the field ("vms[2].memory"), or "" for the file.
	Field string
	// Msg says what is wrong.
	Msg string
}

// Error formats the problem as "file:line: field: msg", leaving out the
// parts that are unknown.
func (e *Error) Error() string {
	s := e.File
	if e.Line > 0 {
		s += fmt.Sprintf(":%d", e.Line)
	}
	if e.Field != "" {
		if s != "" {
			s += ": "
		}
		s += e.Field
	}
	if s != "" {
		s += ": "
	}
	return s + e.Msg
}

// Load reads and parses the VNE file at path; relative guest paths are
// resolved against the file's directory and made absolute. It refuses a
// path that is not a regular file (a device, a FIFO, a directory) and a file
// larger than MaxFileSize, naming the file.
func Load(path string) (*VNE, error) {
	data, err := regfile.ReadFile(path, MaxFileSize)
	if err != nil {
		return nil, fmt.Errorf("load vne: %w", err)
	}
	return Parse(path, data, filepath.Dir(path))
}

// Parse decodes, defaults and validates a VNE file. name is used in error
// messages; relative guest paths are resolved against baseDir (itself made
// absolute against the working directory), so every path in the result is
// absolute and clean. Data larger than MaxFileSize is refused. On any
// problem it returns nil and every problem found, joined.
func Parse(name string, data []byte, baseDir string) (*VNE, error) {
	if len(data) > MaxFileSize {
		return nil, joinSorted([]*Error{{File: name, Msg: fmt.Sprintf("%d bytes is more than the limit of %d for a VNE file", len(data), MaxFileSize)}})
	}
	if abs, err := filepath.Abs(baseDir); err == nil {
		baseDir = abs
	}
	d := &decoder{v: &VNE{File: name, lines: map[string]int{}, bad: map[string]bool{}}, baseDir: baseDir}
	d.decode(data)
	if len(d.errs) > 0 && d.fatal {
		return nil, joinSorted(d.errs)
	}
	d.v.applyDefaults()
	errs := append(d.errs, d.v.problems()...)
	if len(errs) > 0 {
		return nil, joinSorted(errs)
	}
	return d.v, nil
}

// applyDefaults fills in what the file may leave out.
func (v *VNE) applyDefaults() {
	if v.Hypervisor == "" && !v.bad["hypervisor"] {
		v.Hypervisor = DefaultHypervisor
	}
	for i := range v.Hosts {
		h := &v.Hosts[i]
		if h.Address == "" && !v.bad[fmt.Sprintf("hosts[%d].address", i)] {
			h.Address = DefaultAddress
			if ap, err := netip.ParseAddrPort(h.Agent); err == nil && ap.Addr().Zone() == "" {
				h.Address = ap.Addr().Unmap().String()
			}
		}
	}
	if len(v.Networks) == 0 && !v.bad["networks"] {
		v.Networks = []Network{{Name: DefaultNetwork, Subnet: DefaultSubnet()}}
	}
	for i := range v.VMs {
		vm := &v.VMs[i]
		if vm.MAC == nil && !v.bad[fmt.Sprintf("vms[%d].mac", i)] && vm.Name != "" {
			vm.MAC = MACFor(v.Name, vm.Name)
		}
		if _, given := v.lines[fmt.Sprintf("vms[%d].vcpus", i)]; !given && vm.VCPUs == 0 {
			vm.VCPUs = 1
		}
		if vm.Network == "" && len(v.Networks) == 1 {
			vm.Network = v.Networks[0].Name
		}
	}
}

// joinSorted orders the problems by line, then field, and joins them.
func joinSorted(errs []*Error) error {
	sort.SliceStable(errs, func(i, j int) bool {
		if errs[i].Line != errs[j].Line {
			return errs[i].Line < errs[j].Line
		}
		return errs[i].Field < errs[j].Field
	})
	es := make([]error, len(errs))
	for i, e := range errs {
		es[i] = e
	}
	return errors.Join(es...)
}

// Hypervisors lists the values of a VNE file's hypervisor field.
func Hypervisors() []string { return []string{"qemu", "xen"} }

// CheckHypervisor reports whether h is one of Hypervisors.
func CheckHypervisor(h string) error {
	for _, k := range Hypervisors() {
		if h == k {
			return nil
		}
	}
	return fmt.Errorf("unknown hypervisor %q (want qemu or xen)", h)
}
