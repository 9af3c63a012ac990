package xentest

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vnsnap/vnsnap/qemubackend/guestimg"
	"github.com/vnsnap/vnsnap/xenbackend"
)

// oneVNE is a VNE of one PVH domU (with its vif on the switch) whose guest
// prints "HB n" every second.
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
    guest: {kernel: /root/vmlinuz, initrd: /root/guest.gz, cmdline: "CMDLINE"}
`

// dom0Shell defines the shell functions both dom0 scripts use (after
// XL=...): diag prints what dom0 looks like when something failed; busy PID,
// while PID lives, prints its I/O count whenever it changed (the migration
// streams through the receivers' sockets, xl's images, the store's writes),
// so that a long snapshot under a loaded host shows progress on the console
// while the workload stands still, and a hung one falls silent.
const dom0Shell = `diag() { echo "VNSNAP-T-DIAG"; free; $XL info | grep -E 'free_memory|total_memory'; $XL list; dmesg | tail -n 30; }
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
// our receiver, which writes the page file, stored as a page image), the
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
		echo "VNSNAP-T-WAIT hb=$(lasthb)"
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
	echo "VNSNAP-T-SNAP-BEGIN $1 hb=$(lasthb)"
	vnsnap snapshot --state $ST --store $STORE --sink memory $1
	rc=$?
	[ $rc = 0 ] || { diag; cat /root/up.log; }
	echo "VNSNAP-T-SNAP-END $1 rc=$rc hb=$(lasthb)"
	manifest $1
}
mkdir -p $ST
touch $ST/a.console
up
beats 2
snap s1
beats 2
snap s2
beats 2
echo "VNSNAP-T-RUNNING hb=$(lasthb)"
vnsnap ls --store $STORE
down
mv $ST/a.console $ST/a.console.1
touch $ST/a.console
up --restore s2
beats 2
echo "VNSNAP-T-RESTORED first=$(grep '^HB ' $ST/a.console | head -n 1 | sed 's/HB //') hb=$(lasthb)"
down
`

// TestXenMachine runs one domU through every operation of the port on real
// Xen, by way of vnsnap in dom0: Start, two live Saves (xl migrate to our
// receiver, held at the snapshot point until Resume), Kill, Restore paused
// and Resume. Each snapshot is written by the receiver as a page file
// (xen-pfn-file-v2) and stored as a page image; the second adds far fewer
// bytes (its pages deduplicate against the first's); the domain restored
// from the second, through the stream rebuilt from its page file, goes on
// from that snapshot's point, and no domain is left, paused or renamed.
// (One boot for both: a second Xen boot would cost CI about 6 minutes.)
func TestXenMachine(t *testing.T) {
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
	snap := func(name string) (begin, end, added int) {
		t.Helper()
		begin = num(wait("VNSNAP-T-SNAP-BEGIN "+name), "hb")
		e := wait("VNSNAP-T-SNAP-END " + name)
		if num(e, "rc") != 0 {
			t.Fatalf("vnsnap snapshot: %s", e)
		}
		man := wait("VNSNAP-T-MANIFEST " + name)
		if !strings.Contains(man, "format="+xenbackend.PageFileFormat+" ") || num(man, "images") < 1 {
			t.Errorf("%s: want format=%s and the memory a page image (images>=1)", man, xenbackend.PageFileFormat)
		}
		t.Logf("%s; %s", e, man)
		return begin, num(e, "hb"), num(man, "added")
	}
	wait(MarkerReady)
	_, _, added1 := snap("s1")
	begin, end, added2 := snap("s2")
	// 128 MiB of a booted guest: the first snapshot stores its non-zero
	// pages; the second only the blocks the guest changed in between
	// (without dedup it would store as much again).
	if added1 < 4<<20 || added2*2 > added1 {
		t.Errorf("added bytes: s1 %d, s2 %d; want s1 at least 4 MiB and s2 under half of it (deduplicated)", added1, added2)
	}
	t.Logf("added bytes: s1 %d, s2 %d (%.1f %%)", added1, added2, 100*float64(added2)/float64(added1))
	running := num(wait("VNSNAP-T-RUNNING"), "hb")
	left()
	restored := wait("VNSNAP-T-RESTORED")
	first := num(restored, "first")
	left()
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
		KernelVersion: KernelVersion, Modules: []string{"xen-netfront"}, Programs: []string{"heartbeat"},
		Busybox: env.Busybox(),
	})
	if err != nil {
		t.Fatal(err)
	}
	cmdline := guestimg.KernelArgs("10.0.0.1/24", "", guestimg.Program{Name: "heartbeat", Args: []string{"-interval=1s"}})
	bin := filepath.Join(t.TempDir(), "vnsnap")
	if err := GoBinary(ctx, "../..", "./cmd/vnsnap", bin); err != nil {
		t.Fatal(err)
	}
	m := Start(t, env, Dom0Config{Script: script, Modules: []string{"xen-netback"}, Files: []File{
		{Path: "/root/vmlinuz", Src: env.Kernel()},
		{Path: "/root/guest.gz", Src: img.Initrd},
		{Path: "/root/one.yaml", Data: []byte(strings.Replace(oneVNE, "CMDLINE", cmdline, 1))},
		{Path: "/usr/bin/vnsnap", Src: bin},
	}}, BootConfig{})
	return m
}
