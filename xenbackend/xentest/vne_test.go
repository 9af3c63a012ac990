// TestXenVNE runs in CI beside TestXenMachine, after the package's
// failure-path test. It took 350 s beside TestXenVNESinks on 4 December
// 2026 once a restored domain's streams went unpaced (vneUnpace); since 8
// December that test's snapshot kinds are in TestXenVNE's boot (the
// stop-and-copy, s2) and TestXenMachine's (the live disk sink), and it is
// gone: a boot of its own cost more than either snapshot. Alone: cd
// xenbackend/xentest && CI=1 VNSNAP_XEN_DIR=<module>/.cache/xen go test
// -run '^TestXenVNE$' -v .

package xentest

import (
	"context"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/vnsnap/vnsnap/qemubackend/guestimg"
)

// vneRate is each tcpstream stream's pace in bytes a second: slow enough
// that a live copy of a domain converges in few passes (the last runs
// unpaced, at about 150 KB/s under TCG, took 6 passes per domain and 3 min
// 40 s for one snapshot), and that a transfer lasts a known guest time
// however fast the machine emulates.
const vneRate = 64 << 10

// vneUnpace is tcpstream's -unpace-after: a restored domain (whose
// kernel adds the time it was away to its wall clock, not to its monotonic
// one) sends the rest of its streams unpaced, and the restored run, most of
// a VNE test's time when paced, takes a fraction of it. It is over the
// pauses the first run sees before its last snapshot point (a live
// snapshot's final pause, 2-3 s here) and under the time between a
// snapshot point and its restore (verify, down, up --restore: over a
// minute). A stop-and-copy pauses the domain for its whole save: after one,
// the first run goes on unpaced, so a stop-and-copy must be a case's last
// snapshot.
const vneUnpace = 30 * time.Second

// vneCase is one boot of the VNE: the snapshots taken while the workload
// flows (each "name vnsnap-snapshot-args"), and those restored afterwards,
// each from the store, to finish the workload. bytes is what each domU's
// tcpstream sends its peer, at vneRate: enough that the transfer is still
// going when the last snapshot to restore reaches its snapshot point (a
// restored tcpstream prints DONE only if it had not yet done so at its
// snapshot point; otherwise the restored consoles stay silent and the
// harness's stall deadline fails the test), and that frames cross every
// snapshot's cut.
type vneCase struct {
	snaps   []string
	restore []string
	bytes   int
}

// vneFile is the Xen VNE the dom0 script runs: two PVH domUs on one switch,
// kernel guests booted from the built-in image's initramfs (built on the
// host: dom0 has no Go toolchain), running tcpstream to each other.
func vneFile(bytes int) string {
	var b strings.Builder
	b.WriteString("name: xenlab\nhypervisor: xen\nalgorithm: vnsnap\nsink: memory\nhosts:\n  - {name: dom0, address: 127.0.0.1}\nvms:\n")
	peers := "-peers=10.0.0.1,10.0.0.2"
	for i, name := range []string{"a", "b"} {
		ip := fmt.Sprintf("10.0.0.%d", i+1)
		cmdline := guestimg.KernelArgs(ip+"/24", "", guestimg.Program{Name: "tcpstream",
			Args: []string{fmt.Sprintf("-bytes=%d", bytes), fmt.Sprintf("-rate=%d", vneRate), "-unpace-after=" + vneUnpace.String(), peers, "-self=" + ip, "-progress=2s"}})
		fmt.Fprintf(&b, "  - name: %s\n    host: dom0\n    memory: 128MiB\n    ip: %s\n    mac: 00:16:3e:00:00:0%d\n"+
			"    guest: {kernel: /root/vmlinuz, initrd: /root/guest.gz, cmdline: %q}\n", name, ip, i+1, cmdline)
	}
	return b.String()
}

// vneScript drives vnsnap in dom0 as a user would: up; while the workload
// flows, the snapshots of SNAPS (lines "name args"), each verified; down (no
// domain may be left, renamed or not); the cut of each snapshot checked on
// the frame logs; then, for each snapshot in RESTORE, up --restore, and the
// workload must finish with every byte verified. The consoles' tcpstream lines are copied to the serial
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
# fate VM: what became of VM: Xen's log, the end of its console, vnsnap up's log.
fate() {
	diag
	echo "VNSNAP-T-FATE $1: xl dmesg"; $XL dmesg | tail -n 40
	echo "VNSNAP-T-FATE $1: console"; tail -n 30 $ST/$1.console
	echo "VNSNAP-T-FATE $1: vnsnap up"; tail -n 40 /root/up.log
}
# alive: fail when vnsnap up or a domain of the VNE is gone or shut down
# (crashed, powered off: its config preserves it, so xl lists it as such).
alive() {
	kill -0 $UP 2>/dev/null || { diag; cat /root/up.log; echo "VNSNAP-XEN-FAIL vnsnap up died"; exit 5; }
	for d in $VMS; do
		st=$($XL list | awk -v d=$d '$1 == d {print $5}')
		case "$st" in
		"") fate $d; echo "VNSNAP-XEN-FAIL domain $d is gone"; exit 7 ;;
		*s*|*c*) fate $d; echo "VNSNAP-XEN-FAIL domain $d is shut down ($st)"; exit 7 ;;
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
lastprog() { grep "TCPSTREAM PROGRESS" $ST/$1.console | tail -n 1; }
done_count() { cat $ST/a.console $ST/b.console | grep -c 'TCPSTREAM DONE'; }
unpaced_count() { cat $ST/a.console $ST/b.console | grep -c 'TCPSTREAM UNPACED'; }
# snapwatch: every 30 s, the domains' states and each xl process's state
# and kernel wait channel, and libxl-save-helper's (it copies the memory):
# where a stalled save sits.
snapwatch() {
	while sleep 30; do
		echo "VNSNAP-T-SNAPWATCH $($XL list | awk 'NR > 1 {printf "%s:%s ", $1, $5}')"
		echo "VNSNAP-T-SNAPWATCH up $(grep -E 'rchar|wchar' /proc/$UP/io | tr '\n' ' ')utime,stime=$(awk '{print $14, $15}' /proc/$UP/stat)"
		for p in $(pidof xl libxl-save-helper); do
			echo "VNSNAP-T-SNAPWATCH xl $p $(tr '\0' ' ' < /proc/$p/cmdline | cut -c1-60) state=$(awk '{print $3}' /proc/$p/stat) wchan=$(cat /proc/$p/wchan)"
		done
	done
}
# snap NAME ARGS...: a snapshot (stall bound $STALL, see dom0Shell), then
# vnsnap verify.
snap() {
	name=$1
	shift
	snapwatch &
	W=$!
	$V snapshot --state $ST --store $STORE --stall $STALL "$@" $name
	rc=$?
	kill $W
	[ $rc = 0 ] || { diag; cat /root/up.log; }
	echo "VNSNAP-T-SNAPSHOT name=$name rc=$rc done-before=$(done_count) unpaced=$(unpaced_count) a=[$(lastprog a)] b=[$(lastprog b)]"
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
echo "$SNAPS" | while read -r name args; do snap $name $args < /dev/null; done
$V ls --store $STORE
alive
down
E=$(echo "$SNAPS" | wc -l)
for e in $(seq 1 $E); do /usr/bin/framecheck $e 2 $ST/run/*.framelog; done
for s in $RESTORE; do
	up --restore $s
	echo "VNSNAP-T-RESTORED name=$s at a=[$(lastprog a)] b=[$(lastprog b)]"
	while [ "$(done_count)" -lt 2 ]; do
		alive
		sleep 2
	done
	echo "VNSNAP-T-WORKLOAD name=$s unpaced=$(unpaced_count) $(cat $ST/a.console $ST/b.console | grep 'TCPSTREAM DONE' | tr '\n' ' ')"
	down
done
`

// TestXenVNE is the Xen backend's acceptance test on real Xen: a static
// vnsnap in dom0 boots a VNE of two PVH domUs whose vifs are relayed to its
// switch, takes a live snapshot through xl migrate and its own receiver
// (memory sink), then a stop-and-copy one (xl save, disk sink), verifies
// each, goes down leaving no domain, each snapshot's cut in the frame logs
// has no orphan, and the VNE restored from the live snapshot finishes its
// TCP workload with every byte verified. (A restore from a stop-and-copy
// snapshot, and a live one through the disk sink, are TestXenMachine's.)
func TestXenVNE(t *testing.T) {
	t.Parallel() // beside TestXenMachine, after TestXenReceiverFailures
	// 28 MB at 64 KiB/s: about 7 min of guest time if paced throughout.
	// The streams were at 12 MB at s1's end on 4 December (3 min 34 s
	// for s1) and at 6.8 MB in a later run (load 3.6); on 3 December s1
	// took 8 min 50 s (6 rounds, 136 MiB streamed per domain: dom0's copy
	// under TCG, not the dirty rate, sets its length) and the streams
	// were at 11 MB. The restored run sends the rest unpaced (vneUnpace),
	// so the margin costs little.
	// s2, the stop-and-copy, must come last (its pause unpaces the
	// streams). It begins once s1 is verified; on a loaded host the
	// streams may have ended by then (on 8 December 2026 its line read
	// done-before=2), and its cut then holds only frames of epoch 1 (the
	// cut is still checked: no orphan, no missing cut).
	runVNE(t, vneCase{snaps: []string{"s1 --sink memory", "s2 --sink disk --algo stop-copy"}, restore: []string{"s1"}, bytes: 28_000_000})
}

func runVNE(t *testing.T, c vneCase) {
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
		{Path: "/root/xen.yaml", Data: []byte(vneFile(c.bytes))},
	}
	for _, p := range []struct{ pkg, name string }{{"./cmd/vnsnap", "vnsnap"}, {"./xenbackend/xentest/testdata/framecheck", "framecheck"}} {
		bin := filepath.Join(dir, p.name)
		if err := GoBinary(ctx, "../..", p.pkg, bin); err != nil {
			t.Fatal(err)
		}
		files = append(files, File{Path: "/usr/bin/" + p.name, Src: bin})
	}
	// SNAPS holds one line per snapshot (no quote in them).
	script := "SNAPS='" + strings.Join(c.snaps, "\n") + "'\nRESTORE='" + strings.Join(c.restore, " ") + "'\n" + vneScript
	// One CPU: see the package doc. tdt=0 (Xen's LAPIC timer in one-shot
	// mode, not TSC-deadline) is a guess at the hang seen in two of four
	// runs on one CPU, where QEMU sat at 0% CPU during s1 (every vCPU
	// halted, no timer due); it did not cure it: two runs with it hung
	// (one during s1, one on 3 Dec before any snapshot, with the
	// workload flowing).
	m := Start(t, env, Dom0Config{Script: script, Files: files, Modules: []string{"xen-netback"}}, BootConfig{CPUs: 1, XenArgs: []string{"tdt=0"}, Diag: time.Minute})
	wait := func(marker string) string { t.Helper(); return mustWait(t, ctx, m, marker) }
	num := func(line, key string) int { t.Helper(); return lineNum(t, line, key) }
	wait(MarkerReady)
	wait("VNSNAP-T-UP")
	wait("VNSNAP-T-FLOWING")
	for i, sn := range c.snaps {
		name, _, _ := strings.Cut(sn, " ")
		snap := wait("VNSNAP-T-SNAPSHOT")
		t.Logf("%s", snap)
		if !strings.Contains(snap, "name="+name+" ") || num(snap, "rc") != 0 {
			t.Fatalf("vnsnap snapshot %s failed: %s", name, snap)
		}
		// Up to the last snapshot point the streams must keep their pace
		// (vneUnpace): else they may end before it.
		if i < len(c.snaps)-1 && num(snap, "unpaced") != 0 {
			t.Errorf("after snapshot %s, before the last: %d streams unpaced (a pause over %v)", name, num(snap, "unpaced"), vneUnpace)
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
	for e := 1; e <= len(c.snaps); e++ {
		c := wait("VNSNAP-T-CUT")
		t.Logf("cut: %s", c)
		if num(c, "epoch") != e || num(c, "orphans") != 0 || num(c, "missing") != 0 || num(c, "sent") == 0 {
			t.Errorf("frame log: %s; want epoch %d, frames sent, no orphan (no post-snapshot frame delivered to a pre-snapshot VM), no missing cut", c, e)
		}
	}
	for _, name := range c.restore {
		r := wait("VNSNAP-T-RESTORED")
		if !strings.Contains(r, "name="+name+" ") {
			t.Fatalf("%s, want the restore of %s", r, name)
		}
		t.Logf("%s", r)
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
