package qemubackend

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// fakeRunState is a QEMU seen through QMP for the port's run-state logic: a
// run state, a migration status, and QEMU's own resume of the source of a
// cancelled migration that began on a running VM.
type fakeRunState struct {
	mu       sync.Mutex
	state    string // query-status
	mig      string // query-migrate status
	wasLive  bool   // the migration began on a running VM
	slow     int    // query-migrates that still see "cancelling"
	converge bool   // migrate-set-parameters lifted the bounds: the next pass is the last
	commands []string
}

func (f *fakeRunState) serve(s *fakeQMP) {
	for {
		c, err := s.recv()
		if err != nil {
			return
		}
		f.mu.Lock()
		f.commands = append(f.commands, c.Execute)
		var ret string
		switch c.Execute {
		case "query-status":
			ret = fmt.Sprintf(`{"status": %q, "running": %v}`, f.state, f.state == "running")
		case "cont":
			f.state = "running"
			ret = `{}`
		case "stop":
			f.state = "paused"
			ret = `{}`
		case "migrate_cancel":
			f.mig = "cancelling"
			ret = `{}`
		case "migrate-set-parameters":
			f.converge = true
			ret = `{}`
		case "migrate-continue":
			if f.mig == "pre-switchover" {
				f.mig, f.state = "completed", "postmigrate"
			}
			ret = `{}`
		case "query-migrate":
			if f.mig == "active" && f.converge { // QEMU stops the VM for the last pass
				f.mig, f.state = "pre-switchover", "finish-migrate"
			}
			if f.mig == "cancelling" && f.slow > 0 {
				f.slow--
			} else if f.mig == "cancelling" { // the migration thread finishes the cancel
				f.mig = "cancelled"
				if f.wasLive {
					f.state = "running"
				}
			}
			ret = fmt.Sprintf(`{"status": %q}`, f.mig)
		default:
			ret = `{}`
		}
		f.mu.Unlock()
		s.reply(c, ret)
	}
}

func (f *fakeRunState) got() (string, []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.state, append([]string(nil), f.commands...)
}

func fakeMachine(t *testing.T, f *fakeRunState) *Machine {
	t.Helper()
	q, srv := newFakePair(t)
	go f.serve(srv)
	return (&Hypervisor{}).newMachine(&VM{Spec: Spec{Name: "m"}, QMP: q})
}

// TestMachineResume: Resume of a running machine sends nothing but
// query-status (idempotent); of a machine after a save (postmigrate) it
// sends cont and confirms the VM runs; a migration that is finishing
// (finish-migrate) is waited out, never sent cont.
func TestMachineResume(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, tc := range []struct {
		state string
		want  []string
	}{
		{"running", []string{"query-status", "query-status"}},
		{"postmigrate", []string{"query-status", "cont", "query-status", "query-status"}},
		{"paused", []string{"query-status", "cont", "query-status", "query-status"}},
	} {
		f := &fakeRunState{state: tc.state}
		m := fakeMachine(t, f)
		if err := m.Resume(ctx); err != nil {
			t.Fatalf("%s: %v", tc.state, err)
		}
		st, cmds := f.got()
		if st != "running" {
			t.Errorf("%s: state %s after Resume, want running", tc.state, st)
		}
		if diff := cmp.Diff(tc.want, cmds); diff != "" {
			t.Errorf("%s: commands (-want +got):\n%s", tc.state, diff)
		}
	}
}

// TestCancelLeavesPausedVMPaused: a snapshot that fails while the VM is
// paused at its snapshot point cancels the migration; QEMU then resumes the
// source by itself, and the port pauses it again, so that only the core's
// ResumeVM lets it run. A VM that runs when the failure comes is left
// running, without a stop. Either way the cancel returns only once QEMU's
// migration thread has finished it (a new migration is refused before).
func TestCancelLeavesPausedVMPaused(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	f := &fakeRunState{state: "finish-migrate", mig: "pre-switchover", wasLive: true, slow: 3}
	m := fakeMachine(t, f)
	m.vm.cancelPaused(ctx, false)
	st, cmds := f.got()
	if st != "paused" {
		t.Errorf("state after a cancel at the snapshot point: %s, want paused (commands %v)", st, cmds)
	}
	if got := strings.Join(cmds, " "); !strings.HasSuffix(got, "query-status stop") || strings.Contains(got, "cont") {
		t.Errorf("commands %q: want the cancel followed by a stop, no cont", got)
	}

	if f.mig != "cancelled" {
		t.Errorf("migration %s after the cancel, want cancelled", f.mig)
	}

	f = &fakeRunState{state: "running", mig: "active", wasLive: true, slow: 3}
	m = fakeMachine(t, f)
	m.vm.cancelPaused(ctx, false)
	st, cmds = f.got()
	if st != "running" || strings.Contains(strings.Join(cmds, " "), "stop") {
		t.Errorf("cancel of a running VM's save: state %s, commands %v; want running, no stop", st, cmds)
	}
	want := []string{"query-status", "migrate_cancel", "query-migrate", "query-migrate", "query-migrate", "query-migrate"}
	if diff := cmp.Diff(want, cmds); diff != "" || f.mig != "cancelled" {
		t.Errorf("cancel of a running VM's save: migration %s, commands (-want +got):\n%s; want the cancel waited out", f.mig, diff)
	}
}

// TestCancelFinishesMappedRAM: a mapped-ram save is ended by completing it,
// never by migrate_cancel (QEMU 10.0 segfaults on that, see
// finishMigration): the bounds are lifted, a migration at pre-switchover is
// let through, and the VM's run state is the one it had when the cancel
// came: a live pass's VM runs again, one at its snapshot point stays paused.
func TestCancelFinishesMappedRAM(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, tc := range []struct {
		state, mig string
		want       string // the state after the cancel
	}{
		{"running", "active", "running"},
		{"finish-migrate", "pre-switchover", "postmigrate"},
	} {
		f := &fakeRunState{state: tc.state, mig: tc.mig, wasLive: true}
		m := fakeMachine(t, f)
		m.vm.cancelPaused(ctx, true)
		st, cmds := f.got()
		got := strings.Join(cmds, " ")
		if st != tc.want || f.mig != "completed" {
			t.Errorf("from %s/%s: state %s, migration %s, want %s, completed (commands %q)", tc.state, tc.mig, st, f.mig, tc.want, got)
		}
		if strings.Contains(got, "migrate_cancel") || !strings.Contains(got, "migrate-set-parameters") || !strings.Contains(got, "migrate-continue") {
			t.Errorf("from %s/%s: commands %q, want the bounds lifted and the switchover let through, no migrate_cancel", tc.state, tc.mig, got)
		}
	}
}
