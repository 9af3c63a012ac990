//go:build xen_extra

// TestXenBoots and TestXenLiveSnapshotReceiver (receive_test.go) are the
// first steps the Xen backend was built on (a boot, xl save/restore/migrate,
// the receiver driven by hand); TestXenMachine, TestXenReceiverFailures and
// TestXenVNE do all they do through vnsnap itself, each on a boot of its
// own. To keep CI's Xen suite to three boots they build with
// -tags xen_extra:
//
//	CI=1 go test -tags xen_extra ./xenbackend/xentest -run 'TestXenBoots|TestXenLiveSnapshotReceiver' -v

package xentest

import (
	"context"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vnsnap/vnsnap/xenbackend"
)

// bootScript runs in dom0: xl info and list, then one 128 MiB PVH domU with
// a vif (netback in dom0, netfront in the domU), booted, checkpointed with
// xl save -c, destroyed, restored, and live-migrated to dom0 itself through
// "xl migrate -s ”" with xl's own receiver. The domU's console logs
// (xenconsoled writes one per domain name; the migration's target is
// "domu1--incoming" at first) are copied to the console with a "domu|"
// prefix. Every wait loop fails at once when the domain is gone and the
// domU prints while it waits, so the harness's stall deadline applies.
const bootScript = `
set -u
XL=/usr/lib/xen-4.17/bin/xl
LOGS=/var/log/xen/console
stty -echo
echo VNSNAP-T-SEND-ME
read -r hello
echo "VNSNAP-T-GOT $hello"
/usr/bin/dom0probe || exit 11
echo VNSNAP-T-XLINFO-BEGIN
$XL info || exit 1
$XL list || exit 2
echo VNSNAP-T-XLINFO-END
` + domU1Cfg + `echo 'vif = [ "mac=00:16:3e:00:00:01,script=/etc/xen/scripts/vif-vnsnap" ]' >> /root/domu1.cfg
touch $LOGS/guest-domu1.log $LOGS/guest-domu1--incoming.log
tail -F $LOGS/guest-domu1.log $LOGS/guest-domu1--incoming.log 2>/dev/null | while IFS= read -r l; do echo "domu| $l"; done &
count() { cat $LOGS/guest-domu1*.log | grep -c "$1"; }
# wait_count PATTERN N: until the domU's logs hold N lines with PATTERN.
wait_count() {
	while [ "$(count "$1")" -lt "$2" ]; do
		$XL domid domu1 >/dev/null 2>&1 || { echo "VNSNAP-XEN-FAIL domu1 is gone waiting for $1"; $XL list; exit 3; }
		sleep 1
	done
}
# ticking: two more ticks than now, so the domain runs (not only its ring).
ticking() {
	wait_count VNSNAP-DOMU-TICK $(($(count VNSNAP-DOMU-TICK) + 2))
	echo "VNSNAP-T-TICKING-AFTER-$1 $(cat $LOGS/guest-domu1*.log | grep VNSNAP-DOMU-TICK | tail -n 2 | tr '\n' ' ')"
}
echo VNSNAP-T-CREATE
$XL create /root/domu1.cfg || exit 4
wait_count VNSNAP-DOMU-UP 1
wait_count VNSNAP-DOMU-TICK 1
echo VNSNAP-T-DOMU-UP
$XL list
wait_count VNSNAP-DOMU-ETH0 1
id=$($XL domid domu1)
if ip link show vif$id.0 | grep -q UP; then echo "VNSNAP-T-VIF-UP vif$id.0"; else echo "VNSNAP-XEN-FAIL vif$id.0 is not up"; ip link; exit 10; fi
$XL network-list domu1
echo VNSNAP-T-SAVE
$XL save -c domu1 /root/domu1.save || exit 5
echo "VNSNAP-T-SAVED bytes=$(wc -c < /root/domu1.save)"
$XL destroy domu1 || exit 6
echo VNSNAP-T-RESTORE
$XL restore /root/domu1.save || exit 7
echo VNSNAP-T-RESTORED
ticking RESTORE
rm /root/domu1.save
echo VNSNAP-T-MIGRATE
$XL migrate -s "" domu1 "$XL migrate-receive" || exit 8
echo VNSNAP-T-MIGRATED
$XL list
$XL list domu1--migratedaway >/dev/null 2>&1 && { echo "VNSNAP-XEN-FAIL domu1--migratedaway left behind"; exit 9; }
ticking MIGRATE
$XL destroy domu1
`

func TestXenBoots(t *testing.T) {
	m := startWithDomU(t, "dom0probe", Dom0Config{
		Script:  bootScript,
		Files:   []File{{Path: "/etc/xen/scripts/vif-vnsnap", Data: []byte(xenbackend.VifScript), Mode: 0o755}},
		Modules: []string{"xen-netback"},
	}, "xen-netfront")
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
	wait("VNSNAP-T-SEND-ME")
	if err := m.Send("hello-from-host\n"); err != nil {
		t.Fatal(err)
	}
	if got := wait("VNSNAP-T-GOT"); got != "VNSNAP-T-GOT hello-from-host" {
		t.Errorf("console input: dom0 read %q, want %q", got, "VNSNAP-T-GOT hello-from-host")
	}
	if got, want := wait("VNSNAP-T-PROBE"), "VNSNAP-T-PROBE caps=control_d domains=1"; got != want {
		t.Errorf("static binary in dom0: got %q, want %q", got, want)
	}
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
	wait("VNSNAP-T-VIF-UP")
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
	twoTicks(t, wait("VNSNAP-T-TICKING-AFTER-RESTORE"))
	wait("VNSNAP-T-MIGRATE")
	wait("VNSNAP-T-MIGRATED")
	t.Logf("live migration to dom0 itself took %v", (at["VNSNAP-T-MIGRATED"] - at["VNSNAP-T-MIGRATE"]).Round(100*time.Millisecond))
	twoTicks(t, wait("VNSNAP-T-TICKING-AFTER-MIGRATE"))
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
