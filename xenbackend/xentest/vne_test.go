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
// transfer is still going when the live snapshot s1 (two 128 MiB domains
// under nested TCG) reaches its snapshot point, so that the VNE restored
// from s1 has to finish it. Measured here: a snapshot command takes 2-3
// minutes (about half of it writing the images to the store in dom0, while
// the workload runs on), and 16 MB was over before s1's command returned.
const vneBytes = 40_000_000

// vneRestore are the snapshots TestXenVNE restores, each from the store
// after the VNE went down, to finish its workload: s1, taken live through
// the receiver to the memory sink. Its restore proves that s1's snapshot
// point came before the end of the workload: a restored tcpstream prints
// DONE only if it had not yet done so at its snapshot point (otherwise the
// restored consoles stay silent, and the harness's stall deadline fails the
// test).
var vneRestore = []string{"s1"}

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

// vneScript drives vnsnap in dom0 as a user would: up; while the workload
// flows, three snapshots (s1 live to the memory sink, s2 live to the disk
// sink, s3 stop-and-copy), each verified; down (no domain may be left, renamed or
// not); the cut of each snapshot checked on the frame logs; then, for each
// snapshot in RESTORE, up --restore, and the workload must finish with every
// byte verified. The consoles' tcpstream lines are copied to the serial
// console ("a| ..."), which keeps the harness's stall deadline fed.
const vneScript = `
set -u
cd /root
XL=/usr/lib/xen-4.17/bin/xl
ST=/root/st
STORE=/root/store
V="vnsnap"
VMS="a b"
RUN=0
` + dom0Shell + `
# follow VM: copy VM's tcpstream lines to the serial console, each only when
# it differs from the one before, so that a workload that stopped moving
# leaves the console silent and the harness's stall deadline ends the run.
follow() {
	touch $ST/$1.console
	tail -F $ST/$1.console 2>/dev/null | while IFS= read -r l; do
		case "$l" in *TCPSTREAM*) [ "$l" != "${prev:-}" ] && echo "$1| $l"; prev=$l ;; esac
	done &
}
# alive: fail when vnsnap up or a domain of the VNE is gone or shut down
# (crashed, powered off: its config preserves it, so xl lists it as such).
alive() {
	kill -0 $UP 2>/dev/null || { diag; cat /root/up.log; echo "VNSNAP-XEN-FAIL vnsnap up died"; exit 5; }
	for d in $VMS; do
		st=$($XL list | awk -v d=$d '$1 == d {print $5}')
		case "$st" in
		"") diag; echo "VNSNAP-XEN-FAIL domain $d is gone"; exit 7 ;;
		*s*|*c*) diag; echo "VNSNAP-XEN-FAIL domain $d is shut down ($st)"; exit 7 ;;
		esac
	done
}
up() {
	$V up --state $ST --store $STORE "$@" /root/xen.yaml > /root/up.log 2>&1 &
	UP=$!
	busy $UP &
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
	echo "VNSNAP-T-LEFT $($XL list | tail -n +2 | awk '{print $1}' | tr '\n' ' ')"
	# The next run's consoles start empty (xenconsoled appends to a log).
	RUN=$((RUN + 1))
	for d in $VMS; do mv $ST/$d.console $ST/$d.console.$RUN; touch $ST/$d.console; done
}
# progress VM: the console shows tcpstream received something.
progress() { grep "TCPSTREAM PROGRESS" $ST/$1.console | grep -v "rx=0 " >/dev/null; }
done_count() { cat $ST/a.console $ST/b.console | grep -c 'TCPSTREAM DONE'; }
# snap NAME ARGS...: a snapshot, then vnsnap verify.
snap() {
	name=$1
	shift
	$V snapshot --state $ST --store $STORE "$@" $name
	rc=$?
	[ $rc = 0 ] || { diag; cat /root/up.log; }
	echo "VNSNAP-T-SNAPSHOT name=$name rc=$rc done-before=$(done_count)"
	$V verify --store $STORE $name
	echo "VNSNAP-T-VERIFY name=$name rc=$?"
}
mkdir -p $ST
for d in $VMS; do follow $d; done
up
echo VNSNAP-T-UP
while ! progress a || ! progress b; do
	alive
	sleep 2
done
echo VNSNAP-T-FLOWING
snap s1 --sink memory
snap s2 --sink disk
snap s3 --algo stop-copy
$V ls --store $STORE
alive
down
for e in 1 2 3; do /usr/bin/framecheck $e 2 $ST/run/*.framelog; done
for s in $RESTORE; do
	up --restore $s
	echo "VNSNAP-T-RESTORED name=$s"
	while [ "$(done_count)" -lt 2 ]; do
		alive
		sleep 2
	done
	echo "VNSNAP-T-WORKLOAD name=$s $(cat $ST/a.console $ST/b.console | grep 'TCPSTREAM DONE' | tr '\n' ' ')"
	down
done
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
	script := fmt.Sprintf("RESTORE=%q\n", strings.Join(vneRestore, " ")) + vneScript
	// One CPU: see the package doc. tdt=0 (Xen's LAPIC timer in one-shot
	// mode, not TSC-deadline) is a guess at the hang seen in two of four
	// runs on one CPU, where QEMU sat at 0% CPU during s1 (every vCPU
	// halted, no timer due); the one run with it did not hang.
	m := Start(t, env, Dom0Config{Script: script, Files: files, Modules: []string{"xen-netback"}}, BootConfig{CPUs: 1, XenArgs: []string{"tdt=0"}})
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
	for _, name := range []string{"s1", "s2", "s3"} {
		snap := wait("VNSNAP-T-SNAPSHOT")
		t.Logf("%s", snap)
		if !strings.Contains(snap, "name="+name+" ") || num(snap, "rc") != 0 {
			t.Fatalf("vnsnap snapshot %s failed: %s", name, snap)
		}
		if v := wait("VNSNAP-T-VERIFY"); num(v, "rc") != 0 {
			t.Errorf("vnsnap verify %s: %s", name, v)
		}
	}
	left := func(what string) {
		t.Helper()
		if u := wait("VNSNAP-T-UP-EXIT"); num(u, "rc") != 0 {
			t.Errorf("vnsnap up (%s): %s", what, u)
		}
		if l := strings.TrimSpace(strings.TrimPrefix(wait("VNSNAP-T-LEFT"), "VNSNAP-T-LEFT")); l != "Domain-0" {
			t.Errorf("after vnsnap down (%s): domains %q left, want only Domain-0 (nothing paused or --migratedaway)", what, l)
		}
	}
	left("first run")
	for e := 1; e <= 3; e++ {
		c := wait("VNSNAP-T-CUT")
		t.Logf("cut: %s", c)
		if num(c, "epoch") != e || num(c, "orphans") != 0 || num(c, "missing") != 0 || num(c, "sent") == 0 {
			t.Errorf("frame log: %s; want epoch %d, frames sent, no orphan (no post-snapshot frame delivered to a pre-snapshot VM), no missing cut", c, e)
		}
	}
	for _, name := range vneRestore {
		if r := wait("VNSNAP-T-RESTORED"); !strings.Contains(r, "name="+name) {
			t.Fatalf("%s, want the restore of %s", r, name)
		}
		w := wait("VNSNAP-T-WORKLOAD")
		t.Logf("workload: %s", w)
		done := regexp.MustCompile(`TCPSTREAM DONE ok=(\d+) fail=(\d+)`).FindAllStringSubmatch(w, -1)
		if len(done) != 2 {
			t.Errorf("restored %s: %d tcpstream DONE lines, want 2", name, len(done))
		}
		for _, d := range done {
			if d[1] == "0" || d[2] != "0" {
				t.Errorf("restored %s's workload: %q, want streams ok and none failed", name, d[0])
			}
		}
		left("restored " + name)
	}
	if got, want := wait(MarkerDone), MarkerDone+" rc=0"; got != want {
		t.Errorf("dom0 script: got %q, want %q", got, want)
	}
	t.Logf("whole run %v", m.Uptime().Round(1e9))
}
