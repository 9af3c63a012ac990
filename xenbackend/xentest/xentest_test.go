package xentest

import (
	"context"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"
)

// domU1Cfg is a dom0 script's lines that write the xl config of "domu1",
// the tests' 128 MiB PVH domU booted from the domU kernel and initramfs.
const domU1Cfg = `cat > /root/domu1.cfg <<CFG
name = "domu1"
type = "pvh"
kernel = "/root/vmlinuz"
ramdisk = "/root/domu-initrd.gz"
extra = "console=hvc0 rdinit=/init loglevel=4"
memory = 128
vcpus = 1
on_crash = "destroy"
CFG
`

// domUInit is the domU's /init: it loads its modules (netfront), prints a
// marker, then a tick a second (and once a marker when eth0 is there), so
// that a restored or migrated domain proves it runs on from its saved state.
const domUInit = `#!/bin/busybox sh
/bin/busybox mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
for m in $(cat /etc/modules); do insmod /lib/modules/$m.ko || echo "VNSNAP-DOMU-INSMOD-FAILED $m"; done
echo VNSNAP-DOMU-UP
n=0
eth=""
while :; do
	n=$((n+1))
	if [ -z "$eth" ] && [ -e /sys/class/net/eth0 ]; then eth=1; ip link set eth0 up; echo VNSNAP-DOMU-ETH0; fi
	echo "VNSNAP-DOMU-TICK $n"
	sleep 1
done
`

// startWithDomU boots dom0 (after Require) with dcfg plus what a domU
// needs: the kernel at /root/vmlinuz, a domUInit initramfs with domuModules
// at /root/domu-initrd.gz, and the test program testdata/prog built
// statically at /usr/bin/prog.
func startWithDomU(t *testing.T, prog string, dcfg Dom0Config, domuModules ...string) *Machine {
	t.Helper()
	env := Require(t, "../..")
	domuInitrd, err := DomUInitrd(env, domUInit, domuModules...)
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), prog)
	if err := GoBinary(context.Background(), "../..", "./xenbackend/xentest/testdata/"+prog, bin); err != nil {
		t.Fatal(err)
	}
	dcfg.Files = append([]File{
		{Path: "/root/vmlinuz", Src: env.Kernel()},
		{Path: "/usr/bin/" + prog, Src: bin},
		{Path: "/root/domu-initrd.gz", Data: domuInitrd},
	}, dcfg.Files...)
	return Start(t, env, dcfg, BootConfig{})
}

// twoTicks checks a "VNSNAP-T-TICKING-AFTER-..." line for two domU ticks.
func twoTicks(t *testing.T, line string) {
	t.Helper()
	ticks := regexp.MustCompile(`VNSNAP-DOMU-TICK (\d+)`).FindAllStringSubmatch(line, -1)
	if len(ticks) != 2 || ticks[0][1] == ticks[1][1] {
		t.Errorf("got %q, want two different domU ticks", line)
	}
}

// mustWait is m.Wait that ends the test on its error, saying how long the
// machine had run.
func mustWait(t testing.TB, ctx context.Context, m *Machine, marker string) string {
	t.Helper()
	line, err := m.Wait(ctx, marker)
	if err != nil {
		t.Fatalf("after %v: %v", m.Uptime().Round(time.Second), err)
	}
	return line
}

// lineNum returns the number after "key=" (or "key=v") in a console line,
// ending the test if there is none.
func lineNum(t testing.TB, line, key string) int {
	t.Helper()
	mm := regexp.MustCompile(`\b` + regexp.QuoteMeta(key) + `=v?(\d+)`).FindStringSubmatch(line)
	if mm == nil {
		t.Fatalf("no %s= in %q", key, line)
	}
	n, _ := strconv.Atoi(mm[1])
	return n
}

func TestLineNum(t *testing.T) {
	for line, want := range map[string]int{
		"VNSNAP-T-SNAP-END rc=0 hb=250": 250, "VNSNAP-T-STREAM version=v3 hb=7": 7, "x myhb=3 hb=12": 12,
	} {
		if got := lineNum(t, line, "hb"); got != want {
			t.Errorf("lineNum(%q, hb) = %d, want %d", line, got, want)
		}
	}
	if got := lineNum(t, "VNSNAP-T-STREAM version=v3", "version"); got != 3 {
		t.Errorf("lineNum(version=v3) = %d, want 3", got)
	}
}
