package xentest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vnsnap/vnsnap/qemubackend"
	"github.com/vnsnap/vnsnap/qemubackend/guestimg"
	"github.com/vnsnap/vnsnap/qemubackend/qemutest"
	"github.com/vnsnap/vnsnap/qemubackend/qemutest/progress"
)

// heartbeatArgs is the heartbeat program's interval, the same for the Xen
// domU and the QEMU guest so that their pauses are measured alike.
const heartbeatArgs = "-interval=20ms"

// hbDomUInit is the heartbeat domU's /init: the workloads/guest heartbeat
// program, as in the QEMU guest image, on the console (hvc0).
const hbDomUInit = `#!/bin/busybox sh
/bin/busybox mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
echo VNSNAP-DOMU-UP
/bin/heartbeat ` + heartbeatArgs + ` &
while :; do sleep 3600; done
`

// failScript runs in dom0: one 128 MiB PVH heartbeat domU, then xenfail
// (testdata/xenfail) measures the pauses and runs every failure case.
const failScript = `
set -u
XL=/usr/lib/xen-4.17/bin/xl
LOG=/var/log/xen/console/guest-domu1.log
` + domU1Cfg + `$XL create /root/domu1.cfg || exit 4
while ! grep -q '^HB ' $LOG 2>/dev/null; do
	$XL domid domu1 >/dev/null 2>&1 || { echo "VNSNAP-XEN-FAIL domu1 is gone"; $XL list; exit 3; }
	echo "VNSNAP-T-WAITING-FOR-DOMU"
	sleep 2
done
echo VNSNAP-T-DOMU-UP
/usr/bin/xenfail run || exit 5
$XL list
$XL destroy domu1
`

// failModes are the receiver's failures xenfail runs, in its order, with
// the state xl leaves the domain in before RecoverDomain: running under
// its own name, except after the go, where xl has renamed it and left it
// suspended.
var failModes = []struct {
	mode           string
	leftRenamed    bool // "domu1--migratedaway:---ss-"
	wantRecoverCmd bool // RecoverDomain renames and resumes
}{
	{"midstream", false, false},
	{"nobanner-exit", false, false},
	{"nobanner-hang", false, false},
	{"stored-fail", false, false},
	{"hook-fail", false, false},
	{"die-after-go", true, true},
}

// TestXenReceiverFailures boots real Xen once and, against one heartbeat
// domU, makes the live-snapshot receiver fail in every way (dead
// mid-stream, no banner and exit, no banner and hang until killed, a failed
// store before "ready", a failed Paused hook after the go, dead after the
// go), each followed by xenbackend.RecoverDomain, and checks that the domU
// runs on under its own name (its heartbeat counter goes on) with no
// NAME--migratedaway left. Then, on the same boot, it measures the pause
// seen from outside of live snapshots through the receiver and of "xl save
// -c", then the same on the QEMU backend with the same guest program, and
// logs the table (times are reported, never asserted).
func TestXenReceiverFailures(t *testing.T) {
	env := Require(t, "../..")
	dir := t.TempDir()
	ctx := context.Background()
	hb := filepath.Join(dir, "heartbeat")
	if err := GoBinary(ctx, "../..", "./workloads/guest/heartbeat", hb); err != nil {
		t.Fatal(err)
	}
	driver := filepath.Join(dir, "xenfail")
	if err := GoBinary(ctx, "../..", "./xenbackend/xentest/testdata/xenfail", driver); err != nil {
		t.Fatal(err)
	}
	a, err := bootArchive(env, hbDomUInit, nil)
	if err != nil {
		t.Fatal(err)
	}
	a.add(File{Path: "/bin/heartbeat", Src: hb, Mode: 0o755})
	var domu bytes.Buffer
	if err := a.encode(&domu, []string{"/dev", "/proc", "/sys", "/tmp"}); err != nil {
		t.Fatal(err)
	}
	m := Start(t, env, Dom0Config{Script: failScript, Files: []File{
		{Path: "/root/vmlinuz", Src: env.Kernel()},
		{Path: "/usr/bin/xenfail", Src: driver},
		{Path: "/root/domu-initrd.gz", Data: domu.Bytes()},
	}}, BootConfig{})
	wait := func(marker string) string { t.Helper(); return mustWait(t, ctx, m, marker) }
	wait(MarkerReady)
	wait("VNSNAP-T-DOMU-UP")
	wait("VNSNAP-T-HEARTBEAT")
	for _, c := range failModes {
		f := caseFields(wait("VNSNAP-CASE"))
		t.Run(c.mode, func(t *testing.T) {
			t.Logf("%v", f)
			if f["mode"] != c.mode {
				t.Fatalf("case %q, want %q", f["mode"], c.mode)
			}
			if f["xlrc"] == "0" {
				t.Errorf("xl migrate exited 0, want a failure")
			}
			left := "domu1:"
			if c.leftRenamed {
				left = "domu1--migratedaway:---ss-"
			}
			if !strings.HasPrefix(f["left"], left) || strings.Contains(f["left"], ",") || (!c.leftRenamed && !xlRunning(f["left"])) {
				t.Errorf("xl left %q, want only %s", f["left"], map[bool]string{true: left, false: "domu1 running or blocked"}[c.leftRenamed])
			}
			if got := f["renamed"] == "true" && f["resumed"] == "true"; got != c.wantRecoverCmd || f["renamed"] != f["resumed"] {
				t.Errorf("RecoverDomain renamed=%s resumed=%s, want both %v", f["renamed"], f["resumed"], c.wantRecoverCmd)
			}
			if f["recover_err"] != "none" {
				t.Errorf("RecoverDomain: %s", f["recover_err"])
			}
			if !strings.HasPrefix(f["after"], "domu1:") || strings.Contains(f["after"], ",") || !xlRunning(f["after"]) {
				t.Errorf("after recovery: %q, want domu1 alone, running or blocked", f["after"])
			}
			end, _ := strconv.Atoi(f["hb_end"])
			after, _ := strconv.Atoi(f["hb_after"])
			if f["hb_err"] != "none" || after <= end {
				t.Errorf("heartbeat after recovery: %s (counter %d after %d), want it going on", f["hb_err"], after, end)
			}
		})
	}
	wait("VNSNAP-T-CASES-DONE")
	xen := map[string][]time.Duration{} // pauses by method
	xenTook := map[string][]time.Duration{}
	for i := 0; i < 2*3; i++ {
		f := caseFields(wait("VNSNAP-PAUSE"))
		t.Logf("xen %s round %s: pause %s ms (heartbeats %s), xl took %s ms", f["method"], f["round"], f["gap_ms"], f["hb"], f["took_ms"])
		ms, err := strconv.Atoi(f["gap_ms"])
		if err != nil || ms <= 0 {
			t.Errorf("xen %s round %s: pause %q ms, want a positive number", f["method"], f["round"], f["gap_ms"])
		}
		took, _ := strconv.Atoi(f["took_ms"])
		xen[f["method"]] = append(xen[f["method"]], time.Duration(ms)*time.Millisecond)
		xenTook[f["method"]] = append(xenTook[f["method"]], time.Duration(took)*time.Millisecond)
	}
	if got, want := wait(MarkerDone), MarkerDone+" rc=0"; got != want {
		t.Errorf("dom0 script: got %q, want %q", got, want)
	}
	t.Logf("Xen run %v", m.Uptime().Round(time.Second))
	m.Kill() // free the CPUs for the QEMU measurement
	q, qTook, qv := qemuPauses(t)
	med := func(d []time.Duration) time.Duration { d = slices.Clone(d); slices.Sort(d); return d[len(d)/2] }
	var tab strings.Builder
	fmt.Fprintf(&tab, "medians of 3; pause = largest heartbeat gap seen from outside; took = the whole snapshot; 128 MiB guest, heartbeat every 20 ms, stream discarded\n")
	fmt.Fprintf(&tab, "| hypervisor | live pause | stop-and-copy pause | stop-and-copy / live | live took | stop-and-copy took |\n|---|---|---|---|---|---|\n")
	row := func(name string, live, stop, liveTook, stopTook []time.Duration) {
		l, s := med(live), med(stop)
		fmt.Fprintf(&tab, "| %s | %v | %v | %.2f | %v | %v |\n", name, l.Round(time.Millisecond), s.Round(time.Millisecond),
			float64(s)/float64(l), med(liveTook).Round(100*time.Millisecond), med(stopTook).Round(100*time.Millisecond))
	}
	row("Xen 4.17 in QEMU 7.2 TCG: xl migrate to Receive / xl save -c", xen["live"], xen["stopcopy"], xenTook["live"], xenTook["stopcopy"])
	row("QEMU "+qv+" TCG: pre-copy / stop-and-copy", q[qemubackend.Precopy], q[qemubackend.StopCopy], qTook[qemubackend.Precopy], qTook[qemubackend.StopCopy])
	t.Logf("\n%s", tab.String())
}

// qemuPauses measures, on the QEMU backend, the pauses and durations of
// three pre-copy and three stop-and-copy snapshots of a 128 MiB guest
// running the same heartbeat program, into a sink that discards.
func qemuPauses(t *testing.T) (pause, took map[qemubackend.Method][]time.Duration, version string) {
	t.Helper()
	h := qemutest.RequireQEMU(t)
	img := qemutest.GuestImage(t, "../..")
	ctx := qemutest.Context(t, 10*time.Minute)
	vm, err := qemubackend.Start(ctx, h, qemubackend.Spec{
		Name: "pause", MemoryMiB: 128, Kernel: img.Kernel, Initrd: img.Initrd,
		Append: guestimg.KernelArgs("", "", guestimg.Program{Name: "heartbeat", Args: []string{heartbeatArgs}}),
	})
	if err != nil {
		t.Fatal(progress.Why(ctx, err))
	}
	t.Cleanup(vm.Kill)
	if _, _, err := vm.Console.WaitPrefix(ctx, 0, "HB 50"); err != nil {
		t.Fatal(progress.Why(ctx, err))
	}
	pause, took = map[qemubackend.Method][]time.Duration{}, map[qemubackend.Method][]time.Duration{}
	for round := 0; round < 3; round++ {
		for _, m := range []qemubackend.Method{qemubackend.Precopy, qemubackend.StopCopy} {
			st, err := vm.Snapshot(ctx, io.Discard, qemubackend.Options{Method: m, Resume: true})
			if err != nil {
				t.Fatal(progress.Why(ctx, err))
			}
			t.Logf("qemu %s round %d: pause %v, %d bytes in %v", m, round, st.Pause.Gap.Round(time.Millisecond), st.Bytes, st.Duration.Round(time.Millisecond))
			pause[m] = append(pause[m], st.Pause.Gap)
			took[m] = append(took[m], st.Duration)
			time.Sleep(300 * time.Millisecond)
		}
	}
	return pause, took, h.Version.String()
}

// xlRunning reports an "xl list" state "NAME:STATE" of a domain that runs or
// waits to: not paused, shut down, crashed or dying. The running and blocked
// letters are not exclusive: Xen sets each when any vCPU is so, and a vCPU
// that has just blocked is still on its CPU until the switch ("rb----", seen
// in CI); "------" is runnable and waiting for a CPU.
func xlRunning(s string) bool {
	_, st, _ := strings.Cut(s, ":")
	return len(st) == 6 && (st[0] == 'r' || st[0] == '-') && (st[1] == 'b' || st[1] == '-') && st[2:] == "----"
}

var caseFieldRE = regexp.MustCompile(`(\w+)=(\S+)`)

// caseFields parses the key=value words of a console line.
func caseFields(line string) map[string]string {
	f := map[string]string{}
	for _, m := range caseFieldRE.FindAllStringSubmatch(line, -1) {
		f[m[1]] = m[2]
	}
	return f
}

func TestXLRunning(t *testing.T) {
	for s, want := range map[string]bool{
		"domu1:r-----": true, "domu1:-b----": true, "domu1:rb----": true, "domu1:------": true,
		"domu1:--p---": false, "domu1:r-p---": false, "domu1:---ss-": false, "domu1:----c-": false,
		"domu1:-----d": false, "domu1:": false, "domu1:r----": false, "domu1:x-----": false,
	} {
		if got := xlRunning(s); got != want {
			t.Errorf("xlRunning(%q) = %v, want %v", s, got, want)
		}
	}
}
