//go:build xen_wip

// Work in progress (issue 8): these real-Xen tests have not passed yet (see
// the package doc, "Work in progress"); they build only with -tags xen_wip, so CI does not run
// them. Run: CI=1 go test -tags xen_wip ./xenbackend/xentest -run 'TestXenMachine|TestXenVNE' -v -timeout 60m

package xentest

import (
	"context"
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/vnsnap/vnsnap/qemubackend/guestimg"
)

// vneBytes is what each domU's tcpstream sends its peer: enough that the
// transfer is still going when the live snapshot (two 128 MiB domains under
// nested TCG) reaches its snapshot point, so that the restored VNE has to
// finish it.
const vneBytes = 16_000_000

// vneFile is the Xen VNE the dom0 script runs: two PVH domUs on one switch,
// kernel guests booted from the built-in image's initramfs (built on the
// host: dom0 has no Go toolchain), running tcpstream to each other.
func vneFile() string {
	var b strings.Builder
	b.WriteString("name: xenlab\nhypervisor: xen\nalgorithm: vnsnap\nsink: memory\nhosts:\n  - {name: dom0, address: 127.0.0.1}\nvms:\n")
	peers := "-peers=10.0.0.1,10.0.0.2"
	for i, name := range []string{"a", "b"} {
		ip := fmt.Sprintf("10.0.0.%d", i+1)
		cmdline := guestimg.KernelArgs(ip+"/24", "", guestimg.Program{Name: "tcpstream",
			Args: []string{fmt.Sprintf("-bytes=%d", vneBytes), peers, "-self=" + ip, "-progress=2s"}})
		fmt.Fprintf(&b, "  - name: %s\n    host: dom0\n    memory: 128MiB\n    ip: %s\n    mac: 00:16:3e:00:00:0%d\n"+
			"    guest: {kernel: /root/vmlinuz, initrd: /root/guest.gz, cmdline: %q}\n", name, ip, i+1, cmdline)
	}
	return b.String()
}

// vneScript drives vnsnap in dom0 as a user would: up, a live snapshot to
// the memory sink, verify, down (no domain may be left, renamed or not), the
// cut checked on the frame log, up --restore, and the workload must finish
// with every byte verified. The consoles' tcpstream lines are copied to the
// serial console ("a| ..."), which keeps the harness's stall deadline fed.
const vneScript = `
set -u
cd /root
XL=/usr/lib/xen-4.17/bin/xl
ST=/root/st
STORE=/root/store
V="vnsnap"
# diag: what dom0 looks like when something failed.
diag() { echo "VNSNAP-T-DIAG"; free; $XL info | grep -E 'free_memory|total_memory'; $XL list; dmesg | tail -n 30; }
follow() {
	touch $ST/$1.console
	tail -F $ST/$1.console 2>/dev/null | while IFS= read -r l; do case "$l" in *TCPSTREAM*) echo "$1| $l" ;; esac; done &
}
up() {
	$V up --state $ST --store $STORE "$@" /root/xen.yaml > /root/up.log 2>&1 &
	UP=$!
	while ! grep -q "^VNE xenlab up" /root/up.log; do
		kill -0 $UP 2>/dev/null || { diag; cat /root/up.log; echo "VNSNAP-XEN-FAIL vnsnap up exited:"; exit 3; }
		sleep 1
	done
	cat /root/up.log
}
down() {
	$V down --state $ST || { echo "VNSNAP-XEN-FAIL vnsnap down"; exit 4; }
	wait $UP
	echo "VNSNAP-T-UP-EXIT rc=$?"
	cat /root/up.log
}
# progress VM: the console shows tcpstream received something.
progress() { grep "TCPSTREAM PROGRESS" $ST/$1.console | grep -qv "rx=0 "; }
mkdir -p $ST
follow a
follow b
up
echo VNSNAP-T-UP
while ! progress a || ! progress b; do
	kill -0 $UP 2>/dev/null || { diag; cat /root/up.log; echo "VNSNAP-XEN-FAIL vnsnap up died"; exit 5; }
	sleep 2
done
echo VNSNAP-T-FLOWING
$V snapshot --state $ST --store $STORE --sink memory s1
rc=$?
[ $rc = 0 ] || { diag; cat /root/up.log; }
echo "VNSNAP-T-SNAPSHOT rc=$rc done-before=$(cat $ST/a.console $ST/b.console | grep -c 'TCPSTREAM DONE')"
$V verify --store $STORE s1
echo "VNSNAP-T-VERIFY rc=$?"
$V ls --store $STORE
sleep 4
echo "VNSNAP-T-STILL-FLOWING $(grep 'TCPSTREAM PROGRESS' $ST/a.console | tail -n 1)"
down
echo "VNSNAP-T-LEFT $($XL list | tail -n +2 | awk '{print $1}' | tr '\n' ' ')"
/usr/bin/framecheck 1 2 $ST/run/*.framelog
up --restore s1
echo VNSNAP-T-RESTORED
while [ "$(cat $ST/a.console $ST/b.console | grep -c 'TCPSTREAM DONE')" -lt 2 ]; do
	kill -0 $UP 2>/dev/null || { diag; cat /root/up.log; echo "VNSNAP-XEN-FAIL vnsnap up died after the restore"; exit 6; }
	sleep 2
done
echo "VNSNAP-T-WORKLOAD $(cat $ST/a.console $ST/b.console | grep 'TCPSTREAM DONE' | tr '\n' ' ')"
down
echo "VNSNAP-T-LEFT $($XL list | tail -n +2 | awk '{print $1}' | tr '\n' ' ')"
`

// TestXenVNE is the Xen backend's acceptance test on real Xen: a static
// vnsnap in dom0 boots a VNE of two PVH domUs whose vifs are relayed to its
// switch, takes a live snapshot through xl migrate and its own receiver
// (memory sink), verifies it, goes down leaving no domain, the frame log's
// cut has no orphan, and the VNE restored from the store finishes its TCP
// workload with every byte verified.
func TestXenVNE(t *testing.T) {
	env := Require(t, "../..")
	ctx := context.Background()
	img, err := guestimg.Build(ctx, guestimg.Config{
		CacheDir: filepath.Join(t.TempDir(), "guest"), ModuleRoot: "../..", Root: env.Path("/"),
		KernelVersion: KernelVersion, Modules: []string{"xen-netfront"}, Programs: []string{"tcpstream"},
		Busybox: env.Busybox(),
	})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	files := []File{
		{Path: "/root/vmlinuz", Src: env.Kernel()},
		{Path: "/root/guest.gz", Src: img.Initrd},
		{Path: "/root/xen.yaml", Data: []byte(vneFile())},
	}
	for _, p := range []struct{ pkg, name string }{{"./cmd/vnsnap", "vnsnap"}, {"./xenbackend/xentest/testdata/framecheck", "framecheck"}} {
		bin := filepath.Join(dir, p.name)
		if err := GoBinary(ctx, "../..", p.pkg, bin); err != nil {
			t.Fatal(err)
		}
		files = append(files, File{Path: "/usr/bin/" + p.name, Src: bin})
	}
	m := Start(t, env, Dom0Config{Script: vneScript, Files: files, Modules: []string{"xen-netback"}}, BootConfig{})
	wait := func(marker string) string {
		t.Helper()
		line, err := m.Wait(ctx, marker)
		if err != nil {
			t.Fatalf("after %v: %v", m.Uptime().Round(1e9), err)
		}
		return line
	}
	num := func(line, key string) int {
		t.Helper()
		mm := regexp.MustCompile(`\b` + key + `=(\d+)`).FindStringSubmatch(line)
		if mm == nil {
			t.Fatalf("no %s= in %q", key, line)
		}
		n, _ := strconv.Atoi(mm[1])
		return n
	}
	wait(MarkerReady)
	wait("VNSNAP-T-UP")
	wait("VNSNAP-T-FLOWING")
	snap := wait("VNSNAP-T-SNAPSHOT")
	if num(snap, "rc") != 0 {
		t.Fatalf("vnsnap snapshot failed: %s", snap)
	}
	if num(snap, "done-before") != 0 {
		t.Fatalf("%s: the workload finished before the snapshot, so the restore proves nothing (raise vneBytes)", snap)
	}
	if v := wait("VNSNAP-T-VERIFY"); num(v, "rc") != 0 {
		t.Errorf("vnsnap verify s1: %s", v)
	}
	t.Logf("after the snapshot: %s", wait("VNSNAP-T-STILL-FLOWING"))
	if u := wait("VNSNAP-T-UP-EXIT"); num(u, "rc") != 0 {
		t.Errorf("vnsnap up (first run): %s", u)
	}
	if left := strings.TrimSpace(strings.TrimPrefix(wait("VNSNAP-T-LEFT"), "VNSNAP-T-LEFT")); left != "Domain-0" {
		t.Errorf("after vnsnap down: domains %q left, want only Domain-0 (nothing paused or --migratedaway)", left)
	}
	c := wait("VNSNAP-T-CUT")
	t.Logf("cut: %s", c)
	if num(c, "orphans") != 0 || num(c, "missing") != 0 || num(c, "sent") == 0 {
		t.Errorf("frame log: %s; want frames sent, no orphan, no missing cut", c)
	}
	wait("VNSNAP-T-RESTORED")
	w := wait("VNSNAP-T-WORKLOAD")
	t.Logf("workload: %s", w)
	for _, d := range regexp.MustCompile(`TCPSTREAM DONE ok=(\d+) fail=(\d+)`).FindAllStringSubmatch(w, -1) {
		if d[1] == "0" || d[2] != "0" {
			t.Errorf("restored VNE's workload: %q, want streams ok and none failed", d[0])
		}
	}
	if u := wait("VNSNAP-T-UP-EXIT"); num(u, "rc") != 0 {
		t.Errorf("vnsnap up --restore: %s", u)
	}
	if left := strings.TrimSpace(strings.TrimPrefix(wait("VNSNAP-T-LEFT"), "VNSNAP-T-LEFT")); left != "Domain-0" {
		t.Errorf("after the last vnsnap down: domains %q left, want only Domain-0", left)
	}
	if got, want := wait(MarkerDone), MarkerDone+" rc=0"; got != want {
		t.Errorf("dom0 script: got %q, want %q", got, want)
	}
	t.Logf("whole run %v", m.Uptime().Round(1e9))
}
