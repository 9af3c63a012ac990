package vne

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"regexp"
	"strings"
)

var (
	vneName  = regexp.MustCompile(`^[a-z0-9-]+$`)
	itemName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)
)

// Validate checks the whole VNE and returns every problem found, joined
// with errors.Join and ordered by line; each is an *Error naming the line
// (when the VNE came from a file) and the field. It reads the file system
// to check that guest files exist. It returns nil if the VNE is valid.
func (v *VNE) Validate() error {
	if errs := v.problems(); len(errs) > 0 {
		return joinSorted(errs)
	}
	return nil
}

// checker collects problems, naming each by field path and the line that
// field, or its nearest enclosing one, came from.
type checker struct {
	v    *VNE
	errs []*Error
}

func (c *checker) errorf(path, format string, args ...any) {
	c.errs = append(c.errs, &Error{File: c.v.File, Line: c.v.line(path), Field: path, Msg: fmt.Sprintf(format, args...)})
}

// line returns the line of path, or of its nearest recorded parent.
func (v *VNE) line(path string) int {
	for {
		if l, ok := v.lines[path]; ok {
			return l
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			return v.lines[""]
		}
		path = path[:i]
	}
}

// where names another field in a message: "vms[0].name at line 5", or
// just the path when the line is unknown.
func (v *VNE) where(path string) string {
	if l := v.line(path); l > 0 {
		return fmt.Sprintf("%s at line %d", path, l)
	}
	return path
}

// ok reports whether path decoded cleanly, so a problem already reported
// for it is not reported again in another form.
func (v *VNE) ok(path string) bool { return !v.bad[path] }

// unique reports the second and later uses of a value among items.
type unique struct {
	c     *checker
	what  string
	first map[string]string // value -> path of its first use
}

func (c *checker) unique(what string) *unique {
	return &unique{c: c, what: what, first: map[string]string{}}
}

// add records value at path and reports whether it was new.
func (u *unique) add(value, path string) bool {
	if first, ok := u.first[value]; ok {
		u.c.errorf(path, "duplicate %s %s (also %s)", u.what, value, u.c.v.where(first))
		return false
	}
	u.first[value] = path
	return true
}

func (v *VNE) problems() []*Error {
	c := &checker{v: v}
	switch {
	case v.Name == "" && v.ok("name"):
		c.errorf("name", "required")
	case v.Name != "" && !vneName.MatchString(v.Name):
		c.errorf("name", "%q is not a valid VNE name (want lower-case letters, digits and -)", v.Name)
	}
	c.hosts()
	c.networks()
	c.vms()
	return c.errs
}

func (c *checker) name(path, what, name string) bool {
	switch {
	case name == "" && c.v.ok(path):
		c.errorf(path, "required")
	case name != "" && !itemName.MatchString(name):
		c.errorf(path, "%q is not a valid %s name (want letters, digits, ., _ and -, not starting with . _ or -)", name, what)
	default:
		return name != ""
	}
	return false
}

func (c *checker) hosts() {
	v := c.v
	if len(v.Hosts) == 0 && v.ok("hosts") {
		c.errorf("hosts", "at least one host is required")
	}
	names := c.unique("host name")
	for i, h := range v.Hosts {
		p := fmt.Sprintf("hosts[%d]", i)
		if c.name(p+".name", "host", h.Name) {
			names.add(fmt.Sprintf("%q", h.Name), p+".name")
		}
		if h.Address != "" {
			if err := checkAddress(h.Address); err != nil {
				c.errorf(p+".address", "%v", err)
			}
		}
		if h.RAMBudget < 0 {
			c.errorf(p+".ram_budget", "must not be negative")
		}
	}
}

// checkAddress accepts an IP address or host:port with a numeric port.
func checkAddress(s string) error {
	if _, err := netip.ParseAddr(s); err == nil {
		return nil
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil || host == "" {
		return fmt.Errorf("%q is not an IP address or host:port", s)
	}
	var n int
	if _, err := fmt.Sscanf(port, "%d", &n); err != nil || fmt.Sprint(n) != port || n < 1 || n > 65535 {
		return fmt.Errorf("%q has a bad port (want 1..65535)", s)
	}
	return nil
}

func (c *checker) networks() {
	v := c.v
	names := c.unique("network name")
	for i, nw := range v.Networks {
		p := fmt.Sprintf("networks[%d]", i)
		if c.name(p+".name", "network", nw.Name) {
			names.add(fmt.Sprintf("%q", nw.Name), p+".name")
		}
		sp := p + ".subnet"
		switch {
		case !nw.Subnet.IsValid():
			if v.ok(sp) {
				c.errorf(sp, "required")
			}
			continue
		case nw.Subnet != nw.Subnet.Masked():
			c.errorf(sp, "%s has host bits set (want %s)", nw.Subnet, nw.Subnet.Masked())
			continue
		}
		for j := range i {
			o := v.Networks[j].Subnet
			if o.IsValid() && o == o.Masked() && o.Overlaps(nw.Subnet) {
				c.errorf(sp, "%s overlaps %s (%s)", nw.Subnet, o, v.where(fmt.Sprintf("networks[%d].subnet", j)))
			}
		}
	}
}

func (c *checker) vms() {
	v := c.v
	if len(v.VMs) == 0 && v.ok("vms") {
		c.errorf("vms", "at least one VM is required")
	}
	names := c.unique("VM name")
	macs := c.unique("MAC")
	ips := c.unique("IP")
	for i := range v.VMs {
		vm := &v.VMs[i]
		p := fmt.Sprintf("vms[%d]", i)
		dupName := false
		if c.name(p+".name", "VM", vm.Name) {
			dupName = !names.add(fmt.Sprintf("%q", vm.Name), p+".name")
		}
		c.vmHost(p, vm)
		c.memory(p, vm)
		if vm.VCPUs < 1 || vm.VCPUs > MaxVCPUs {
			if v.ok(p + ".vcpus") {
				c.errorf(p+".vcpus", "%d is out of range (want 1..%d)", vm.VCPUs, MaxVCPUs)
			}
		}
		_, given := v.lines[p+".mac"]
		// A generated MAC repeats exactly when the name does, which is
		// already reported.
		if c.mac(p, vm) && (given || !dupName) {
			macs.add(vm.MAC.String(), p+".mac")
		}
		nw := c.vmNetwork(p, vm)
		if c.ip(p, vm, nw) {
			ips.add(vm.IP.String(), p+".ip")
		}
		c.guest(p+".guest", vm.Guest)
	}
}

func (c *checker) vmHost(p string, vm *VM) {
	switch {
	case vm.Host == "" && c.v.ok(p+".host"):
		c.errorf(p+".host", "required")
	case vm.Host != "" && c.v.Host(vm.Host) == nil && c.v.ok("hosts") && len(c.v.Hosts) > 0:
		var names []string
		for _, h := range c.v.Hosts {
			names = append(names, fmt.Sprintf("%q", h.Name))
		}
		c.errorf(p+".host", "unknown host %q (hosts are %s)", vm.Host, strings.Join(names, ", "))
	}
}

func (c *checker) memory(p string, vm *VM) {
	mp := p + ".memory"
	switch {
	case !c.v.ok(mp):
	case vm.Memory == 0:
		c.errorf(mp, "required")
	case vm.Memory < MinMemory:
		c.errorf(mp, "%d bytes is less than the minimum 16MiB", vm.Memory)
	case vm.Memory%PageSize != 0:
		c.errorf(mp, "%d bytes is not a multiple of the 4KiB page size", vm.Memory)
	}
}

// mac checks the VM's MAC and reports whether it can take part in the
// uniqueness check.
func (c *checker) mac(p string, vm *VM) bool {
	mp := p + ".mac"
	switch {
	case vm.MAC == nil:
		if c.v.ok(mp) {
			c.errorf(mp, "required")
		}
		return false
	case len(vm.MAC) != 6:
		c.errorf(mp, "%s is not a 6-byte MAC address", vm.MAC)
	case vm.MAC[0]&1 != 0:
		c.errorf(mp, "%s is a multicast address (want unicast: the lowest bit of the first byte clear)", vm.MAC)
	case string(vm.MAC) == "\x00\x00\x00\x00\x00\x00":
		c.errorf(mp, "%s is not a usable address", vm.MAC)
	default:
		return true
	}
	return false
}

func (c *checker) vmNetwork(p string, vm *VM) *Network {
	np := p + ".network"
	switch {
	case vm.Network == "":
		if c.v.ok(np) {
			c.errorf(np, "required when there are several networks")
		}
		return nil
	case c.v.Network(vm.Network) == nil:
		c.errorf(np, "unknown network %q", vm.Network)
		return nil
	}
	return c.v.Network(vm.Network)
}

// ip checks the VM's IP against its network and reports whether it can
// take part in the uniqueness check.
func (c *checker) ip(p string, vm *VM, nw *Network) bool {
	ip := p + ".ip"
	if !vm.IP.IsValid() {
		return false
	}
	if nw == nil || !nw.Subnet.IsValid() {
		return true
	}
	s := nw.Subnet
	if bits, ok := c.v.ipBits[ip]; ok && bits != s.Bits() {
		c.errorf(ip, "prefix length /%d does not match network %q subnet %s", bits, nw.Name, s)
		return false
	}
	switch {
	case !s.Contains(vm.IP):
		c.errorf(ip, "%s is outside network %q subnet %s", vm.IP, nw.Name, s)
	case vm.IP == s.Addr() && s.Bits() < s.Addr().BitLen()-1:
		c.errorf(ip, "%s is the network address of %s", vm.IP, s)
	case vm.IP.Is4() && s.Bits() < 31 && vm.IP == lastAddr(s):
		c.errorf(ip, "%s is the broadcast address of %s", vm.IP, s)
	default:
		return true
	}
	return false
}

// lastAddr returns the highest address of an IPv4 prefix.
func lastAddr(s netip.Prefix) netip.Addr {
	a := s.Addr().As4()
	host := uint32(1)<<(32-s.Bits()) - 1
	n := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	n |= host
	return netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)})
}

func (c *checker) guest(p string, g Guest) {
	if !c.v.ok(p) {
		return
	}
	ks := g.kinds()
	switch len(ks) {
	case 0:
		c.errorf(p, "no guest given (want exactly one of builtin, kernel or disk)")
		return
	case 1:
	default:
		names := make([]string, len(ks))
		for i, k := range ks {
			names[i] = k.String()
		}
		c.errorf(p, "sets %s (want exactly one of builtin, kernel or disk)", strings.Join(names, " and "))
		return
	}
	switch ks[0] {
	case BuiltinGuest:
		if g.Builtin == "" {
			c.errorf(p+".builtin", "required with args")
			return
		}
		for _, b := range Builtins() {
			if b == g.Builtin {
				return
			}
		}
		c.errorf(p+".builtin", "unknown program %q (want one of %s)", g.Builtin, strings.Join(Builtins(), ", "))
	case KernelGuest:
		if g.Kernel == "" {
			if c.v.ok(p + ".kernel") {
				c.errorf(p+".kernel", "required with initrd or cmdline")
			}
		} else {
			c.file(p+".kernel", g.Kernel)
		}
		if g.Initrd != "" {
			c.file(p+".initrd", g.Initrd)
		}
	case DiskGuest:
		c.file(p+".disk", g.Disk)
	default:
		panic(fmt.Sprintf("vne: unknown guest kind %v", ks[0]))
	}
}

// file reports path unless it names a regular file.
func (c *checker) file(p, path string) {
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		c.errorf(p, "%s does not exist", path)
	case err != nil:
		c.errorf(p, "%v", err)
	case !fi.Mode().IsRegular():
		c.errorf(p, "%s is not a regular file", path)
	}
}
