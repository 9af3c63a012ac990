//go:build xen_extra

package xentest

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/vnsnap/vnsnap/xenbackend"
)

// receiveScript runs in dom0: one PVH domU, an "xl save -c" file parsed by
// our parser, then a live snapshot through "xl migrate" with our receiver
// (xenreceive) as the receiving command: xl must resume the source under
// its own name; then the domain is destroyed and restored from the bytes
// the receiver stored, and must run on from its snapshot point (its tick
// counter goes on from between the ticks before the snapshot and before
// the destroy, not from 1).
const receiveScript = `
set -u
XL=/usr/lib/xen-4.17/bin/xl
LOGS=/var/log/xen/console
` + domU1Cfg + `touch $LOGS/guest-domu1.log
tail -F $LOGS/guest-domu1.log 2>/dev/null | while IFS= read -r l; do echo "domu| $l"; done &
count() { grep -c "$1" $LOGS/guest-domu1.log; }
lasttick() { grep VNSNAP-DOMU-TICK $LOGS/guest-domu1.log | tail -n 1 | sed 's/.*TICK //'; }
wait_count() {
	while [ "$(count "$1")" -lt "$2" ]; do
		$XL domid domu1 >/dev/null 2>&1 || { echo "VNSNAP-XEN-FAIL domu1 is gone waiting for $1"; $XL list; exit 3; }
		sleep 1
	done
}
ticking() {
	wait_count VNSNAP-DOMU-TICK $(($(count VNSNAP-DOMU-TICK) + 2))
	echo "VNSNAP-T-TICKING-AFTER-$1 $(grep VNSNAP-DOMU-TICK $LOGS/guest-domu1.log | tail -n 2 | tr '\n' ' ')"
}
$XL create /root/domu1.cfg || exit 4
wait_count VNSNAP-DOMU-TICK 2
echo VNSNAP-T-DOMU-UP
$XL save -c domu1 /root/checkpoint.save || exit 5
/usr/bin/xenreceive -parse /root/checkpoint.save || exit 6
rm /root/checkpoint.save
ticking SAVE
echo "VNSNAP-T-SNAP-BEGIN tick=$(lasttick)"
$XL migrate -s "" domu1 "/usr/bin/xenreceive /root/snap.save"
rc=$?
echo "VNSNAP-T-SNAP-END xlrc=$rc tick=$(lasttick)"
$XL list
$XL list domu1--migratedaway >/dev/null 2>&1 && { echo "VNSNAP-XEN-FAIL domu1--migratedaway left behind"; exit 7; }
$XL list domu1 | grep -q '^domu1 ' || { echo "VNSNAP-XEN-FAIL domu1 is not listed after the snapshot"; exit 8; }
ticking SNAP
/usr/bin/xenreceive -parse /root/snap.save || exit 9
/usr/bin/xenreceive -seed /root/snap.save || exit 12
echo "VNSNAP-T-DESTROY tick=$(lasttick)"
$XL destroy domu1 || exit 10
: > $LOGS/guest-domu1.log
$XL restore /root/snap.save || exit 11
echo VNSNAP-T-RESTORED
ticking RESTORE
echo "VNSNAP-T-FIRST-RESTORED tick=$(grep VNSNAP-DOMU-TICK $LOGS/guest-domu1.log | head -n 1 | sed 's/.*TICK //')"
$XL destroy domu1
`

// TestXenLiveSnapshotReceiver proves the receiver against real Xen 4.17: it
// parses a real "xl save -c" file and a real live "xl migrate" stream, the
// source domain is paused and renamed while the Paused hook runs and then
// resumed under its own name, and "xl restore" accepts the stored bytes.
func TestXenLiveSnapshotReceiver(t *testing.T) {
	m := startWithDomU(t, "xenreceive", Dom0Config{Script: receiveScript})
	ctx := context.Background()
	wait := func(marker string) string { t.Helper(); return mustWait(t, ctx, m, marker) }
	field := func(line, key string) int { t.Helper(); return lineNum(t, line, key) }
	wait(MarkerReady)
	wait("VNSNAP-T-DOMU-UP")
	// A real stop-and-copy save file: the whole 128 MiB, every page once.
	saved := wait("VNSNAP-RECV-PARSED")
	t.Logf("xl save -c file: %s", saved)
	if got, want := field(saved, "bytes"), field(saved, "filesize"); got != want {
		t.Errorf("xl save -c file: parser stopped at byte %d, file has %d", got, want)
	}
	if d := field(saved, "distinct"); d < 128<<20/4096/2 {
		t.Errorf("xl save -c file: %d distinct pages, want at least half of 128 MiB", d)
	}
	if got := field(saved, "type"); got != 2 {
		t.Errorf("xl save -c file: domain type %d, want 2 (HVM/PVH)", got)
	}
	twoTicks(t, wait("VNSNAP-T-TICKING-AFTER-SAVE"))
	snapTick := field(wait("VNSNAP-T-SNAP-BEGIN"), "tick")
	stored := wait("VNSNAP-RECV-STORED")
	t.Logf("live stream: %s", stored)
	if d, p := field(stored, "distinct"), field(stored, "pages"); d < 128<<20/4096/2 || p < d {
		t.Errorf("live stream: %d pages, %d distinct; want at least half of 128 MiB distinct", p, d)
	}
	// xl list's state: neither running nor blocked, shut down for suspend
	// (the 4th and 5th letters), so it does not run during the hook.
	if got, want := wait("VNSNAP-RECV-PAUSED"), "VNSNAP-RECV-PAUSED migratedaway=---ss-"; got != want {
		t.Errorf("during the Paused hook: got %q, want %q (the source renamed and suspended)", got, want)
	}
	done := wait("VNSNAP-RECV-DONE")
	end := wait("VNSNAP-T-SNAP-END")
	endTick := field(end, "tick")
	if field(end, "xlrc") == 0 {
		t.Errorf("xl migrate: got exit status 0, want a failure (the receiver reported non-zero so the source runs on)")
	}
	twoTicks(t, wait("VNSNAP-T-TICKING-AFTER-SNAP"))
	parsed := wait("VNSNAP-RECV-PARSED")
	if got, want := field(parsed, "filesize"), field(done, "bytes"); got != want {
		t.Errorf("stored file: %d bytes, receiver read %d", got, want)
	}
	checkSeed(t, wait, stored)
	destroyTick := field(wait("VNSNAP-T-DESTROY"), "tick")
	wait("VNSNAP-T-RESTORED")
	twoTicks(t, wait("VNSNAP-T-TICKING-AFTER-RESTORE"))
	first := field(wait("VNSNAP-T-FIRST-RESTORED"), "tick")
	// The snapshot point is the end of the migration: the restored domain
	// goes on from a tick after the one before the snapshot began, and not
	// past the last logged when xl gave up (plus two for console lag), well
	// before the source's last tick before the destroy.
	if first <= snapTick || first > endTick+2 || first >= destroyTick {
		t.Errorf("restored domain's first tick %d: want it after %d (before the snapshot), at most %d+2 (when xl migrate ended) and before %d (the destroy)", first, snapTick, endTick, destroyTick)
	}
	t.Logf("ticks: %d before the snapshot, %d when xl migrate ended, %d before the destroy, %d first after the restore", snapTick, endTick, destroyTick, first)
	if got, want := wait(MarkerDone), MarkerDone+" rc=0"; got != want {
		t.Errorf("dom0 script: got %q, want %q", got, want)
	}
	t.Logf("whole run %v", m.Uptime().Round(1e9))
}

// checkSeed reads the real live stream, pages dropped but one, that
// "xenreceive -seed" prints, and parses it on the host: its headers and
// trailing records are Xen's own. With VNSNAP_XEN_SEED_OUT set, it is
// written there (the fuzz seed in xenbackend/testdata comes from there).
func checkSeed(t *testing.T, wait func(string) string, stored string) {
	t.Helper()
	var enc strings.Builder
	for {
		line := wait("VNSNAP-RECV-SEED")
		if strings.Contains(line, "VNSNAP-RECV-SEED-END") {
			break
		}
		enc.WriteString(strings.TrimSpace(strings.TrimPrefix(line[strings.Index(line, "VNSNAP-RECV-SEED"):], "VNSNAP-RECV-SEED")))
	}
	z, err := base64.StdEncoding.DecodeString(enc.String())
	if err != nil {
		t.Fatalf("seed from dom0: %v", err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(z))
	if err != nil {
		t.Fatalf("seed from dom0: %v", err)
	}
	b, err := io.ReadAll(zr)
	if err != nil {
		t.Fatalf("seed from dom0: %v", err)
	}
	info, err := xenbackend.ReadStream(bytes.NewReader(b), nil)
	if err != nil {
		t.Fatalf("the real live stream without its pages but one: %v", err)
	}
	if info.Bytes != int64(len(b)) || info.Pages != 1 || info.DomainType != xenbackend.DomainX86HVM || info.XenMajor != 4 || info.XenMinor != 17 {
		t.Errorf("the real live stream without its pages but one: got %+v (of %d bytes), want all of it, 1 page, type HVM, Xen 4.17", info, len(b))
	}
	t.Logf("real stream seed: %d bytes (live stream: %s)", len(b), stored)
	if out := os.Getenv("VNSNAP_XEN_SEED_OUT"); out != "" {
		if err := os.WriteFile(out, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
