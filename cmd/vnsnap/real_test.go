package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"github.com/vnsnap/vnsnap/vne"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/vnsnap/vnsnap/qemubackend/qemutest"
	"github.com/vnsnap/vnsnap/qemubackend/qemutest/progress"
	"github.com/vnsnap/vnsnap/store"
)

func runCmd(args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	code = run(args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestUpBadVNE(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "bad.yaml")
	yaml := "name: lab\nhosts:\n  - name: h1\nvms:\n  - name: a\n    host: h1\n    memory: lots\n    guest: {builtin: idle}\n"
	if err := os.WriteFile(p, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, stderr := runCmd("up", "--state", filepath.Join(dir, "st"), p)
	if code == 0 {
		t.Fatal("up with a malformed VNE file: exit 0, want non-zero")
	}
	if want := p + ":7: vms[0].memory"; !strings.Contains(stderr, want) {
		t.Errorf("stderr %q does not name %q", stderr, want)
	}
	for _, args := range [][]string{
		{"up"}, {"up", "--state", dir, filepath.Join(dir, "missing.yaml")},
		{"snapshot", "--algo", "nope", "x"}, {"snapshot", "--sink", "tape", "x"},
		{"snapshot", "--state", dir, "bad/name"}, {"verify"}, {"ls", "extra"},
		{"down", "--state", filepath.Join(dir, "none")},
	} {
		if code, _, stderr := runCmd(args...); code == 0 || stderr == "" {
			t.Errorf("vnsnap %s: exit %d, stderr %q; want non-zero and a message", strings.Join(args, " "), code, stderr)
		}
	}
}

// TestSnapshotStallBound checks that a stall bound out of range is refused
// by vnsnap snapshot (naming --stall, exit 2, before reaching a supervisor)
// and by the supervisor when it arrives on the control socket (naming
// stall_ms, before anything else is looked at).
func TestSnapshotStallBound(t *testing.T) {
	for _, v := range []string{"10ms", "-1m", "25h"} {
		code, _, stderr := runCmd("snapshot", "--state", t.TempDir(), "--stall", v, "s1")
		if code != 2 {
			t.Errorf("--stall %s: exit %d, want 2", v, code)
		}
		if !strings.Contains(stderr, "--stall") || strings.Contains(stderr, "supervisor") {
			t.Errorf("--stall %s: stderr %q, want the flag named (and no supervisor reached)", v, stderr)
		}
	}
	var s supervisor // no VNE up: a valid bound gets past the check
	for _, ms := range []int64{-1, 999, 24*3600*1000 + 1, 1 << 62} {
		_, _, err := s.do(context.Background(), request{Op: "snapshot", Name: "s1", StallMS: ms}, nil)
		if err == nil || !strings.Contains(err.Error(), "stall_ms") {
			t.Errorf("stall_ms %d: %v, want it refused naming stall_ms", ms, err)
		}
	}
	if _, _, err := s.do(context.Background(), request{Op: "snapshot", Name: "s1", StallMS: 300_000}, nil); err == nil || strings.Contains(err.Error(), "stall_ms") {
		t.Errorf("stall_ms 300000: %v, want it accepted (then: no VMs running)", err)
	}
}

// TestVerifyDamaged writes a snapshot directly with the store, checks that
// verify and ls accept it, flips one byte of a chunk and expects verify to
// fail naming the VM and the chunk.
func TestVerifyDamaged(t *testing.T) {
	root := t.TempDir()
	w, err := store.Create(root, "s1", store.Meta{Created: time.Unix(1e9, 0), Algorithm: "vnsnap-memory", Epoch: 1})
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 3<<20)
	rand.Read(data)
	for _, vm := range []string{"a", "b"} {
		sw, err := w.Stream(vm, "memory")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := sw.Write(data); err != nil {
			t.Fatal(err)
		}
		if err := sw.Close(); err != nil {
			t.Fatal(err)
		}
		data[0]++ // b differs from a
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	if code, out, stderr := runCmd("verify", "--store", root, "s1"); code != 0 || !strings.Contains(out, "s1 ok") {
		t.Fatalf("verify of a sound snapshot: exit %d, %q %q", code, out, stderr)
	}
	if code, out, _ := runCmd("ls", "--store", root); code != 0 || !strings.Contains(out, "s1") || !strings.Contains(out, "a,b") {
		t.Errorf("ls: exit %d, %q; want s1 with VMs a,b", code, out)
	}
	s, err := store.Open(root, "s1")
	if err != nil {
		t.Fatal(err)
	}
	chs := s.Manifest().VMs[1].Streams[0].Chunks
	idx := len(chs) / 2 // random data: the chunk count varies
	ch := chs[idx]
	s.Close()
	path := filepath.Join(root, "chunks", ch.Addr[:2], ch.Addr)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 1
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, stderr := runCmd("verify", "--store", root, "s1")
	if code == 0 {
		t.Fatalf("verify of a damaged snapshot: exit 0, want non-zero; out %q", out)
	}
	if want := fmt.Sprintf("chunk %d", idx); !strings.Contains(out, `vm "b"`) || !strings.Contains(out, want) || !strings.Contains(stderr, "damaged") {
		t.Errorf("verify output %q / %q: want vm \"b\" and %s named", out, stderr, want)
	}
}

// TestUpSnapshotRestoreDown drives the CLI against real QEMU: up in the
// foreground (here a goroutine), snapshot, ls, verify, restore, down.
func TestUpSnapshotRestoreDown(t *testing.T) {
	qemutest.RequireQEMU(t)
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	dir := t.TempDir()
	state, err := os.MkdirTemp("", "vnsc-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(state)
	// Every wait below ends when nothing moves for qemutest.Idle (no CPU
	// time for the test's QEMU and build processes, no console output in
	// the state directory); 20 minutes is only a safety net.
	ctx, cancel := progress.Watch(context.Background(), "QEMU CPU time and consoles", qemutest.Idle, 20*time.Minute,
		progress.DescendantCPU(), progress.DirBytes(state))
	defer cancel()
	root := filepath.Join(dir, "store")
	p := filepath.Join(dir, "duo.yaml")
	yaml := `name: duo
hosts:
  - {name: h1, ram_budget: 1GiB}
  - {name: h2}
vms:
  - {name: a, host: h1, memory: 128MiB, ip: 10.0.0.1, guest: {builtin: dirtier, args: ["-rate=4", "-ws=8"]}}
  - {name: b, host: h2, memory: 128MiB, ip: 10.0.0.2, guest: {builtin: idle}}
`
	if err := os.WriteFile(p, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	upDone := make(chan int, 1)
	var upOut, upErr bytes.Buffer
	go func() { upDone <- run([]string{"up", "--state", state, p}, &upOut, &upErr) }()
	defer func() {
		// Whatever happened, take the VNE down and wait for up to return.
		runCmd("down", "--state", state)
		select {
		case <-upDone:
		case <-ctx.Done():
			t.Errorf("vnsnap up did not return after down: %v", context.Cause(ctx))
		}
	}()
	sock := filepath.Join(state, "control.sock")
	for ; ; time.Sleep(100 * time.Millisecond) {
		if _, err := os.Stat(filepath.Join(state, "pid")); err == nil && strings.Contains(upOut.String(), "up:") {
			break
		}
		select {
		case code := <-upDone:
			upDone <- code
			t.Fatalf("up exited %d: %s", code, upErr.String())
		case <-ctx.Done():
			t.Fatalf("up did not come up (%v): %s", context.Cause(ctx), upErr.String())
		default:
		}
	}
	_ = sock
	// Let the guests boot: wait for their first heartbeats.
	for _, vm := range []string{"a", "b"} {
		waitConsole(ctx, t, filepath.Join(state, vm+".console"), "HB ", 0)
	}
	code, out, stderr := runCmd("snapshot", "--json", "--state", state, "--store", root, "--algo", "vnsnap", "--sink", "memory", "s1")
	t.Logf("snapshot --json:\n%s", tailString(out, 4000))
	if code != 0 {
		t.Fatalf("snapshot: exit %d: %s", code, stderr)
	}
	checkSnapshotEvents(t, out, []string{"a", "b"}, preCopyMemory)
	if code, out, stderr = runCmd("snapshot", "--state", state, "--store", root, "--algo", "cow", "s2"); code != 0 {
		t.Fatalf("snapshot cow: exit %d: %s", code, stderr)
	}
	t.Logf("snapshot cow:\n%s%s", stderr, out)
	// Not a terminal: plain progress lines on stderr, the report alone on
	// stdout.
	for _, vm := range []string{"a", "b"} {
		if want := "snapshot " + vm + ": background-copy"; !strings.Contains(stderr, want) {
			t.Errorf("snapshot cow: stderr has no %q:\n%s", want, stderr)
		}
	}
	if !strings.HasPrefix(out, "snapshot s2: cow") {
		t.Errorf("snapshot cow: stdout %q, want the report alone", out)
	}
	if code, out, _ := runCmd("ls", "--store", root); code != 0 || !strings.Contains(out, "s1") || !strings.Contains(out, "s2") {
		t.Errorf("ls: exit %d: %s", code, out)
	}
	if code, out, stderr := runCmd("verify", "--store", root, "s2"); code != 0 {
		t.Errorf("verify: exit %d: %s %s", code, out, stderr)
	}
	restoredAt := consoleLen(filepath.Join(state, "a.console"))
	if code, out, stderr = runCmd("restore", "--json", "--state", state, "--store", root, "s1"); code != 0 {
		t.Fatalf("restore: exit %d: %s", code, stderr)
	}
	t.Logf("restore --json:\n%s", tailString(out, 4000))
	checkRestoreEvents(t, out, []string{"a", "b"})
	// The restored guest's dirtier must go on verifying its pages: wait
	// for its next verdict after the restore (the whole run may take less
	// than one dirtier cycle, so an earlier line proves nothing).
	waitConsole(ctx, t, filepath.Join(state, "a.console"), "DIRTIER OK", restoredAt)
	if code, out, stderr = runCmd("snapshot", "--json", "--state", state, "--store", root, "--algo", "stop-copy", "--sink", "disk", "s3"); code != 0 {
		t.Fatalf("snapshot after restore: exit %d: %s", code, stderr)
	}
	checkSnapshotEvents(t, out, []string{"a", "b"}, stopCopyDisk)
	if code, _, stderr = runCmd("down", "--state", state); code != 0 {
		t.Fatalf("down: exit %d: %s", code, stderr)
	}
	select {
	case code := <-upDone:
		upDone <- code
		if code != 0 {
			t.Errorf("up exited %d: %s", code, upErr.String())
		}
	case <-ctx.Done():
		t.Fatalf("up did not return after down: %v", context.Cause(ctx))
	}
	b, err := os.ReadFile(filepath.Join(state, "a.console"))
	if err != nil || !strings.Contains(string(b), "DIRTIER OK") || strings.Contains(string(b), "FAIL") {
		t.Errorf("console of a (%v): want DIRTIER OK and no FAIL:\n%s", err, tailString(string(b), 2000))
	}
}

// consoleLen is the console file's length now (0 if it does not exist).
func consoleLen(path string) int {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return int(fi.Size())
}

// waitConsole waits until the console file at path contains s after its
// first off bytes (all of it if off is 0 or the file was started anew), or
// ctx ends.
func waitConsole(ctx context.Context, t *testing.T, path, s string, off int) {
	t.Helper()
	for ; ; time.Sleep(100 * time.Millisecond) {
		b, err := os.ReadFile(path)
		if err == nil {
			if len(b) < off {
				off = 0
			}
			if strings.Contains(string(b[off:]), s) {
				return
			}
		}
		if ctx.Err() != nil {
			t.Fatalf("%s: no %q after byte %d (%v):\n%s", path, s, off, context.Cause(ctx), tailString(string(b), 2000))
		}
	}
}

func tailString(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// TestUpXenWithoutXen: a VNE file asking for Xen on a host without xl gets a
// clear error naming the file, the field and xl, and no state is made; a bad
// hypervisor value is a VNE error with its line.
func TestUpXenWithoutXen(t *testing.T) {
	dir := t.TempDir()
	body := "name: lab\nhosts:\n  - name: h1\nvms:\n  - name: a\n    host: h1\n    memory: 128MiB\n    guest: {builtin: idle}\n"
	p := filepath.Join(dir, "xen.yaml")
	if err := os.WriteFile(p, []byte("hypervisor: xen\n"+body), 0o644); err != nil {
		t.Fatal(err)
	}
	st := filepath.Join(dir, "st")
	xl := filepath.Join(dir, "no-such-xl")
	code, _, stderr := runCmd("up", "--state", st, "--xl", xl, p)
	if code == 0 {
		t.Fatal("up of a Xen VNE without xl: exit 0, want non-zero")
	}
	if want := p + ": hypervisor: xen: xl info: fork/exec " + xl; !strings.Contains(stderr, want) {
		t.Errorf("stderr %q does not say %q", stderr, want)
	}
	if _, err := os.Stat(st); !os.IsNotExist(err) {
		t.Errorf("state directory %s made for a VNE that cannot run (stat: %v)", st, err)
	}
	bad := filepath.Join(dir, "kvm.yaml")
	if err := os.WriteFile(bad, []byte("hypervisor: kvm\n"+body), 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, stderr = runCmd("up", "--state", st, bad)
	if want := bad + `:1: hypervisor: unknown hypervisor "kvm" (want qemu or xen)`; code == 0 || !strings.Contains(stderr, want) {
		t.Errorf("up with hypervisor kvm: exit %d, stderr %q; want non-zero and %q", code, stderr, want)
	}
}

// The Xen example is a valid VNE file for the Xen backend.
func TestXenExampleParses(t *testing.T) {
	v, err := vne.Load("../../examples/xen.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if v.Hypervisor != "xen" || len(v.VMs) != 2 {
		t.Errorf("examples/xen.yaml: hypervisor %q, %d VMs; want xen, 2", v.Hypervisor, len(v.VMs))
	}
}
