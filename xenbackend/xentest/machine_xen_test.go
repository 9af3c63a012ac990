package xentest

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vnsnap/vnsnap/qemubackend/guestimg"
	"github.com/vnsnap/vnsnap/xenbackend"
)

// oneVNE is a VNE of one PVH domU (with its vif on the switch, and a disk)
// whose guest prints "HB n" every second and runs diskcheck on its disk
// (workloads/guest/diskcheck: "DISK n" lines, "DISK FAIL" if the disk does
// not hold what the guest wrote last).
const oneVNE = `name: xenone
hypervisor: xen
hosts:
  - {name: dom0, address: 127.0.0.1}
vms:
  - name: a
    host: dom0
    memory: 128MiB
    ip: 10.0.0.1
    mac: 00:16:3e:00:00:01
    guest: {kernel: /root/vmlinuz, initrd: /root/guest.gz, cmdline: "CMDLINE", disk: /root/disk.raw}
`

// dom0Shell defines the shell functions both dom0 scripts use (after
// XL=...): diag prints what dom0 looks like when something failed; busy PID,
// while PID lives, prints its I/O count whenever it changed (the migration
// streams through the receivers' sockets, xl's images, the store's writes),
// so that a long snapshot under a loaded host shows progress on the console
// while the workload stands still, and a hung one falls silent. STALL is
// the scripts' vnsnap snapshot --stall: over vnsnap's default of 2 min (on
// 8 December 2026, beside a fuzzer, dom0, niced under TCG, moved no byte of
// a live copy for 2 min and the snapshot aborted) and under the harness's 5
// min of console silence (BootConfig.Stall), which a stalled snapshot
// leaves (busy prints only when I/O moves), so that a stall ends as
// vnsnap's error, not as a killed boot.
const dom0Shell = `STALL=4m
diag() { echo "VNSNAP-T-DIAG"; free; $XL info | grep -E 'free_memory|total_memory'; $XL list; dmesg | tail -n 30; }
busy() {
	last=""
	while kill -0 $1 2>/dev/null; do
		io=$(awk '/^(rchar|wchar)/ {n += $2} END {print n}' /proc/$1/io 2>/dev/null)
		[ "$io" != "$last" ] && echo "VNSNAP-T-BUSY io=$io"
		last=$io
		sleep 5
	done
}
`

// pageScript: vnsnap up, two live snapshots (each saved by xl migrate into
// our receiver, which writes the page file, stored as a page image: s1
// through the memory sink, s2 through the disk sink), the
// manifests' format label and added bytes, down (killed), up --restore s2
// (the stream rebuilt from the page file fed to xl restore): the heartbeat
// counter must go on from the second snapshot's point.
const pageScript = `
set -u
cd /root
XL=/usr/lib/xen-4.17/bin/xl
ST=/root/st
STORE=/root/store
` + dom0Shell + `
lasthb() { grep '^HB ' $ST/a.console | tail -n 1 | sed 's/HB //'; }
hbs() { grep -c '^HB ' $ST/a.console; }
# the disk: diskcheck's last generation, its failures, its first line
# after a restore
lastdisk() { grep '^DISK [0-9]' $ST/a.console | tail -n 1 | sed 's/DISK //'; }
firstdisk() { grep '^DISK [0-9]' $ST/a.console | head -n 1 | sed 's/DISK //'; }
diskfails() { grep -c '^DISK FAIL' $ST/a.console; }
up() {
	vnsnap up --state $ST --store $STORE "$@" /root/one.yaml > /root/up.log 2>&1 &
	UP=$!
	busy $UP &
	while ! grep -q "^VNE xenone up" /root/up.log 2>/dev/null; do
		kill -0 $UP 2>/dev/null || { diag; cat /root/up.log; echo "VNSNAP-XEN-FAIL vnsnap up exited:"; exit 3; }
		sleep 1
	done
	cat /root/up.log
}
down() {
	vnsnap down --state $ST || { echo "VNSNAP-XEN-FAIL vnsnap down"; exit 4; }
	wait $UP
	echo "VNSNAP-T-UP-EXIT rc=$?"
	echo "VNSNAP-T-LEFT $($XL list | tail -n +2 | awk '{print $1}' | tr '\n' ' ')"
}
beats() {
	want=$(($(hbs) + $1))
	while [ "$(hbs)" -lt $want ]; do
		kill -0 $UP 2>/dev/null || { diag; cat /root/up.log; echo "VNSNAP-XEN-FAIL vnsnap up died"; exit 5; }
		echo "VNSNAP-T-WAIT hb=$(lasthb) disk=$(lastdisk)"
		sleep 2
	done
}
# manifest NAME: the snapshot's page-image format label, whether its VM's
# memory is a page image, and the bytes of objects it added to the store.
manifest() {
	M=$STORE/snapshots/$1/manifest.json
	fmt=$(grep -o '"image-file-format": *"[^"]*"' $M | sed 's/.*: *"//; s/"//')
	images=$(grep -c '"images"' $M)
	added=$(grep -o '"object_bytes": *[0-9]*' $M | sed 's/.*: *//')
	echo "VNSNAP-T-MANIFEST $1 format=${fmt:-none} images=$images added=${added:-0}"
}
snap() {
	n=$1
	shift
	echo "VNSNAP-T-SNAP-BEGIN $n hb=$(lasthb) disk=$(lastdisk)"
	vnsnap snapshot --state $ST --store $STORE --stall $STALL "$@" $n
	rc=$?
	[ $rc = 0 ] || { diag; cat /root/up.log; }
	echo "VNSNAP-T-SNAP-END $n rc=$rc hb=$(lasthb) disk=$(lastdisk)"
	manifest $n
}
# restored NAME: the VNE restored from NAME, on until 2 more heartbeats
restored() {
	mv $ST/a.console $ST/a.console.$1
	touch $ST/a.console
	up --restore $1
	beats 2
	echo "VNSNAP-T-RESTORED $1 first=$(grep '^HB ' $ST/a.console | head -n 1 | sed 's/HB //') hb=$(lasthb) firstdisk=$(firstdisk) disk=$(lastdisk) diskfails=$(diskfails)"
	grep '^DISK FAIL' $ST/a.console
	down
}
# A sparse 16 MiB disk: diskcheck starts it at generation 0. The VNE's
# disk is never written (vnsnap runs the domain on a copy).
truncate -s 16M /root/disk.raw
mkdir -p $ST
touch $ST/a.console
up
beats 2
# diskcheck waits for xvda (blkfront): its first generation
while [ -z "$(lastdisk)" ]; do
	kill -0 $UP 2>/dev/null || { diag; cat /root/up.log; echo "VNSNAP-XEN-FAIL vnsnap up died"; exit 5; }
	grep '^DISK FAIL' $ST/a.console && { diag; echo "VNSNAP-XEN-FAIL diskcheck"; exit 6; }
	echo "VNSNAP-T-WAIT hb=$(lasthb) disk=none"
	sleep 2
done
snap s1 --sink memory
beats 2
snap s2 --sink disk
beats 2
snap s3 --sink memory --algo stop-copy
beats 2
echo "VNSNAP-T-RUNNING hb=$(lasthb) disk=$(lastdisk) diskfails=$(diskfails)"
grep '^DISK FAIL' $ST/a.console
vnsnap ls --store $STORE
down
echo "VNSNAP-T-BASE nonzero=$(tr -d '\000' < /root/disk.raw | wc -c)"
echo "VNSNAP-T-IMAGES $(ls $ST/run | grep '^a\..*raw$' | tr '\n' ' ')"
restored s2
restored s3
`

// TestXenMachine runs one domU through every operation of the port on real
// Xen, by way of vnsnap in dom0: Start, two live Saves (xl migrate to our
// receiver, held at the snapshot point until Resume), Kill, Restore paused
// and Resume. Each snapshot is written by the receiver as a page file
// (xen-pfn-file-v2) and stored as a page image, s1 through the memory sink
// (stored after the commit point) and s2 through the disk sink (written in
// the state directory, stored in the background before the commit: the
// live disk-sink path of a Xen VNE snapshot); the second adds far fewer
// bytes (its pages deduplicate against the first's); the domain restored
// from the second, through the stream rebuilt from its page file, goes on
// from that snapshot's point, and no domain is left, paused or renamed.
//
// The domU has a disk (the VNE file's, which vnsnap never writes: it runs
// the domain on a copy in its state directory), frozen at each snapshot
// point: two live snapshots and a stop-and-copy one. The guest's diskcheck
// writes a generation counter to it five times a second and checks, before
// each write, that the disk holds the last one; restored from s2 (live) and
// from s3 (stop-and-copy), it must find on its disk what its memory wrote
// last (no DISK FAIL), going on from the snapshot point. A disk frozen
// before or after the memory fails it.
// (One boot for all: a second Xen boot would cost CI about 6 minutes.)
func TestXenMachine(t *testing.T) {
	t.Parallel() // beside TestXenVNE, after TestXenReceiverFailures
	env := Require(t, "../..")
	ctx := context.Background()
	m := startOneDomU(t, ctx, env, pageScript)
	wait := func(marker string) string { t.Helper(); return mustWait(t, ctx, m, marker) }
	num := func(line, key string) int { t.Helper(); return lineNum(t, line, key) }
	left := func() {
		t.Helper()
		if u := wait("VNSNAP-T-UP-EXIT"); num(u, "rc") != 0 {
			t.Errorf("vnsnap up: %s", u)
		}
		if l := strings.TrimSpace(strings.TrimPrefix(wait("VNSNAP-T-LEFT"), "VNSNAP-T-LEFT")); l != "Domain-0" {
			t.Errorf("after vnsnap down: domains %q left, want only Domain-0 (nothing paused or --migratedaway)", l)
		}
	}
	type snapLines struct{ begin, end, diskBegin, diskEnd, added int }
	snap := func(name string) snapLines {
		t.Helper()
		b := wait("VNSNAP-T-SNAP-BEGIN " + name)
		e := wait("VNSNAP-T-SNAP-END " + name)
		if num(e, "rc") != 0 {
			t.Fatalf("vnsnap snapshot: %s", e)
		}
		man := wait("VNSNAP-T-MANIFEST " + name)
		if !strings.Contains(man, "format="+xenbackend.PageFileFormat+" ") || num(man, "images") < 1 {
			t.Errorf("%s: want format=%s and the memory a page image (images>=1)", man, xenbackend.PageFileFormat)
		}
		t.Logf("%s; %s", e, man)
		return snapLines{num(b, "hb"), num(e, "hb"), num(b, "disk"), num(e, "disk"), num(man, "added")}
	}
	// restoredDisk checks the disk of a VNE restored from s: diskcheck
	// found on it what its memory last wrote (no DISK FAIL), went on from
	// the snapshot point and counts on.
	restoredDisk := func(line string, s snapLines) {
		t.Helper()
		first := num(line, "firstdisk")
		if n := num(line, "diskfails"); n != 0 {
			t.Errorf("%s: the restored disk is not the one frozen with the memory (DISK FAIL)", line)
		}
		if first < s.diskBegin || first > s.diskEnd+1 {
			t.Errorf("%s: restored disk generation %d, want it between %d (when the snapshot began) and %d+1 (when it ended)", line, first, s.diskBegin, s.diskEnd)
		}
		if num(line, "disk") <= first {
			t.Errorf("%s: the restored guest's disk check does not count on", line)
		}
	}
	wait(MarkerReady)
	s1 := snap("s1")
	s2 := snap("s2")
	added1, added2, begin, end := s1.added, s2.added, s2.begin, s2.end
	// 128 MiB of a booted guest: the first snapshot stores its non-zero
	// pages; the second only the blocks the guest changed in between
	// (without dedup it would store as much again).
	if added1 < 4<<20 || added2*2 > added1 {
		t.Errorf("added bytes: s1 %d, s2 %d; want s1 at least 4 MiB and s2 under half of it (deduplicated)", added1, added2)
	}
	t.Logf("added bytes: s1 %d, s2 %d (%.1f %%)", added1, added2, 100*float64(added2)/float64(added1))
	s3 := snap("s3") // stop-and-copy: the disk frozen where the domain suspends
	run := wait("VNSNAP-T-RUNNING")
	running := num(run, "hb")
	if num(run, "diskfails") != 0 || num(run, "disk") <= s3.diskEnd {
		t.Errorf("%s: the source's disk check failed or stopped", run)
	}
	left()
	if b := wait("VNSNAP-T-BASE"); num(b, "nonzero") != 0 {
		t.Errorf("%s: the VNE file's disk was written (vnsnap must run the domain on a copy)", b)
	}
	images := wait("VNSNAP-T-IMAGES")
	for _, f := range []string{"a.boot.raw", "a.e1.raw", "a.e2.raw", "a.e3.raw"} {
		if !strings.Contains(images, " "+f) {
			t.Errorf("%s: want %s (frozen at a snapshot point, or the overlay after s3)", images, f)
		}
	}
	restored := wait("VNSNAP-T-RESTORED s2")
	first := num(restored, "first")
	left()
	restoredDisk(restored, s2)
	r3 := wait("VNSNAP-T-RESTORED s3")
	left()
	restoredDisk(r3, s3)
	t.Logf("disk generations: s2 %d-%d restored from %d; s3 (stop-and-copy) %d-%d restored from %d",
		s2.diskBegin, s2.diskEnd, num(restored, "firstdisk"), s3.diskBegin, s3.diskEnd, num(r3, "firstdisk"))
	if first <= begin || first > end+2 || first >= running {
		t.Errorf("restored heartbeat %d: want it after %d (before s2 began), at most %d+2 (when it ended) and before %d (the source's last)", first, begin, end, running)
	}
	if num(restored, "hb") <= first {
		t.Errorf("%s: the restored guest does not count on", restored)
	}
	t.Logf("heartbeats: s2 began at %d, ended at %d, %d before down, restored from %d", begin, end, running, first)
	if got, want := wait(MarkerDone), MarkerDone+" rc=0"; got != want {
		t.Errorf("dom0 script: got %q, want %q", got, want)
	}
	t.Logf("whole run %v", m.Uptime().Round(1e9))
}

// startOneDomU boots Xen with dom0 running script beside a static vnsnap,
// the Xen kernel and a heartbeat guest (one beat a second) for oneVNE's
// one domU: the machine of TestXenMachine.
func startOneDomU(t *testing.T, ctx context.Context, env Env, script string) *Machine {
	t.Helper()
	img, err := guestimg.Build(ctx, guestimg.Config{
		CacheDir: filepath.Join(t.TempDir(), "guest"), ModuleRoot: "../..", Root: env.Path("/"),
		KernelVersion: KernelVersion, Modules: []string{"xen-netfront", "xen-blkfront"}, Programs: []string{"heartbeat", "diskcheck"},
		Busybox: env.Busybox(),
	})
	if err != nil {
		t.Fatal(err)
	}
	cmdline := guestimg.KernelArgs("10.0.0.1/24", "", guestimg.Program{Name: "heartbeat", Args: []string{"-interval=1s"}},
		guestimg.Program{Name: "diskcheck", Args: []string{"-dev=/dev/xvda"}})
	bin := filepath.Join(t.TempDir(), "vnsnap")
	if err := GoBinary(ctx, "../..", "./cmd/vnsnap", bin); err != nil {
		t.Fatal(err)
	}
	m := Start(t, env, Dom0Config{Script: script, Modules: []string{"xen-netback", "loop", "xen-blkback"}, Files: []File{
		{Path: "/root/vmlinuz", Src: env.Kernel()},
		{Path: "/root/guest.gz", Src: img.Initrd},
		{Path: "/root/one.yaml", Data: []byte(strings.Replace(oneVNE, "CMDLINE", cmdline, 1))},
		{Path: "/usr/bin/vnsnap", Src: bin},
	}}, BootConfig{})
	return m
}
