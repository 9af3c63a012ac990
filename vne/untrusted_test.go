package vne

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestLoadResolvesRelativePaths loads a file by a relative path: its guest
// paths must come out absolute (against the file's directory), so that a
// qcow2 overlay or a snapshot made from them works from any directory.
func TestLoadResolvesRelativePaths(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "sub", "images"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"images/vmlinuz", "images/initrd.gz", "disk.qcow2"} {
		if err := os.WriteFile(filepath.Join(dir, "sub", f), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	src := strings.Replace(base, "guest: {builtin: idle}",
		"guest: {kernel: images/vmlinuz, initrd: ./images/../images/initrd.gz}", 1) +
		"  - name: vm2\n    host: h1\n    memory: 64MiB\n    guest: {disk: disk.qcow2}\n"
	if err := os.WriteFile(filepath.Join(dir, "sub", "vne.yaml"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)
	v, err := Load("sub/vne.yaml")
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	want := map[string]string{
		"kernel": filepath.Join(dir, "sub", "images", "vmlinuz"),
		"initrd": filepath.Join(dir, "sub", "images", "initrd.gz"),
		"disk":   filepath.Join(dir, "sub", "disk.qcow2"),
	}
	got := map[string]string{"kernel": v.VMs[0].Guest.Kernel, "initrd": v.VMs[0].Guest.Initrd, "disk": v.VMs[1].Guest.Disk}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s: got %q, want %q (absolute, against the file's directory)", k, got[k], w)
		}
		if err := CheckPath(got[k]); err != nil {
			t.Errorf("%s: CheckPath(%q): %v", k, got[k], err)
		}
	}
}

// TestLoadRefusesNonRegular: `vnsnap up /dev/zero` must not read forever,
// and a FIFO must not block; the error names the file.
func TestLoadRefusesNonRegular(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "vne.fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/dev/zero", fifo, dir} {
		_, err := Load(p)
		if err == nil || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), "not a regular file") {
			t.Errorf("Load(%s): got %v, want an error naming it as not a regular file", p, err)
		}
	}
}

func TestLoadRefusesLargeFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "big.yaml")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(MaxFileSize + 1); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if _, err := Load(p); err == nil || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), "limit") {
		t.Errorf("Load of %d bytes: got %v, want an error naming the file and the limit", MaxFileSize+1, err)
	}
	if _, err := Parse("big.yaml", make([]byte, MaxFileSize+1), "."); err == nil || !strings.Contains(err.Error(), "big.yaml") {
		t.Errorf("Parse of %d bytes: got %v, want an error naming big.yaml", MaxFileSize+1, err)
	}
}

// TestNumericFields checks NaN, infinities, sign and overflow of every
// numeric field: each is an error naming file, line and field, never a
// silent wrap-around.
func TestNumericFields(t *testing.T) {
	mem := func(v string) string { return strings.Replace(base, "memory: 64MiB", "memory: "+v, 1) }
	budget := func(v string) string {
		return strings.Replace(base, "  - name: h1\n", "  - name: h1\n    ram_budget: "+v+"\n", 1)
	}
	vcpus := func(v string) string { return strings.Replace(base, "    memory", "    vcpus: "+v+"\n    memory", 1) }
	for _, tc := range []struct{ name, src, want string }{
		{"memory NaN", mem("NaN"), `x.yaml:7: vms[0].memory: "NaN" is not a finite size`},
		{"memory NaN MiB", mem("nanMiB"), `x.yaml:7: vms[0].memory: "nanMiB" is not a finite size`},
		{"memory Inf", mem("+InfGiB"), `x.yaml:7: vms[0].memory: "+InfGiB" is not a finite size`},
		{"memory negative", mem("-64MiB"), `x.yaml:7: vms[0].memory: "-64MiB" is negative`},
		{"memory negative zero", mem("-0"), `x.yaml:7: vms[0].memory: "-0" is negative`},
		{"memory overflow", mem("9300000000000000000"), `x.yaml:7: vms[0].memory: "9300000000000000000" is too large`},
		{"memory exponent overflow", mem("1e400"), `x.yaml:7: vms[0].memory: "1e400" is not a size`},
		{"memory huge", mem("9000000TiB"), `x.yaml:7: vms[0].memory: "9000000TiB" is too large`},
		{"memory above max", mem("32TiB"), `x.yaml:7: vms[0].memory: 35184372088832 bytes is more than the maximum 16TiB`},
		{"budget NaN", budget("NaN"), `x.yaml:4: hosts[0].ram_budget: "NaN" is not a finite size`},
		{"budget negative", budget("-1GiB"), `x.yaml:4: hosts[0].ram_budget: "-1GiB" is negative`},
		{"vcpus overflow", vcpus("99999999999999999999"), `x.yaml:7: vms[0].vcpus: 99999999999999999999 is out of range (want 1..64)`},
		{"vcpus negative", vcpus("-3"), `x.yaml:7: vms[0].vcpus: -3 is out of range (want 1..64)`},
		{"vcpus fraction", vcpus("1.5"), `x.yaml:7: vms[0].vcpus: "1.5" is not a whole number`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("x.yaml", []byte(tc.src), t.TempDir())
			if got := problems(err); len(got) != 1 || !strings.HasPrefix(got[0], tc.want) {
				t.Errorf("got %q, want one problem starting %q", got, tc.want)
			}
		})
	}
}

// TestGuestStrings: built-in program arguments and kernel command lines end
// up on a kernel command line; what would change its meaning is refused.
func TestGuestStrings(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "vmlinuz"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, guest, want string }{
		{"arg with space", `{builtin: idle, args: ["-x=1 init=/bin/sh"]}`, `x.yaml:8: vms[0].guest.args[0]: "-x=1 init=/bin/sh" holds ' '`},
		{"arg with colon", `{builtin: tcpstream, args: ["a:b"]}`, `x.yaml:8: vms[0].guest.args[0]: "a:b" holds ':'`},
		{"arg with plus", `{builtin: tcpstream, args: ["-bytes=1", "a+dirtier"]}`, `x.yaml:8: vms[0].guest.args[1]: "a+dirtier" holds '+'`},
		{"cmdline newline", `{kernel: vmlinuz, cmdline: "quiet\ninit=/x"}`, `x.yaml:8: vms[0].guest.cmdline: holds the byte '\n'`},
		{"cmdline too long", `{kernel: vmlinuz, cmdline: "` + strings.Repeat("a", MaxCmdline+1) + `"}`, `x.yaml:8: vms[0].guest.cmdline: 2048 bytes is longer than the kernel's limit of 2047`},
		{"kernel path with newline", `{kernel: "vm\nlinuz"}`, `x.yaml:8: vms[0].guest.kernel: "` + dir + `/vm\nlinuz" holds the control character '\n'`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := strings.Replace(base, "{builtin: idle}", tc.guest, 1)
			_, err := Parse("x.yaml", []byte(src), dir)
			if got := problems(err); len(got) != 1 || !strings.HasPrefix(got[0], tc.want) {
				t.Errorf("got %q, want one problem starting %q", got, tc.want)
			}
		})
	}
}

func TestRules(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		ok   bool
	}{
		{"name ok", CheckName("VM", "vm-1.a_b"), true},
		{"name dotdot", CheckName("VM", ".."), false},
		{"name traversal", CheckName("VM", "../../etc/x"), false},
		{"name slash", CheckName("host", "a/b"), false},
		{"name comma", CheckName("host", "a,server=on"), false},
		{"name too long", CheckName("VM", strings.Repeat("a", MaxNameLen+1)), false},
		{"vne name", CheckVNEName("lab-1"), true},
		{"vne name upper", CheckVNEName("Lab"), false},
		{"mac ok", func() error { _, err := ParseMAC("52:54:00:00:00:01"); return err }(), true},
		{"mac option", func() error { _, err := ParseMAC("52:54:00:00:00:01,romfile=/etc/shadow"); return err }(), false},
		{"mac dashes", func() error { _, err := ParseMAC("52-54-00-00-00-01"); return err }(), false},
		{"mac multicast", func() error { _, err := ParseMAC("01:00:5e:00:00:01"); return err }(), false},
		{"mac 8 bytes", func() error { _, err := ParseMAC("52:54:00:00:00:01:02:03"); return err }(), false},
		{"address ok", CheckAddress("127.0.0.1:7002"), true},
		{"address dns", CheckAddress("h1.example:7002"), true},
		{"address comma", CheckAddress("a,b:7002"), false},
		{"address zone", CheckAddress("fe80::1%eth0"), false},
		{"path ok", CheckPath("/a/b"), true},
		{"path relative", CheckPath("a/b"), false},
		{"path dotdot", CheckPath("/a/../etc/passwd"), false},
		{"path NUL", CheckPath("/a\x00b"), false},
		{"file dev", CheckFile("/dev/zero"), false},
		{"file dir", CheckFile("/"), false},
		{"memory ok", CheckMemory(64 << 20), true},
		{"memory negative", CheckMemory(-1 << 30), false},
		{"vcpus zero", CheckVCPUs(0), false},
		{"cmdline ok", CheckCmdline("console=ttyS0 quiet"), true},
		{"cmdline tab", CheckCmdline("a\tb"), false},
		{"arg ok", CheckArg("-peers=10.0.0.1,10.0.0.2"), true},
		{"arg empty", CheckArg(""), false},
	} {
		if (tc.err == nil) != tc.ok {
			t.Errorf("%s: got %v, want ok=%v", tc.name, tc.err, tc.ok)
		}
	}
}

// TestValidateLinear validates a VNE with 100,000 networks, hosts and VMs:
// an all-pairs check of subnets or a scan of the host list per VM would
// not finish within the test's timeout; the sweep and the maps take well
// under a second. A planted overlap and an unknown host are still found.
func TestValidateLinear(t *testing.T) {
	n := 100000
	if testing.Short() {
		n = 20000
	}
	v := &VNE{Name: "big"}
	for i := range n {
		v.Hosts = append(v.Hosts, Host{Name: fmt.Sprintf("h%d", i)})
		a := netip.AddrFrom4([4]byte{10, byte(i >> 12), byte(i >> 4), byte(i << 4)})
		v.Networks = append(v.Networks, Network{Name: fmt.Sprintf("n%d", i), Subnet: netip.PrefixFrom(a, 28)})
		name := fmt.Sprintf("vm%d", i)
		v.VMs = append(v.VMs, VM{
			Name: name, Host: fmt.Sprintf("h%d", i), Memory: 64 << 20, VCPUs: 1, MAC: MACFor("big", name),
			Network: fmt.Sprintf("n%d", i), Guest: Guest{Builtin: "idle"},
		})
	}
	// MACFor may collide among 100,000 names (24 bits); number them instead.
	for i := range v.VMs {
		v.VMs[i].MAC = net.HardwareAddr{0x52, 0x54, 0, byte(i >> 16), byte(i >> 8), byte(i)}
	}
	if err := v.Validate(); err != nil {
		t.Fatalf("Validate of %d VMs: %.500v", n, err)
	}
	v.Networks = append(v.Networks, Network{Name: "again", Subnet: netip.MustParsePrefix("10.0.0.80/28")})
	v.VMs[n-1].Host = "nope"
	got := problems(v.Validate())
	want := []string{
		fmt.Sprintf("networks[%d].subnet: 10.0.0.80/28 overlaps 10.0.0.80/28 (networks[5].subnet)", n),
		fmt.Sprintf("vms[%d].host: unknown host \"nope\"", n-1),
	}
	if len(got) != len(want) {
		t.Fatalf("got %d problems, want %d: %.1000q", len(got), len(want), got)
	}
	for i := range want {
		if !strings.HasPrefix(got[i], want[i]) {
			t.Errorf("problem %d: got %q, want prefix %q", i, got[i], want[i])
		}
	}
}
