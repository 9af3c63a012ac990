package agent

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/vnsnap/vnsnap/cluster/clusterpb"
	"github.com/vnsnap/vnsnap/core"
	"github.com/vnsnap/vnsnap/vne"
	"github.com/vnsnap/vnsnap/vnet"
)

// Bounds on what a request may ask for. Everything in a request comes from
// the network and is checked against them before the agent acts.
const (
	MaxRequestID   = 64
	MaxPorts       = 256     // VMs (ports) per host
	MaxTunnels     = 256     // peer hosts
	MaxMemoryMiB   = 1 << 20 // 1 TiB
	MaxImageBytes  = 1 << 40 // one image, 1 TiB
	MaxChunk       = 1 << 20 // one ImageChunk's data
	MaxLeaseMillis = 10 * 60 * 1000
	MinLeaseMillis = 10
)

// invalid is the error of a request that breaks a rule: InvalidArgument,
// naming the field.
func invalid(field string, err error) error {
	return status.Errorf(codes.InvalidArgument, "%s: %v", field, err)
}

func invalidf(field, format string, args ...any) error {
	return invalid(field, fmt.Errorf(format, args...))
}

// checkCall checks a mutating call's request ID.
func checkCall(c *clusterpb.Call) error {
	if c == nil {
		return invalidf("call", "required")
	}
	id := c.RequestId
	if id == "" || len(id) > MaxRequestID {
		return invalidf("call.request_id", "want 1 to %d bytes, got %d", MaxRequestID, len(id))
	}
	for i := 0; i < len(id); i++ {
		b := id[i]
		if !(b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b == '-' || b == '_') {
			return invalidf("call.request_id", "%q holds %q (want letters, digits, - and _)", id, b)
		}
	}
	return nil
}

// checkVM checks a VM id (a core.VMID, never negative).
func checkVM(field string, vm int32) error {
	if vm < 0 {
		return invalidf(field, "vm %d is negative", vm)
	}
	return nil
}

// checkSnapshot checks a snapshot name: it names a directory of the
// state directory, so it follows the rules of a VNE name.
func checkSnapshot(field, s string) error {
	if err := vne.CheckVNEName(s); err != nil {
		return invalid(field, err)
	}
	return nil
}

func checkImageRef(field string, r *clusterpb.ImageRef) error {
	if r == nil {
		return invalidf(field, "required")
	}
	if err := checkSnapshot(field+".snapshot", r.Snapshot); err != nil {
		return err
	}
	if err := vne.CheckName("VM", r.Vm); err != nil {
		return invalid(field+".vm", err)
	}
	return nil
}

// checkUDPAddr parses an ip:port tunnel address (no host names: nothing
// from the network makes the agent resolve a name).
func checkUDPAddr(field, s string, zeroPort bool) (netip.AddrPort, error) {
	a, err := netip.ParseAddrPort(s)
	if err != nil {
		return a, invalid(field, err)
	}
	if a.Port() == 0 && !zeroPort {
		return a, invalidf(field, "%s: port 0", s)
	}
	if !a.Addr().IsValid() || a.Addr().IsUnspecified() && !zeroPort || a.Addr().IsMulticast() {
		return a, invalidf(field, "%s is not a unicast address", s)
	}
	return a, nil
}

// checkSetupHost checks a SetupHost request.
func checkSetupHost(r *clusterpb.SetupHostRequest) (core.Algorithm, error) {
	if r.SwitchId > vnet.MaxSwitchID {
		return 0, invalidf("switch_id", "%d above %d", r.SwitchId, vnet.MaxSwitchID)
	}
	alg, err := core.ParseAlgorithm(r.Algorithm)
	if err != nil {
		return 0, invalid("algorithm", err)
	}
	if r.TunnelAddr != "" {
		if _, err := checkUDPAddr("tunnel_addr", r.TunnelAddr, true); err != nil {
			return 0, err
		}
	}
	if len(r.Ports) > MaxPorts {
		return 0, invalidf("ports", "%d ports, at most %d", len(r.Ports), MaxPorts)
	}
	vms, names := map[int32]bool{}, map[string]bool{}
	for i, p := range r.Ports {
		f := fmt.Sprintf("ports[%d]", i)
		if p == nil {
			return 0, invalidf(f, "required")
		}
		if err := checkVM(f+".vm", p.Vm); err != nil {
			return 0, err
		}
		if err := vne.CheckName("VM", p.Name); err != nil {
			return 0, invalid(f+".name", err)
		}
		if vms[p.Vm] || names[p.Name] {
			return 0, invalidf(f, "vm %d (%s) given twice", p.Vm, p.Name)
		}
		vms[p.Vm], names[p.Name] = true, true
	}
	return alg, nil
}

// checkTunnels checks an AddTunnels request.
func checkTunnels(r *clusterpb.AddTunnelsRequest) ([]netip.AddrPort, error) {
	if len(r.Tunnels) > MaxTunnels {
		return nil, invalidf("tunnels", "%d tunnels, at most %d", len(r.Tunnels), MaxTunnels)
	}
	var addrs []netip.AddrPort
	for i, t := range r.Tunnels {
		f := fmt.Sprintf("tunnels[%d]", i)
		if t == nil {
			return nil, invalidf(f, "required")
		}
		if err := vne.CheckName("host", t.Name); err != nil {
			return nil, invalid(f+".name", err)
		}
		a, err := checkUDPAddr(f+".addr", t.Addr, false)
		if err != nil {
			return nil, err
		}
		addrs = append(addrs, a)
	}
	return addrs, nil
}

// checkSpec checks a machine spec; kernel and initrd must be regular files
// under one of roots (after symbolic links are followed), so no request
// makes a guest load an arbitrary host file.
func checkSpec(s *clusterpb.MachineSpec, roots []string) error {
	if s == nil {
		return invalidf("spec", "required")
	}
	if err := checkVM("spec.vm", s.Vm); err != nil {
		return err
	}
	if err := vne.CheckName("VM", s.Name); err != nil {
		return invalid("spec.name", err)
	}
	if s.MemoryMib <= 0 || s.MemoryMib > MaxMemoryMiB {
		return invalidf("spec.memory_mib", "%d outside [1, %d]", s.MemoryMib, MaxMemoryMiB)
	}
	if err := vne.CheckVCPUs(int(s.Vcpus)); err != nil {
		return invalid("spec.vcpus", err)
	}
	if _, err := vne.ParseMAC(s.Mac); err != nil {
		return invalid("spec.mac", err)
	}
	if err := vne.CheckCmdline(s.Append); err != nil {
		return invalid("spec.append", err)
	}
	for _, f := range []struct{ field, path string }{{"spec.kernel", s.Kernel}, {"spec.initrd", s.Initrd}} {
		if err := underRoots(f.path, roots); err != nil {
			return invalid(f.field, err)
		}
	}
	return nil
}

// underRoots reports whether p is a regular file in one of roots, after
// every symbolic link is resolved.
func underRoots(p string, roots []string) error {
	if err := vne.CheckFile(p); err != nil {
		return err
	}
	real, err := filepath.EvalSymlinks(p)
	if err != nil {
		return err
	}
	for _, r := range roots {
		rr, err := filepath.EvalSymlinks(r)
		if err != nil {
			continue
		}
		if rel, err := filepath.Rel(rr, real); err == nil && rel != ".." && !strings.HasPrefix(rel, "../") && !filepath.IsAbs(rel) {
			return nil
		}
	}
	return fmt.Errorf("%q is not under the agent's image directories %v", p, roots)
}

func checkLease(r *clusterpb.LeaseRequest) error {
	if err := checkSnapshot("snapshot", r.Snapshot); err != nil {
		return err
	}
	if r.TtlMillis < MinLeaseMillis || r.TtlMillis > MaxLeaseMillis {
		return invalidf("ttl_millis", "%d outside [%d, %d]", r.TtlMillis, MinLeaseMillis, MaxLeaseMillis)
	}
	return nil
}

// checkChunk checks one PutImage chunk against the transfer's header.
func checkChunk(c *clusterpb.ImageChunk, first bool) error {
	if first {
		if err := checkImageRef("image", c.Image); err != nil {
			return err
		}
		if c.Size < 0 || c.Size > MaxImageBytes {
			return invalidf("size", "%d outside [0, %d]", c.Size, MaxImageBytes)
		}
		if err := checkSHA256(c.Sha256); err != nil {
			return invalid("sha256", err)
		}
	}
	if c.Offset < 0 || c.Offset > MaxImageBytes {
		return invalidf("offset", "%d outside [0, %d]", c.Offset, MaxImageBytes)
	}
	if len(c.Data) > MaxChunk {
		return invalidf("data", "%d bytes, at most %d", len(c.Data), MaxChunk)
	}
	return nil
}

func checkSHA256(s string) error {
	if len(s) != 64 {
		return fmt.Errorf("want 64 hex digits, got %d bytes", len(s))
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return fmt.Errorf("%q is not lower-case hex", s)
		}
	}
	return nil
}
