package xentest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// fakeEnv is an environment whose "QEMU" is the shell script body.
func fakeEnv(t *testing.T, body string) Env {
	t.Helper()
	env := Env{Dir: t.TempDir()}
	if err := os.MkdirAll(filepath.Dir(env.QEMU()), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(env.QEMU(), []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	return env
}

func bootFake(t *testing.T, body string, stall time.Duration) *Machine {
	t.Helper()
	return bootFakeConfig(t, body, BootConfig{Stall: stall})
}

// bootFakeConfig is bootFake with the rest of cfg too.
func bootFakeConfig(t *testing.T, body string, cfg BootConfig) *Machine {
	t.Helper()
	cfg.Initrd = "unused"
	m, err := Boot(fakeEnv(t, body), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Kill)
	return m
}

func TestWaitFindsMarkersInOrder(t *testing.T) {
	m := bootFake(t, "echo one; echo 'two\r'; echo three; sleep 60", time.Minute)
	ctx := context.Background()
	if got, err := m.Wait(ctx, "two"); err != nil || got != "two" {
		t.Fatalf("Wait(two): got %q, %v; want %q (carriage return dropped)", got, err, "two")
	}
	if got, err := m.Wait(ctx, ""); err != nil || got != "three" {
		t.Fatalf("Wait(\"\") after two: got %q, %v; want the next line %q", got, err, "three")
	}
}

func TestWaitFailsOnFailureLine(t *testing.T) {
	for _, line := range []string{
		MarkerFail + " xenstored",
		"(XEN) Panic on CPU 0:",
		"[    2.1] Kernel panic - not syncing: VFS",
	} {
		t.Run(line, func(t *testing.T) {
			m := bootFake(t, "echo booting; echo '"+line+"'; sleep 60", time.Minute)
			_, err := m.Wait(context.Background(), MarkerReady)
			if !errors.Is(err, ErrFailed) || !strings.Contains(err.Error(), line) {
				t.Fatalf("got %v, want ErrFailed quoting %q", err, line)
			}
		})
	}
}

func TestWaitFailsWhenQEMUExits(t *testing.T) {
	m := bootFake(t, "echo booting; exit 3", time.Minute)
	_, err := m.Wait(context.Background(), MarkerReady)
	if !errors.Is(err, ErrExited) {
		t.Fatalf("got %v, want ErrExited", err)
	}
}

// feed sends n lines to the console, one every interval, while wait runs;
// the fake QEMU answers each from shell builtins (no fork), so its output
// follows the test's clock even on a loaded machine.
func feed(t *testing.T, m *Machine, n int, interval time.Duration, wait func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- wait() }()
	for i := 0; i < n; i++ {
		if err := m.Send(fmt.Sprintf("%d\n", i)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(interval)
	}
	if err := m.Send("end\n"); err != nil {
		t.Fatal(err)
	}
	return <-done
}

// The stall deadline counts from the last console output, not from Boot: a
// machine that keeps printing is never stalled.
func TestWaitStallCountsFromLastLine(t *testing.T) {
	const stall = time.Second
	m := bootFake(t, `echo up; while read l; do [ "$l" = end ] && break; echo "tick $l"; done; echo late; sleep 60`, stall)
	ctx := context.Background()
	if _, err := m.Wait(ctx, "up"); err != nil {
		t.Fatal(err)
	}
	err := feed(t, m, 30, 100*time.Millisecond, func() error { _, err := m.Wait(ctx, "late"); return err })
	if err != nil {
		t.Fatalf("Wait(late) on a machine printing for 3x its stall bound: %v", err)
	}
	start := time.Now()
	_, err = m.Wait(ctx, "never")
	if !errors.Is(err, ErrStalled) {
		t.Fatalf("got %v, want ErrStalled", err)
	}
	if d := time.Since(start); d < stall*8/10 {
		t.Fatalf("stalled after %v, want about the %v stall bound", d, stall)
	}
}

func TestKillEndsProcessGroup(t *testing.T) {
	// The "QEMU" starts a child that would outlive a kill of its parent only.
	pidFile := filepath.Join(t.TempDir(), "child.pid")
	m := bootFake(t, "sleep 60 & echo $! > "+pidFile+"; echo up; wait", time.Minute)
	if _, err := m.Wait(context.Background(), "up"); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	var pid int
	for _, c := range strings.TrimSpace(string(b)) {
		pid = pid*10 + int(c-'0')
	}
	m.Kill()
	if !m.Exited() {
		t.Fatal("Kill returned before QEMU was reaped")
	}
	// The child is reaped by init once killed; poll briefly for that.
	for i := 0; i < 100; i++ {
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("child %d of the QEMU process still runs after Kill", pid)
}

func TestArgsQuoteCommasInModules(t *testing.T) {
	env := Env{Dir: "/x"}
	cfg := BootConfig{Initrd: "/i.gz", Dom0Args: []string{"a=1,2"}}
	cfg.defaults()
	args := strings.Join(env.Args(cfg), " ")
	for _, want := range []string{"-accel tcg", "-cpu " + CPUFlags, "-m 3072", "dom0_mem=1536M,max:1536M", "-kernel /x/xen.elf", "a=1,,2,/i.gz"} {
		if !strings.Contains(args, want) {
			t.Errorf("QEMU args: missing %q in %s", want, args)
		}
	}
}

// Output inside a line (a progress bar drawn with carriage returns) is
// progress too.
func TestWaitCountsPartialLinesAsProgress(t *testing.T) {
	const stall = time.Second
	m := bootFake(t, `echo up; while read l; do [ "$l" = end ] && break; printf 'x\r'; done; echo; echo done; sleep 60`, stall)
	ctx := context.Background()
	if _, err := m.Wait(ctx, "up"); err != nil {
		t.Fatal(err)
	}
	err := feed(t, m, 30, 100*time.Millisecond, func() error { _, err := m.Wait(ctx, "done"); return err })
	if err != nil {
		t.Fatalf("Wait(done) while a progress bar draws for 3x the stall bound: %v", err)
	}
}

func TestSendReachesConsoleInput(t *testing.T) {
	m := bootFake(t, "echo ready; read l; echo \"got $l\"; sleep 60", time.Minute)
	ctx := context.Background()
	if _, err := m.Wait(ctx, "ready"); err != nil {
		t.Fatal(err)
	}
	if err := m.Send("hello\n"); err != nil {
		t.Fatal(err)
	}
	if got, err := m.Wait(ctx, "got"); err != nil || got != "got hello" {
		t.Fatalf("got %q, %v; want %q", got, err, "got hello")
	}
}
