package qemubackend

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vnsnap/vnsnap/qemubackend/qemutest/progress"
)

var errSinkBroke = errors.New("sink broke")

// brokenSink takes n bytes of the stream, then breaks: it fails every
// write (fail: a store that broke, QEMU's pipe fills behind it), cancels
// the save's context (cancel: the caller's deadline or stall watchdog), or
// both.
type brokenSink struct {
	n      int64
	fail   bool
	cancel context.CancelFunc
}

func (b *brokenSink) Write(p []byte) (int, error) {
	if b.n >= int64(len(p)) {
		b.n -= int64(len(p))
		return len(p), nil
	}
	if b.cancel != nil {
		b.cancel()
	}
	if b.fail {
		return 0, errSinkBroke
	}
	return len(p), nil
}

// TestSaveAfterFailedSave breaks a save of a running VM in the middle of its
// stream (the sink fails, the save's context is cancelled, or both) and at
// once starts another save, which must succeed: the failed save returns
// only once QEMU's migration has ended (QEMU cancels in its migration
// thread, and refuses a new migration until then). The failed save leaves
// the VM in the run state its caller expects: running after a live save,
// and after a stop-copy one running with Resume, paused without. QEMU
// survives it all: it ignores SIGPIPE, so a write into the pipe after this
// process closed its end fails the migration, never QEMU.
func TestSaveAfterFailedSave(t *testing.T) {
	h := requireQEMU(t)
	img := guestImage(t)
	ctx := testContext(t, 15*time.Minute)
	_, vm := startDirtier(ctx, t, h, img, "cancel", 128, "DIRTIER OK", "-rate=8", "-ws=16")
	if ign, err := sigIgnored(vm.cmd.Process.Pid, syscall.SIGPIPE); err != nil || !ign {
		t.Errorf("QEMU ignores SIGPIPE: %v, %v; want true", ign, err)
	}
	// The stream of this guest is tens of MiB (the dirtier's 16 MiB working
	// set alone), so the sink breaks mid-stream.
	const breakAt = 1 << 20
	for _, tc := range []struct {
		name   string
		method Method
		resume bool
		fail   bool   // the sink fails
		cancel bool   // the save's context is cancelled
		want   string // run state after the failed save
	}{
		{"precopy-cancel", Precopy, false, false, true, "running"},
		{"precopy-fail-cancel", Precopy, false, true, true, "running"},
		{"precopy-fail-cancel-resume", Precopy, true, true, true, "running"},
		{"stop-copy-fail-cancel", StopCopy, false, true, true, "paused"},
		{"precopy-fail", Precopy, false, true, false, "running"},
		{"stop-copy-fail-resume", StopCopy, true, true, false, "running"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sctx, cancel := context.WithCancel(ctx)
			defer cancel()
			sink := &brokenSink{n: breakAt, fail: tc.fail}
			if tc.cancel {
				sink.cancel = cancel
			}
			_, err := vm.Snapshot(sctx, sink, Options{Method: tc.method, Resume: tc.resume})
			if want := errSinkBroke; !tc.cancel && !errors.Is(err, want) {
				t.Fatalf("broken save: got %v, want %v", err, want)
			}
			if want := context.Canceled; tc.cancel && !errors.Is(err, errSinkBroke) && !errors.Is(err, want) {
				t.Fatalf("cancelled save: got %v, want %v or %v", err, want, errSinkBroke)
			}
			var info migrateInfo
			if err := vm.QMP.Execute(ctx, "query-migrate", nil, &info); err != nil {
				t.Fatal(progress.Why(ctx, err))
			}
			if info.Status != "cancelled" && info.Status != "failed" {
				t.Errorf("migration status right after the failed save: %q, want cancelled or failed", info.Status)
			}
			if st, err := vm.Status(ctx); err != nil || st != tc.want {
				t.Errorf("after the failed save: status %q, %v; want %s", st, err, tc.want)
			}
			st, err := vm.Snapshot(ctx, io.Discard, Options{Method: Precopy, Resume: true})
			if err != nil {
				t.Fatalf("save right after the failed one: %v", progress.Why(ctx, err))
			}
			if st.Bytes <= breakAt {
				t.Errorf("second save wrote %d bytes, want a whole stream (more than %d)", st.Bytes, breakAt)
			}
			if tc.want != "running" {
				if err := vm.Cont(ctx); err != nil {
					t.Fatal(progress.Why(ctx, err))
				}
			}
			if s, err := vm.Status(ctx); err != nil || s != "running" {
				t.Errorf("after the second save: status %q, %v; want running", s, err)
			}
			n := vm.Console.Len()
			if _, _, err := vm.Console.WaitFor(ctx, n, isHeartbeat); err != nil {
				t.Fatalf("no heartbeat after the second save: %v%s", progress.Why(ctx, err), vm.stderrTail())
			}
		})
	}
	select {
	case <-vm.Exited():
		t.Errorf("QEMU exited%s", vm.stderrTail())
	default:
	}
	checkNoFail(t, vm, "cancel")
}

// sigIgnored reports whether process pid ignores sig (SigIgn of its
// /proc status).
func sigIgnored(pid int, sig syscall.Signal) (bool, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return false, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "SigIgn:"); ok {
			m, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return m&(1<<(uint(sig)-1)) != 0, err
		}
	}
	return false, errors.New("no SigIgn in " + string(b))
}
