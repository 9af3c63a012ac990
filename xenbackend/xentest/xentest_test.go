package xentest

import (
	"context"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// domUInit is the domU's /init: a marker, then a tick a second, so that a
// restored domain proves it runs on from its saved state.
const domUInit = `#!/bin/busybox sh
/bin/busybox mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
echo VNSNAP-DOMU-UP
n=0
while :; do n=$((n+1)); echo "VNSNAP-DOMU-TICK $n"; /bin/busybox sleep 1; done
`

// bootScript runs in dom0: xl info and list, then one 128 MiB PVH domU,
// booted, checkpointed with xl save -c, destroyed and restored. The domU's
// console log (written by xenconsoled) is copied to the console with a
// "domu|" prefix. Every wait loop fails at once when the domain is gone, and
// prints while it waits, so the harness's stall deadline applies.
const bootScript = `
set -u
XL=/usr/lib/xen-4.17/bin/xl
LOG=/var/log/xen/console/guest-domu1.log
echo VNSNAP-T-XLINFO-BEGIN
$XL info || exit 1
$XL list || exit 2
echo VNSNAP-T-XLINFO-END
cat > /root/domu1.cfg <<EOF
name = "domu1"
type = "pvh"
kernel = "/root/vmlinuz"
ramdisk = "/root/domu-initrd.gz"
extra = "console=hvc0 rdinit=/init loglevel=4"
memory = 128
vcpus = 1
on_crash = "destroy"
EOF
touch $LOG
tail -F $LOG 2>/dev/null | while IFS= read -r l; do echo "domu| $l"; done &
# wait_for PATTERN FROM_BYTE: until PATTERN is in the log past FROM_BYTE.
wait_for() {
	while ! tail -c +$(($2 + 1)) $LOG | grep -q "$1"; do
		$XL domid domu1 >/dev/null 2>&1 || { echo "VNSNAP-XEN-FAIL domu1 is gone waiting for $1"; $XL list; exit 3; }
		sleep 1
	done
}
echo VNSNAP-T-CREATE
$XL create /root/domu1.cfg || exit 4
wait_for VNSNAP-DOMU-UP 0
wait_for VNSNAP-DOMU-TICK 0
echo VNSNAP-T-DOMU-UP
$XL list
echo VNSNAP-T-SAVE
$XL save -c domu1 /root/domu1.save || exit 5
echo "VNSNAP-T-SAVED bytes=$(wc -c < /root/domu1.save)"
$XL list
$XL destroy domu1 || exit 6
sleep 1
size=$(wc -c < $LOG)
echo VNSNAP-T-RESTORE
$XL restore /root/domu1.save || exit 7
echo VNSNAP-T-RESTORED
# Two ticks past the restore: the restored domain runs, not only its ring.
while [ "$(tail -c +$((size + 1)) $LOG | grep -c VNSNAP-DOMU-TICK)" -lt 2 ]; do
	$XL domid domu1 >/dev/null 2>&1 || { echo "VNSNAP-XEN-FAIL restored domu1 is gone"; exit 8; }
	sleep 1
done
echo "VNSNAP-T-TICKING-AFTER-RESTORE $(tail -c +$((size + 1)) $LOG | grep VNSNAP-DOMU-TICK | head -n 2 | tr '\n' ' ')"
$XL list
$XL destroy domu1
`

func TestXenBoots(t *testing.T) {
	env := Require(t, "../..")
	domuInitrd, err := DomUInitrd(env, domUInit)
	if err != nil {
		t.Fatal(err)
	}
	m := Start(t, env, Dom0Config{
		Script: bootScript,
		Files: []File{
			{Path: "/root/vmlinuz", Src: env.Kernel()},
			{Path: "/root/domu-initrd.gz", Data: domuInitrd},
		},
	}, BootConfig{})
	ctx := context.Background()
	at := map[string]time.Duration{}
	wait := func(marker string) string {
		t.Helper()
		line, err := m.Wait(ctx, marker)
		if err != nil {
			t.Fatalf("after %v: %v", m.Uptime().Round(time.Second), err)
		}
		at[marker] = m.Uptime()
		return line
	}
	wait(MarkerReady)
	t.Logf("dom0 ready after %v", at[MarkerReady].Round(time.Second))
	wait("VNSNAP-T-XLINFO-BEGIN")
	info := map[string]string{}
	for {
		line := wait("")
		if line == "VNSNAP-T-XLINFO-END" {
			break
		}
		if k, v, ok := cutField(line); ok {
			info[k] = v
		}
	}
	if got := info["xen_major"] + "." + info["xen_minor"]; got != XenVersion {
		t.Errorf("xl info xen version: got %q, want %q", got, XenVersion)
	}
	if info["total_memory"] == "" {
		t.Errorf("xl info: no total_memory field (got %v)", info)
	}
	wait("VNSNAP-T-CREATE")
	wait("VNSNAP-T-DOMU-UP")
	t.Logf("domU up %v after xl create", (at["VNSNAP-T-DOMU-UP"] - at["VNSNAP-T-CREATE"]).Round(time.Second))
	wait("VNSNAP-T-SAVE")
	saved := wait("VNSNAP-T-SAVED")
	t.Logf("xl save -c took %v (%s)", (at["VNSNAP-T-SAVED"] - at["VNSNAP-T-SAVE"]).Round(100*time.Millisecond), saved)
	n, _ := strconv.Atoi(regexp.MustCompile(`bytes=(\d+)`).FindStringSubmatch(saved + " bytes=0")[1])
	if n < 128<<20/2 {
		t.Errorf("save file: got %d bytes, want at least half of the domain's 128 MiB", n)
	}
	wait("VNSNAP-T-RESTORE")
	wait("VNSNAP-T-RESTORED")
	t.Logf("xl restore took %v", (at["VNSNAP-T-RESTORED"] - at["VNSNAP-T-RESTORE"]).Round(100*time.Millisecond))
	ticking := wait("VNSNAP-T-TICKING-AFTER-RESTORE")
	ticks := regexp.MustCompile(`VNSNAP-DOMU-TICK (\d+)`).FindAllStringSubmatch(ticking, -1)
	if len(ticks) != 2 || ticks[0][1] == ticks[1][1] {
		t.Errorf("after restore: got %q, want two different domU ticks", ticking)
	}
	done := wait(MarkerDone)
	if want := MarkerDone + " rc=0"; done != want {
		t.Errorf("dom0 script: got %q, want %q", done, want)
	}
	t.Logf("whole run %v", m.Uptime().Round(time.Second))
}

// xlInfoField matches an "xl info" line "key : value".
var xlInfoField = regexp.MustCompile(`^(\w+)\s*:\s*(.*)$`)

// cutField splits an "xl info" line.
func cutField(line string) (key, value string, ok bool) {
	m := xlInfoField.FindStringSubmatch(strings.TrimSpace(line))
	if m == nil {
		return "", "", false
	}
	return m[1], m[2], true
}
