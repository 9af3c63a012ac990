package xentest

import (
	"context"
	"errors"
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
	m, err := Boot(fakeEnv(t, body), BootConfig{Initrd: "unused", Stall: stall})
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
	m := bootFake(t, "echo '"+MarkerFail+" xenstored'; sleep 60", time.Minute)
	_, err := m.Wait(context.Background(), MarkerReady)
	if !errors.Is(err, ErrFailed) || !strings.Contains(err.Error(), "xenstored") {
		t.Fatalf("got %v, want ErrFailed naming xenstored", err)
	}
}

func TestWaitFailsWhenQEMUExits(t *testing.T) {
	m := bootFake(t, "echo booting; exit 3", time.Minute)
	_, err := m.Wait(context.Background(), MarkerReady)
	if !errors.Is(err, ErrExited) {
		t.Fatalf("got %v, want ErrExited", err)
	}
}

// The stall deadline counts from the last console line, not from Boot: a
// machine that keeps printing is never stalled.
func TestWaitStallCountsFromLastLine(t *testing.T) {
	m := bootFake(t, "i=0; while [ $i -lt 8 ]; do echo tick $i; i=$((i+1)); sleep 0.1; done; echo late; sleep 60", 500*time.Millisecond)
	if _, err := m.Wait(context.Background(), "late"); err != nil {
		t.Fatalf("Wait(late) on a steadily printing machine: %v", err)
	}
	start := time.Now()
	_, err := m.Wait(context.Background(), "never")
	if !errors.Is(err, ErrStalled) {
		t.Fatalf("got %v, want ErrStalled", err)
	}
	if d := time.Since(start); d < 400*time.Millisecond {
		t.Fatalf("stalled after %v, want about the 500ms stall bound", d)
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
	m := bootFake(t, "i=0; while [ $i -lt 10 ]; do printf 'x\\r'; i=$((i+1)); sleep 0.1; done; echo; echo done; sleep 60", 400*time.Millisecond)
	if _, err := m.Wait(context.Background(), "done"); err != nil {
		t.Fatalf("Wait(done) while a progress bar draws: %v", err)
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
