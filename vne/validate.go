package vne

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"
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
	v       *VNE
	errs    []*Error
	hostIdx map[string]int
	netIdx  map[string]int
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
	if v.Name != "" || v.ok("name") {
		if err := CheckVNEName(v.Name); err != nil {
			c.errorf("name", "%v", err)
		}
	}
	c.index()
	c.hosts()
	c.networks()
	c.vms()
	return c.errs
}

func (c *checker) name(path, what, name string) bool {
	if name == "" && !c.v.ok(path) {
		return false
	}
	if err := CheckName(what, name); err != nil {
		c.errorf(path, "%v", err)
		return false
	}
	return true
}

// index maps host and network names to their first entry, so that the
// checks of every VM look them up in constant time: validation stays
// linear in the size of the VNE.
func (c *checker) index() {
	c.hostIdx = make(map[string]int, len(c.v.Hosts))
	for i := len(c.v.Hosts) - 1; i >= 0; i-- {
		c.hostIdx[c.v.Hosts[i].Name] = i
	}
	c.netIdx = make(map[string]int, len(c.v.Networks))
	for i := len(c.v.Networks) - 1; i >= 0; i-- {
		c.netIdx[c.v.Networks[i].Name] = i
	}
}

func (c *checker) hosts() {
	v := c.v
	if len(v.Hosts) == 0 && v.ok("hosts") {
		c.errorf("hosts", "at least one host is required")
	}
	names := c.unique("host name")
	agents := c.unique("agent")
	clustered := -1 // index of the first host that names its agent
	for i, h := range v.Hosts {
		if h.Agent != "" || !v.ok(fmt.Sprintf("hosts[%d].agent", i)) {
			clustered = i
			break
		}
	}
	for i, h := range v.Hosts {
		p := fmt.Sprintf("hosts[%d]", i)
		if c.name(p+".name", "host", h.Name) {
			names.add(fmt.Sprintf("%q", h.Name), p+".name")
		}
		switch {
		case h.Agent != "":
			if err := CheckAgent(h.Agent); err != nil {
				c.errorf(p+".agent", "%v", err)
			} else {
				agents.add(fmt.Sprintf("%q", h.Agent), p+".agent")
			}
		case clustered >= 0 && v.ok(p+".agent"):
			c.errorf(p+".agent", "required: hosts[%d] names its agent, so every host must (cluster mode)", clustered)
		}
		if h.Address != "" {
			if err := CheckAddress(h.Address); err != nil {
				c.errorf(p+".address", "%v", err)
			}
		}
		if err := CheckRAMBudget(h.RAMBudget); err != nil {
			c.errorf(p+".ram_budget", "%v", err)
		}
	}
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
	}
	c.overlaps()
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
		if err := CheckVCPUs(vm.VCPUs); err != nil && v.ok(p+".vcpus") {
			c.errorf(p+".vcpus", "%v", err)
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
	case vm.Host != "" && !c.knownHost(vm.Host) && c.v.ok("hosts") && len(c.v.Hosts) > 0:
		var names []string
		for i, h := range c.v.Hosts {
			if i == 8 {
				names = append(names, fmt.Sprintf("... (%d in all)", len(c.v.Hosts)))
				break
			}
			names = append(names, fmt.Sprintf("%q", h.Name))
		}
		c.errorf(p+".host", "unknown host %q (hosts are %s)", vm.Host, strings.Join(names, ", "))
	}
}

func (c *checker) knownHost(name string) bool {
	_, ok := c.hostIdx[name]
	return ok
}

func (c *checker) memory(p string, vm *VM) {
	mp := p + ".memory"
	if !c.v.ok(mp) {
		return
	}
	if err := CheckMemory(vm.Memory); err != nil {
		c.errorf(mp, "%v", err)
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
	default:
		if err := CheckMAC(vm.MAC); err != nil {
			c.errorf(mp, "%v", err)
			return false
		}
		return true
	}
}

func (c *checker) vmNetwork(p string, vm *VM) *Network {
	np := p + ".network"
	switch {
	case vm.Network == "":
		if c.v.ok(np) {
			c.errorf(np, "required when there are several networks")
		}
		return nil
	}
	i, ok := c.netIdx[vm.Network]
	if !ok {
		c.errorf(np, "unknown network %q", vm.Network)
		return nil
	}
	return &c.v.Networks[i]
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
		} else if err := CheckBuiltin(g.Builtin); err != nil {
			c.errorf(p+".builtin", "%v", err)
		}
		for i, a := range g.Args {
			if err := CheckArg(a); err != nil {
				c.errorf(fmt.Sprintf("%s.args[%d]", p, i), "%v", err)
			}
		}
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
		if err := CheckCmdline(g.Cmdline); err != nil {
			c.errorf(p+".cmdline", "%v", err)
		}
		if g.Disk != "" {
			c.file(p+".disk", g.Disk)
		}
	case DiskGuest:
		c.file(p+".disk", g.Disk)
	default:
		panic(fmt.Sprintf("vne: unknown guest kind %v", ks[0]))
	}
}

// file reports path unless it names a regular file.
func (c *checker) file(p, path string) {
	if err := CheckFile(path); err != nil {
		c.errorf(p, "%v", err)
	}
}

// overlaps reports every subnet that overlaps one earlier in the file. Two
// prefixes overlap exactly when one contains the other, so after sorting
// by first address (shorter prefixes first) a subnet overlaps an earlier
// one if and only if it starts before the end of the widest one seen so
// far: one sort and one sweep, O(n log n), instead of all pairs.
func (c *checker) overlaps() {
	v := c.v
	var idx []int
	for i, nw := range v.Networks {
		if s := nw.Subnet; s.IsValid() && s == s.Masked() {
			idx = append(idx, i)
		}
	}
	sort.Slice(idx, func(a, b int) bool {
		x, y := v.Networks[idx[a]].Subnet, v.Networks[idx[b]].Subnet
		if c := x.Addr().Compare(y.Addr()); c != 0 {
			return c < 0
		}
		if x.Bits() != y.Bits() {
			return x.Bits() < y.Bits()
		}
		return idx[a] < idx[b]
	})
	cover := -1 // the network whose subnet ends last among those swept
	for _, i := range idx {
		s := v.Networks[i].Subnet
		if cover >= 0 {
			if o := v.Networks[cover].Subnet; o.Overlaps(s) {
				later, earlier := i, cover
				if later < earlier {
					later, earlier = earlier, later
				}
				ls, es := v.Networks[later].Subnet, v.Networks[earlier].Subnet
				c.errorf(fmt.Sprintf("networks[%d].subnet", later), "%s overlaps %s (%s)", ls, es,
					v.where(fmt.Sprintf("networks[%d].subnet", earlier)))
				continue
			}
		}
		cover = i
	}
}
