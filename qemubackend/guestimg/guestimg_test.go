package guestimg

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/google/go-cmp/cmp"
)

type entry struct {
	Name       string
	Mode       uint32
	Data       string
	Rmaj, Rmin uint32
}

// readCPIO is a deliberately naive newc reader to check the writer against.
func readCPIO(t *testing.T, b []byte) []entry {
	t.Helper()
	var out []entry
	align := func(n int) int { return (n + 3) &^ 3 }
	for off := 0; ; {
		h := b[off : off+110]
		if string(h[:6]) != "070701" {
			t.Fatalf("bad magic at %d: %q", off, h[:6])
		}
		field := func(i int) uint32 {
			v, err := strconv.ParseUint(string(h[6+8*i:14+8*i]), 16, 32)
			if err != nil {
				t.Fatal(err)
			}
			return uint32(v)
		}
		mode, size, rmaj, rmin, nsize := field(1), field(6), field(9), field(10), field(11)
		name := string(b[off+110 : off+110+int(nsize)-1])
		off = align(off + 110 + int(nsize))
		data := string(b[off : off+int(size)])
		off = align(off + int(size))
		if name == "TRAILER!!!" {
			if off != len(b) {
				t.Fatalf("%d bytes after trailer", len(b)-off)
			}
			return out
		}
		out = append(out, entry{name, mode, data, rmaj, rmin})
	}
}

func TestCPIORoundTrip(t *testing.T) {
	var buf bytes.Buffer
	c := &cpioWriter{w: &buf}
	c.dir("bin")
	c.file("init", 0o755, []byte("#!/bin/sh\n"))
	c.symlink("bin/sh", "busybox")
	c.chardev("dev/console", 0o600, 5, 1)
	c.file("empty", 0o644, nil)
	if err := c.close(); err != nil {
		t.Fatal(err)
	}
	want := []entry{
		{"bin", modeDir | 0o755, "", 0, 0},
		{"init", modeFile | 0o755, "#!/bin/sh\n", 0, 0},
		{"bin/sh", modeLink | 0o777, "busybox", 0, 0},
		{"dev/console", modeChar | 0o600, "", 5, 1},
		{"empty", modeFile | 0o644, "", 0, 0},
	}
	if diff := cmp.Diff(want, readCPIO(t, buf.Bytes())); diff != "" {
		t.Errorf("archive (-want +got):\n%s", diff)
	}
}

func TestResolveModules(t *testing.T) {
	dir := t.TempDir()
	dep := `kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/net/core/failover.ko:
kernel/drivers/net/ethernet/intel/e1000/e1000.ko:
kernel/drivers/x/zipped.ko.xz:
`
	if err := os.WriteFile(filepath.Join(dir, "modules.dep"), []byte(dep), 0o644); err != nil {
		t.Fatal(err)
	}
	mods, err := resolveModules(dir, []string{"e1000", "virtio_net", "virtio-ring"})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range mods {
		names = append(names, m.name)
	}
	want := []string{"e1000", "failover", "net_failover", "virtio_ring", "virtio", "virtio_net"}
	if diff := cmp.Diff(want, names); diff != "" {
		t.Errorf("load order (-want +got):\n%s", diff)
	}
	if _, err := resolveModules(dir, []string{"nosuch"}); err == nil {
		t.Error("unknown module: want error")
	}
	if _, err := resolveModules(dir, []string{"zipped"}); err == nil {
		t.Error("compressed module: want error")
	}
}

func TestKernelArgs(t *testing.T) {
	got := KernelArgs("10.0.0.1/24", "52:54:00:00:00:01",
		Program{Name: "heartbeat"},
		Program{Name: "tcpstream", Args: []string{"-peers=10.0.0.1,10.0.0.2", "-self=10.0.0.1"}})
	for _, want := range []string{"console=ttyS0", "vnsnap.ip=10.0.0.1/24", "vnsnap.mac=52:54:00:00:00:01",
		"vnsnap.run=heartbeat+tcpstream:-peers=10.0.0.1,10.0.0.2:-self=10.0.0.1"} {
		if !bytes.Contains([]byte(got), []byte(want)) {
			t.Errorf("KernelArgs = %q, lacks %q", got, want)
		}
	}
}

func TestVersionLess(t *testing.T) {
	if !versionLess("6.1.0-9-amd64", "6.1.0-56-amd64") || versionLess("6.12.1-amd64", "6.1.0-56-amd64") {
		t.Error("versionLess orders kernel versions wrongly")
	}
}
