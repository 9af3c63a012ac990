package vne

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/vnsnap/vnsnap/core"
)

var cmpOpts = []cmp.Option{
	cmpopts.IgnoreUnexported(VNE{}),
	cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
	cmp.Comparer(func(a, b netip.Prefix) bool { return a == b }),
}

func TestLoadExample(t *testing.T) {
	got, err := Load("testdata/example.yaml")
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	alg, sink := core.VNsnap, core.MemorySink
	want := &VNE{
		File:       "testdata/example.yaml",
		Name:       "lab",
		Algorithm:  &alg,
		Sink:       &sink,
		Hypervisor: "qemu",
		Hosts: []Host{
			{Name: "h1", Address: "127.0.0.1", RAMBudget: 4 << 30},
			{Name: "h2", Address: "127.0.0.1:7002"},
		},
		Networks: []Network{
			{Name: "lan", Subnet: netip.MustParsePrefix("10.0.0.0/24")},
			{Name: "back", Subnet: netip.MustParsePrefix("10.0.1.0/24")},
		},
		VMs: []VM{
			{
				Name: "vm1", Host: "h1", Memory: 256 << 20, VCPUs: 1,
				MAC: net.HardwareAddr{0x52, 0x54, 0, 0x12, 0x34, 0x01}, IP: netip.MustParseAddr("10.0.0.1"),
				Network: "lan", Guest: Guest{Builtin: "tcpstream", Args: []string{"-bytes=100MiB"}},
			},
			{
				Name: "vm2", Host: "h2", Memory: 512 << 20, VCPUs: 2,
				MAC: MACFor("lab", "vm2"), IP: netip.MustParseAddr("10.0.0.2"),
				Network: "lan", Guest: Guest{Builtin: "tcpstream"},
			},
			{
				Name: "vm3", Host: "h2", Memory: 128 << 20, VCPUs: 1,
				MAC: MACFor("lab", "vm3"), Network: "back", Guest: Guest{Builtin: "dirtier"},
			},
		},
	}
	if diff := cmp.Diff(want, got, cmpOpts...); diff != "" {
		t.Errorf("Load mismatch (-want +got):\n%s", diff)
	}
	if err := got.Validate(); err != nil {
		t.Errorf("Validate of loaded example: got %v, want nil", err)
	}
	if vm := got.VM("vm2"); vm == nil || vm.Host != "h2" {
		t.Errorf("VM(vm2): got %+v, want host h2", vm)
	}
	if got.VM("nope") != nil || got.Host("nope") != nil {
		t.Errorf("VM/Host of unknown name: want nil")
	}
	if h := got.Host("h1"); h == nil || h.RAMBudget != 4<<30 {
		t.Errorf("Host(h1): got %+v, want ram budget 4GiB", h)
	}
	if k := got.VMs[0].Guest.Kind(); k != BuiltinGuest {
		t.Errorf("Kind: got %v, want builtin", k)
	}
}

func TestDocExampleMatchesTestdata(t *testing.T) {
	doc, err := os.ReadFile("doc.go")
	if err != nil {
		t.Fatal(err)
	}
	ex, err := os.ReadFile("testdata/example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var body []string
	for _, l := range strings.Split(strings.TrimSpace(string(ex)), "\n") {
		if !strings.HasPrefix(l, "#") {
			body = append(body, "//\t"+l)
		}
	}
	if !strings.Contains(string(doc), strings.Join(body, "\n")) {
		t.Errorf("doc.go example differs from testdata/example.yaml (comments aside)")
	}
}

func TestDefaults(t *testing.T) {
	v, err := Parse("d.yaml", []byte(base), t.TempDir())
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if diff := cmp.Diff([]Network{{Name: DefaultNetwork, Subnet: DefaultSubnet()}}, v.Networks, cmpOpts...); diff != "" {
		t.Errorf("default networks (-want +got):\n%s", diff)
	}
	vm := v.VMs[0]
	if vm.Network != "lan" || vm.VCPUs != 1 || vm.MAC.String() != MACFor("t", "vm1").String() || v.Hosts[0].Address != DefaultAddress {
		t.Errorf("defaults: got %+v host %+v, want lan, 1 vcpu, MACFor, %s", vm, v.Hosts[0], DefaultAddress)
	}
	if v.Algorithm != nil || v.Sink != nil {
		t.Errorf("algorithm/sink: got %v/%v, want unset", v.Algorithm, v.Sink)
	}
	if v.Hypervisor != DefaultHypervisor {
		t.Errorf("hypervisor: got %q, want %q", v.Hypervisor, DefaultHypervisor)
	}
}

func TestHypervisorField(t *testing.T) {
	for _, h := range Hypervisors() {
		v, err := Parse("h.yaml", []byte("hypervisor: "+h+"\n"+base), t.TempDir())
		if err != nil {
			t.Fatalf("hypervisor %s: %v", h, err)
		}
		if v.Hypervisor != h {
			t.Errorf("hypervisor: got %q, want %q", v.Hypervisor, h)
		}
	}
}

func TestMACFor(t *testing.T) {
	a, b := MACFor("lab", "vm1"), MACFor("lab", "vm1")
	if a.String() != b.String() {
		t.Errorf("MACFor not deterministic: %s vs %s", a, b)
	}
	if a.String() == MACFor("lab", "vm2").String() || a.String() == MACFor("lab2", "vm1").String() {
		t.Errorf("MACFor(lab, vm1) = %s collides with a neighbour", a)
	}
	if len(a) != 6 || a[0]&1 != 0 || a[0]&2 == 0 || !strings.HasPrefix(a.String(), "52:54:00:") {
		t.Errorf("MACFor: got %s, want locally administered unicast 52:54:00:xx:xx:xx", a)
	}
}

func TestGuestFiles(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{"vmlinuz", "initrd.gz", "disk.qcow2"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	src := strings.Replace(base, "guest: {builtin: idle}",
		"guest: {kernel: vmlinuz, initrd: initrd.gz, cmdline: \"console=ttyS0\"}", 1) +
		"  - name: vm2\n    host: h1\n    memory: 64MiB\n    guest: {disk: " + filepath.Join(dir, "disk.qcow2") + "}\n"
	v, err := Parse("g.yaml", []byte(src), dir)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	want := []Guest{
		{Kernel: filepath.Join(dir, "vmlinuz"), Initrd: filepath.Join(dir, "initrd.gz"), Cmdline: "console=ttyS0"},
		{Disk: filepath.Join(dir, "disk.qcow2")},
	}
	got := []Guest{v.VMs[0].Guest, v.VMs[1].Guest}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("guests (-want +got):\n%s", diff)
	}
	if got[0].Kind() != KernelGuest || got[1].Kind() != DiskGuest {
		t.Errorf("kinds: got %v, %v, want kernel, disk", got[0].Kind(), got[1].Kind())
	}
	// A disk beside a kernel is the kernel guest's disk (a Xen PVH domU
	// boots from a kernel), and must be a file like the kernel.
	withDisk := strings.Replace(src, `cmdline: "console=ttyS0"}`, `cmdline: "console=ttyS0", disk: disk.qcow2}`, 1)
	v, err = Parse("g.yaml", []byte(withDisk), dir)
	if err != nil {
		t.Fatalf("Parse kernel guest with a disk: %v", err)
	}
	if g := v.VMs[0].Guest; g.Kind() != KernelGuest || g.Disk != filepath.Join(dir, "disk.qcow2") || g.Kernel == "" {
		t.Errorf("kernel guest with a disk: %+v (kind %v), want a kernel guest with its disk", g, g.Kind())
	}
	_, err = Parse("g.yaml", []byte(strings.Replace(withDisk, "disk: disk.qcow2}", "disk: nodisk.img}", 1)), dir)
	if err == nil || !strings.Contains(err.Error(), "vms[0].guest.disk") {
		t.Errorf("kernel guest with a missing disk: got %v, want an error naming vms[0].guest.disk", err)
	}
}

// base is a minimal valid file; the cases below edit it, so its line
// numbers are the ones they expect.
const base = `name: t
hosts:
  - name: h1
vms:
  - name: vm1
    host: h1
    memory: 64MiB
    guest: {builtin: idle}
`

// vm2 appends a second VM (lines 9-13) with the given extra fields.
func vm2(extra string) string {
	return base + "  - name: vm2\n    host: h1\n    memory: 64MiB\n    guest: {builtin: idle}\n" + extra
}

func TestMistakes(t *testing.T) {
	for _, tc := range []struct {
		name string
		src  string
		want []string // one per problem, in order: fragments joined by * that it contains in order
	}{
		{"duplicate VM name", strings.Replace(vm2(""), "name: vm2", "name: vm1", 1),
			[]string{`x.yaml:9: vms[1].name: duplicate VM name "vm1" (also vms[0].name at line 5)`}},
		{"duplicate host name", strings.Replace(base, "  - name: h1\n", "  - name: h1\n  - name: h1\n", 1),
			[]string{`x.yaml:4: hosts[1].name: duplicate host name "h1"`}},
		{"unknown host", strings.Replace(base, "host: h1", "host: h9", 1),
			[]string{`x.yaml:6: vms[0].host: unknown host "h9" (hosts are "h1")`}},
		{"bad size", strings.Replace(base, "64MiB", "lots", 1),
			[]string{`x.yaml:7: vms[0].memory: "lots" is not a size (want e.g. 512MiB)`}},
		{"memory not page aligned", strings.Replace(base, "64MiB", "67108865", 1),
			[]string{`x.yaml:7: vms[0].memory: 67108865 bytes is not a multiple of the 4KiB page size`}},
		{"memory too small", strings.Replace(base, "64MiB", "8MiB", 1),
			[]string{`x.yaml:7: vms[0].memory: 8388608 bytes is less than the minimum 16MiB`}},
		{"missing memory", strings.Replace(base, "    memory: 64MiB\n", "", 1),
			[]string{`x.yaml:5: vms[0].memory: required`}},
		{"vcpus out of range", strings.Replace(base, "    memory", "    vcpus: 65\n    memory", 1),
			[]string{`x.yaml:7: vms[0].vcpus: 65 is out of range (want 1..64)`}},
		{"bad MAC", base + "    mac: 52:54:00:zz:00:01\n",
			[]string{`x.yaml:9: vms[0].mac: "52:54:00:zz:00:01" is not a MAC address`}},
		{"multicast MAC", base + "    mac: 01:00:5e:00:00:01\n",
			[]string{`x.yaml:9: vms[0].mac: 01:00:5e:00:00:01 is a multicast address`}},
		{"duplicate MAC", strings.Replace(vm2("    mac: 52:54:00:00:00:01\n"), "    memory: 64MiB\n    guest", "    mac: 52:54:00:00:00:01\n    memory: 64MiB\n    guest", 1),
			[]string{`x.yaml:14: vms[1].mac: duplicate MAC 52:54:00:00:00:01 (also vms[0].mac at line 7)`}},
		{"duplicate IP", strings.Replace(vm2("    ip: 10.0.0.5\n"), "    memory: 64MiB\n    guest", "    ip: 10.0.0.5\n    memory: 64MiB\n    guest", 1),
			[]string{`x.yaml:14: vms[1].ip: duplicate IP 10.0.0.5 (also vms[0].ip at line 7)`}},
		{"IP outside subnet", base + "    ip: 10.0.1.5/24\n",
			[]string{`x.yaml:9: vms[0].ip: 10.0.1.5 is outside network "lan" subnet 10.0.0.0/24`}},
		{"IP prefix mismatch", base + "    ip: 10.0.0.5/16\n",
			[]string{`x.yaml:9: vms[0].ip: prefix length /16 does not match`}},
		{"broadcast IP", base + "    ip: 10.0.0.255\n",
			[]string{`x.yaml:9: vms[0].ip: 10.0.0.255 is the broadcast address of 10.0.0.0/24`}},
		{"two guest kinds", strings.Replace(base, "{builtin: idle}", "{builtin: idle, disk: d.qcow2}", 1),
			[]string{`x.yaml:8: vms[0].guest: sets builtin and disk (want exactly one of builtin, kernel or disk)`}},
		{"no guest kind", strings.Replace(base, "{builtin: idle}", "{}", 1),
			[]string{`x.yaml:8: vms[0].guest: no guest given`}},
		{"missing guest", strings.Replace(base, "    guest: {builtin: idle}\n", "", 1),
			[]string{`x.yaml:5: vms[0].guest: no guest given`}},
		{"unknown builtin", strings.Replace(base, "idle", "nginx", 1),
			[]string{`x.yaml:8: vms[0].guest.builtin: unknown program "nginx" (want one of dirtier, heartbeat, idle, npb, swarm, tcpstream)`}},
		{"missing kernel file", strings.Replace(base, "{builtin: idle}", "\n      kernel: nope/vmlinuz\n      cmdline: quiet", 1),
			[]string{`x.yaml:9: vms[0].guest.kernel: /*/nope/vmlinuz does not exist`}},
		{"initrd without kernel", strings.Replace(base, "{builtin: idle}", "{initrd: i.gz}", 1),
			[]string{`x.yaml:8: vms[0].guest.initrd: /*/i.gz does not exist`, `x.yaml:8: vms[0].guest.kernel: required with initrd or cmdline`}},
		{"missing disk file", strings.Replace(base, "{builtin: idle}", "{disk: d.qcow2}", 1),
			[]string{`x.yaml:8: vms[0].guest.disk: /*/d.qcow2 does not exist`}},
		{"unknown field", strings.Replace(base, "    host: h1", "    host: h1\n    colour: red", 1),
			[]string{`x.yaml:7: vms[0].colour: unknown field (want one of guest, host, ip, mac, memory, name, network, vcpus)`}},
		{"unknown top-level field", "version: 2\n" + base,
			[]string{`x.yaml:1: version: unknown field`}},
		{"field given twice", strings.Replace(base, "    host: h1", "    host: h1\n    host: h1", 1),
			[]string{`x.yaml:7: vms[0].host: field given twice (first at line 6)`}},
		{"bad algorithm", "algorithm: fast\n" + base,
			[]string{`x.yaml:1: algorithm: unknown algorithm "fast" (want one of`}},
		{"bad hypervisor", "hypervisor: kvm\n" + base,
			[]string{`x.yaml:1: hypervisor: unknown hypervisor "kvm" (want qemu or xen)`}},
		{"hypervisor not a scalar", "hypervisor: [qemu]\n" + base,
			[]string{`x.yaml:1: hypervisor: `}},
		{"bad sink", "sink: tape\n" + base,
			[]string{`x.yaml:1: sink: unknown sink "tape" (want disk or memory)`}},
		{"tab indentation", strings.Replace(base, "    host: h1", "\thost: h1", 1),
			[]string{`x.yaml:6: invalid YAML: `}},
		{"invalid YAML", "name: [t\n", []string{`x.yaml:1: invalid YAML: did not find expected`}},
		{"empty file", "", []string{`x.yaml: empty file`}},
		{"not a mapping", "- a\n", []string{`x.yaml:1: want a mapping`}},
		{"bad VNE name", strings.Replace(base, "name: t", "name: Lab_1", 1),
			[]string{`x.yaml:1: name: "Lab_1" is not a valid VNE name`}},
		{"missing name", strings.Replace(base, "name: t\n", "", 1),
			[]string{`x.yaml:1: name: required`}},
		{"no hosts", strings.Replace(base, "hosts:\n  - name: h1\n", "hosts: []\n", 1),
			[]string{`x.yaml:2: hosts: at least one host is required`}},
		{"hosts not a list", strings.Replace(base, "hosts:\n  - name: h1\n", "hosts: h1\n", 1),
			[]string{`x.yaml:2: hosts: want a list, got "h1"`}},
		{"bad address", strings.Replace(base, "  - name: h1\n", "  - name: h1\n    address: \"localhost:http\"\n", 1),
			[]string{`x.yaml:4: hosts[0].address: "localhost:http" has a bad port`}},
		{"bad ram budget", strings.Replace(base, "  - name: h1\n", "  - name: h1\n    ram_budget: 1.5B\n", 1),
			[]string{`x.yaml:4: hosts[0].ram_budget: "1.5B" is not a size`}},
		{"network needed with several", strings.Replace(base, "vms:", "networks:\n  - {name: a, subnet: 10.0.0.0/24}\n  - {name: b, subnet: 10.0.1.0/24}\nvms:", 1),
			[]string{`x.yaml:8: vms[0].network: required when there are several networks`}},
		{"unknown network", base + "    network: wan\n",
			[]string{`x.yaml:9: vms[0].network: unknown network "wan"`}},
		{"subnet host bits", strings.Replace(base, "vms:", "networks:\n  - {name: lan, subnet: 10.0.0.1/24}\nvms:", 1),
			[]string{`x.yaml:5: networks[0].subnet: 10.0.0.1/24 has host bits set (want 10.0.0.0/24)`}},
		{"overlapping subnets", strings.Replace(base, "vms:", "networks:\n  - {name: a, subnet: 10.0.0.0/16}\n  - {name: b, subnet: 10.0.1.0/24}\nvms:", 1),
			[]string{`x.yaml:6: networks[1].subnet: 10.0.1.0/24 overlaps 10.0.0.0/16 (networks[0].subnet at line 5)`, `vms[0].network: required`}},
		{"several problems at once", "name: BAD\nhosts:\n  - name: h1\nvms:\n  - name: vm1\n    host: h2\n    memory: 1GiB+\n    guest: {}\n",
			[]string{`x.yaml:1: name:`, `x.yaml:6: vms[0].host: unknown host`, `x.yaml:7: vms[0].memory: "1GiB+" is not a size`, `x.yaml:8: vms[0].guest: no guest given`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, err := Parse("x.yaml", []byte(tc.src), t.TempDir())
			if err == nil {
				t.Fatalf("Parse: got %+v, nil error; want errors %q\nsource:\n%s", v, tc.want, tc.src)
			}
			if v != nil {
				t.Errorf("Parse: got a VNE alongside an error, want nil")
			}
			got := problems(err)
			if len(got) != len(tc.want) {
				t.Fatalf("got %d problems, want %d:\n%s", len(got), len(tc.want), err)
			}
			for i, w := range tc.want {
				if !containsInOrder(got[i], strings.Split(w, "*")) {
					t.Errorf("problem %d: got %q, want it to contain %q", i, got[i], w)
				}
			}
		})
	}
}

func containsInOrder(s string, parts []string) bool {
	for _, p := range parts {
		i := strings.Index(s, p)
		if i < 0 {
			return false
		}
		s = s[i+len(p):]
	}
	return true
}

// problems splits a joined error into its messages.
func problems(err error) []string {
	var out []string
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			out = append(out, e.Error())
		}
		return out
	}
	return []string{err.Error()}
}

func TestValidateBuiltVNE(t *testing.T) {
	v := &VNE{
		Name:     "x",
		Hosts:    []Host{{Name: "h1"}},
		Networks: []Network{{Name: "lan", Subnet: DefaultSubnet()}},
		VMs: []VM{
			{Name: "a", Host: "h1", Memory: 64 << 20, VCPUs: 1, MAC: MACFor("x", "a"), Network: "lan", Guest: Guest{Builtin: "idle"}},
			{Name: "a", Host: "h2", Memory: 64<<20 + 1, VCPUs: 0, MAC: net.HardwareAddr{1, 0, 0x5e, 0, 0, 1}, Network: "lan"},
		},
	}
	err := v.Validate()
	want := []string{
		`vms[1].guest: no guest given`,
		`vms[1].host: unknown host "h2"`,
		`vms[1].mac: 01:00:5e:00:00:01 is a multicast address`,
		`vms[1].memory: 67108865 bytes is not a multiple`,
		`vms[1].name: duplicate VM name "a" (also vms[0].name)`,
		`vms[1].vcpus: 0 is out of range`,
	}
	got := problems(err)
	if len(got) != len(want) {
		t.Fatalf("got %d problems, want %d:\n%v", len(got), len(want), err)
	}
	for i, w := range want {
		if !strings.HasPrefix(got[i], w) {
			t.Errorf("problem %d: got %q, want prefix %q", i, got[i], w)
		}
	}
	var e *Error
	if !errors.As(err, &e) || e.Line != 0 || e.File != "" {
		t.Errorf("errors.As: got %+v, want an *Error without file or line", e)
	}
	v.VMs = v.VMs[:1]
	if err := v.Validate(); err != nil {
		t.Errorf("Validate of a valid VNE: got %v, want nil", err)
	}
}

// TestAgents checks cluster mode: hosts naming their agents, the tunnel
// address defaulting to the agent's IP, and files without agents unchanged.
func TestAgents(t *testing.T) {
	const vms = "vms:\n  - {name: vm1, host: a, memory: 64MiB, guest: {builtin: idle}}\n"
	for _, tc := range []struct {
		name, hosts string
		want        []Host
		clustered   bool
	}{
		{"no agents", "  - {name: a}\n  - {name: b, address: 10.0.9.1}\n",
			[]Host{{Name: "a", Address: DefaultAddress}, {Name: "b", Address: "10.0.9.1"}}, false},
		{"agents, address defaults to the agent's IP", "  - {name: a, agent: \"10.213.1.2:7443\"}\n  - {name: b, agent: \"[fd00::2]:7443\"}\n",
			[]Host{{Name: "a", Address: "10.213.1.2", Agent: "10.213.1.2:7443"}, {Name: "b", Address: "fd00::2", Agent: "[fd00::2]:7443"}}, true},
		{"agents, address given", "  - {name: a, agent: \"10.213.1.2:7443\", address: \"10.213.1.2:4789\"}\n  - {name: b, agent: \"b.example:7443\"}\n",
			[]Host{{Name: "a", Address: "10.213.1.2:4789", Agent: "10.213.1.2:7443"}, {Name: "b", Address: DefaultAddress, Agent: "b.example:7443"}}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, err := Parse("x.yaml", []byte("name: t\nhosts:\n"+tc.hosts+vms), t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, v.Hosts); diff != "" {
				t.Errorf("hosts (-want +got):\n%s", diff)
			}
			if v.Clustered() != tc.clustered {
				t.Errorf("Clustered: got %v, want %v", v.Clustered(), tc.clustered)
			}
		})
	}
}

func TestAgentErrors(t *testing.T) {
	const vms = "vms:\n  - {name: vm1, host: a, memory: 64MiB, guest: {builtin: idle}}\n"
	for _, tc := range []struct{ name, hosts, want string }{
		{"no port", "  - {name: a, agent: 10.213.1.2}\n", `x.yaml:3: hosts[0].agent: "10.213.1.2" is not host:port`},
		{"bad port", "  - {name: a, agent: \"10.213.1.2:grpc\"}\n", `x.yaml:3: hosts[0].agent: "10.213.1.2:grpc" has a bad port`},
		{"port 0", "  - {name: a, agent: \"10.213.1.2:0\"}\n", `has a bad port`},
		{"comma", "  - {name: a, agent: \"a,b:7443\"}\n", `hosts[0].agent: "a,b:7443" is not host:port`},
		{"zone", "  - {name: a, agent: \"[fe80::1%eth0]:7443\"}\n", `is not host:port`},
		{"not a string", "  - {name: a, agent: [x]}\n", `hosts[0].agent: want a single value, got a list`},
		{"only some hosts", "  - {name: a}\n  - {name: b, agent: \"10.213.1.3:7443\"}\n",
			`x.yaml:3: hosts[0].agent: required: hosts[1] names its agent, so every host must (cluster mode)`},
		{"duplicate", "  - {name: a, agent: \"10.213.1.2:7443\"}\n  - {name: b, agent: \"10.213.1.2:7443\"}\n",
			`x.yaml:4: hosts[1].agent: duplicate agent "10.213.1.2:7443" (also`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, err := Parse("x.yaml", []byte("name: t\nhosts:\n"+tc.hosts+vms), t.TempDir())
			if err == nil {
				t.Fatalf("Parse: got %+v, want an error containing %q", v.Hosts, tc.want)
			}
			got := problems(err)
			if len(got) != 1 || !strings.Contains(got[0], tc.want) {
				t.Errorf("got %q, want one problem containing %q", got, tc.want)
			}
		})
	}
}
