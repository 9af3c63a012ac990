package qemubackend

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"time"

	"github.com/vnsnap/vnsnap/realbackend/hv"
)

// Method is how a VM's memory is captured.
type Method int

const (
	// Precopy is a live snapshot: memory is copied in passes while the VM runs,
	// then the VM pauses for the last dirty pages and the device state (the
	// snapshot point is at the end) and resumes on the same host.
	Precopy Method = iota
	// StopCopy pauses the VM for the whole copy.
	StopCopy
	// Background is QEMU's background-snapshot (copy-on-write with
	// userfaultfd write protection): the snapshot point is at the start, the
	// VM pauses only to save its device state and arm write protection.
	Background
)

// String returns the method's name.
func (m Method) String() string {
	switch m {
	case Precopy:
		return "precopy"
	case StopCopy:
		return "stop-copy"
	case Background:
		return "background"
	default:
		panic(fmt.Sprintf("unknown Method %d", int(m)))
	}
}

// SnapshotEvent is an observation made during a snapshot, in the order QEMU
// reported it. It is a closed sum type: PassStarted, VMPaused,
// SnapshotPointReached, VMResumed, MigrationStatusChanged.
type SnapshotEvent interface{ snapshotEvent() }

// PassStarted reports the start of a pre-copy pass (MIGRATION_PASS).
type PassStarted struct {
	At   time.Time
	Pass int
}

// VMPaused reports that the VM stopped (STOP).
type VMPaused struct{ At time.Time }

// VMResumed reports that the VM runs again (RESUME).
type VMResumed struct{ At time.Time }

// SnapshotPointReached reports that the VM is paused at its snapshot point;
// the Options.AtSnapshotPoint hook runs right after.
type SnapshotPointReached struct{ At time.Time }

// MigrationStatusChanged reports a MIGRATION event (setup, active,
// pre-switchover, device, completed, failed, ...).
type MigrationStatusChanged struct {
	At     time.Time
	Status string
}

func (PassStarted) snapshotEvent()            {}
func (VMPaused) snapshotEvent()               {}
func (VMResumed) snapshotEvent()              {}
func (SnapshotPointReached) snapshotEvent()   {}
func (MigrationStatusChanged) snapshotEvent() {}

// Options tune a snapshot.
type Options struct {
	Method Method
	// AutoConverge turns on QEMU's auto-converge for Precopy (see
	// Hypervisor.AutoConverge for why it is off by default).
	AutoConverge bool
	// DowntimeLimit is QEMU's downtime-limit for Precopy: it switches over
	// once the rest fits this time at the measured bandwidth. Default 300 ms.
	DowntimeLimit time.Duration
	// MaxBandwidth caps the copy (bytes/s). Default 4 GiB/s, i.e. the sink's
	// speed.
	MaxBandwidth int64
	// AtSnapshotPoint, if set, runs while the VM is paused at its snapshot
	// point (Precopy: pre-switchover; StopCopy: after stop), e.g. to freeze
	// the disk and flip the switch's epoch. An error aborts the snapshot. It
	// is not called for Background, whose pause happens inside QEMU.
	AtSnapshotPoint func(context.Context) error
	// OnEvent, if set, receives every SnapshotEvent, synchronously from the
	// goroutine running the snapshot.
	OnEvent func(SnapshotEvent)
	// Resume asks Snapshot to resume a VM that was running when it began,
	// once the stream is complete or the snapshot failed, and to measure
	// the pause (Stats.Pause). Without it Snapshot never resumes a VM: a VM
	// it paused (at the snapshot point, or by StopCopy's stop) is left
	// paused, also after a failure, for the caller to resume (the core's
	// rule that only its commands resume a VM). Even QEMU's own resume when
	// a migration is cancelled is undone then.
	Resume bool
	// MappedRAM writes the image in QEMU's mapped-ram format (see
	// MappedRAMFormat): the writer must then be an *os.File open for
	// writing on an empty regular file, into which QEMU writes each page
	// at a fixed offset itself (pages of later passes overwrite earlier
	// ones); nothing is copied through this process. Not for Background,
	// whose copy-on-write save keeps the stream format (mapped-ram with
	// background-snapshot is untried here).
	MappedRAM bool
}

// Stats are the measured numbers of one snapshot.
type Stats struct {
	Method Method
	Bytes  int64 // bytes of migration stream written to the sink
	// Passes is QEMU's dirty-sync-count: the number of dirty-bitmap syncs
	// (for Precopy, the rounds plus the final one).
	Passes         int
	RAMTransferred int64 // RAM bytes sent, as QEMU counts them
	// QEMUDowntime is QEMU's own downtime figure: from its stop to the end of
	// the stream, so it excludes the caller's hook and, for StopCopy, the
	// whole copy (the VM was stopped before the migration began).
	QEMUDowntime time.Duration
	QEMUTotal    time.Duration // QEMU's total migration time
	// LiveBytes and LiveTime are, for Precopy, the RAM QEMU had sent and
	// the time it had spent sending it (its total time less its setup)
	// when it paused the VM at the snapshot point (pre-switchover): the
	// live passes, the VM running. Zero for the other methods.
	LiveBytes int64
	LiveTime  time.Duration
	// Paused and Resumed are the host times the STOP and RESUME events
	// arrived (the first STOP and last RESUME of the snapshot).
	Paused, Resumed time.Time
	// Pause is the pause seen from outside: the largest gap between heartbeat
	// lines during the snapshot (zero when the guest prints none, or when a
	// VM that was paused is left paused: its caller measures the pause).
	Pause HeartbeatGap
	// PointHeartbeat is the last heartbeat counter that arrived before the VM
	// paused: the guest's progress at the snapshot point (for Background the
	// pause is at the start). Valid when HavePoint.
	PointHeartbeat uint64
	HavePoint      bool
	Duration       time.Duration // from the first command to the VM running again
}

const snapFD = "vnsnap-snap"

// Snapshot captures vm's state into w using opts.Method. It returns once the
// stream is complete. With opts.Resume a VM that was running runs again (it
// sends cont itself: after pre-copy and stop-copy QEMU leaves the source in
// postmigrate); without it the VM is left as the snapshot left it (paused
// after Precopy and StopCopy). A VM that was paused stays paused. On error
// it cancels the migration; with opts.Resume it resumes a VM that was
// running, without it a VM that was paused when the error came stays paused.
func (vm *VM) Snapshot(ctx context.Context, w io.Writer, opts Options) (Stats, error) {
	st, err := vm.snapshot(ctx, w, opts)
	if err != nil {
		return st, fmt.Errorf("snapshot %s %s: %w", opts.Method, vm.Spec.Name, err)
	}
	return st, nil
}

func (vm *VM) snapshot(ctx context.Context, w io.Writer, opts Options) (Stats, error) {
	st := Stats{Method: opts.Method}
	emit := func(e SnapshotEvent) {
		if opts.OnEvent != nil {
			opts.OnEvent(e)
		}
	}
	if opts.DowntimeLimit == 0 {
		opts.DowntimeLimit = 300 * time.Millisecond
	}
	if opts.MaxBandwidth == 0 {
		opts.MaxBandwidth = 4 << 30
	}
	q := vm.QMP
	var file *os.File
	if opts.MappedRAM {
		f, err := mappedRAMFile(w, opts.Method)
		if err != nil {
			return st, err
		}
		file = f
	}
	caps := []map[string]any{
		{"capability": "events", "state": true},
		{"capability": "pause-before-switchover", "state": opts.Method == Precopy},
		// QEMU's own auto-converge: without it a guest that dirties faster
		// than the copy never reaches the switchover; on only on request
		// (Hypervisor.AutoConverge).
		{"capability": "auto-converge", "state": opts.Method == Precopy && opts.AutoConverge},
		{"capability": "background-snapshot", "state": opts.Method == Background},
		{"capability": "mapped-ram", "state": opts.MappedRAM},
		{"capability": "multifd", "state": opts.MappedRAM},
	}
	if err := q.Execute(ctx, "migrate-set-capabilities", map[string]any{"capabilities": caps}, nil); err != nil {
		return st, err
	}
	params := map[string]any{
		"downtime-limit": opts.DowntimeLimit.Milliseconds(),
		"max-bandwidth":  opts.MaxBandwidth,
	}
	if opts.MappedRAM {
		params["multifd-channels"] = mappedRAMChannels
	}
	if err := q.Execute(ctx, "migrate-set-parameters", params, nil); err != nil {
		return st, err
	}
	wasRunning := false
	if s, err := vm.Status(ctx); err != nil {
		return st, err
	} else {
		wasRunning = s == "running"
	}

	sub := q.Subscribe()
	defer sub.Close()
	type copied struct {
		n   int64
		err error
	}
	copyDone := make(chan copied, 1)
	uri := "fd:" + snapFD
	if file != nil {
		// QEMU writes the file itself, at offsets, through its copy of
		// the descriptor: a file: migration from an fd set, since QEMU
		// treats an fd: descriptor as a stream it cannot seek.
		set, err := vm.addFdset(ctx, file, os.O_WRONLY)
		if err != nil {
			return st, err
		}
		defer vm.removeFdset(set)
		uri = fdsetURI(set)
		copyDone <- copied{-1, nil} // the size is the file's, once complete
	} else {
		pr, pw, err := os.Pipe()
		if err != nil {
			return st, err
		}
		defer pr.Close()
		err = q.ExecuteWithFile(ctx, "getfd", map[string]any{"fdname": snapFD}, nil, pw)
		pw.Close() // QEMU holds its own copy now
		if err != nil {
			return st, err
		}
		go func() {
			n, err := io.Copy(w, pr)
			copyDone <- copied{n, err}
			if err != nil {
				// A pipe has no shutdown: QEMU's migration thread,
				// blocked writing into a full one, sees the cancel
				// only once it can write again. Drain it until the
				// migration has ended and the deferred Close ends
				// this read.
				_, _ = io.Copy(io.Discard, pr)
			}
		}()
	}

	start := time.Now()
	fail := func(err error) (Stats, error) {
		// Best effort: leave the VM as we found it.
		// A QMP round trip takes milliseconds; 30s only bounds a QEMU that
		// no longer answers.
		cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if !opts.Resume {
			vm.cancelPaused(cctx, file != nil)
			return st, err
		}
		// A cont before the cancel has ended would race QEMU's own
		// resume of the source.
		_ = vm.endMigration(cctx, file != nil)
		if s, _ := vm.Status(cctx); wasRunning && s != "running" {
			_ = vm.Cont(cctx)
		}
		return st, err
	}
	if opts.Method == StopCopy {
		if err := q.Execute(ctx, "stop", nil, nil); err != nil {
			return fail(err)
		}
		emit(SnapshotPointReached{time.Now()})
		if opts.AtSnapshotPoint != nil {
			if err := opts.AtSnapshotPoint(ctx); err != nil {
				return fail(fmt.Errorf("at snapshot point: %w", err))
			}
		}
	}
	if err := q.Execute(ctx, "migrate", map[string]any{"uri": uri}, nil); err != nil {
		return fail(err)
	}

	// Follow the events until the stream is complete. A sink that fails
	// fails the snapshot at once: QEMU would otherwise wait on the full
	// pipe, and the snapshot on QEMU, until ctx ends.
	var cp copied
	copying := copyDone // nil once the copy has ended
	for done := false; !done; {
		var ev Event
		var ok bool
		select {
		case ev, ok = <-sub.C():
			if !ok {
				return fail(fmt.Errorf("during migration: %w%s", ErrExited, vm.stderrTail()))
			}
		case cp = <-copying:
			if cp.err != nil {
				return fail(fmt.Errorf("copy stream to sink: %w", cp.err))
			}
			copying = nil
			continue
		case <-ctx.Done():
			return fail(ctx.Err())
		}
		switch ev.Name {
		case "STOP":
			if st.Paused.IsZero() {
				st.Paused = ev.Received
			}
			emit(VMPaused{ev.Received})
		case "RESUME":
			st.Resumed = ev.Received
			emit(VMResumed{ev.Received})
		case "MIGRATION_PASS":
			var d struct {
				Pass int `json:"pass"`
			}
			_ = json.Unmarshal(ev.Data, &d)
			emit(PassStarted{ev.Received, d.Pass})
		case "MIGRATION":
			var d struct {
				Status string `json:"status"`
			}
			_ = json.Unmarshal(ev.Data, &d)
			emit(MigrationStatusChanged{ev.Received, d.Status})
			switch d.Status {
			case "pre-switchover":
				emit(SnapshotPointReached{ev.Received})
				// What the live passes sent, by QEMU's own count (one
				// monitor round trip of the pause).
				var live migrateInfo
				if err := q.Execute(ctx, "query-migrate", nil, &live); err != nil {
					return fail(err)
				}
				st.LiveBytes = live.RAM.Transferred
				st.LiveTime = time.Duration(live.TotalTime-live.SetupTime) * time.Millisecond
				if opts.AtSnapshotPoint != nil {
					if err := opts.AtSnapshotPoint(ctx); err != nil {
						return fail(fmt.Errorf("at snapshot point: %w", err))
					}
				}
				if err := q.Execute(ctx, "migrate-continue", map[string]any{"state": "pre-switchover"}, nil); err != nil {
					return fail(err)
				}
			case "completed":
				done = true
			case "failed", "cancelled":
				return fail(fmt.Errorf("migration %s: %s", d.Status, vm.migrationError(ctx)))
			}
		}
	}
	if copying != nil {
		select {
		case cp = <-copying:
		case <-ctx.Done():
			return fail(ctx.Err())
		}
	}
	st.Bytes = cp.n
	if cp.err != nil {
		return fail(fmt.Errorf("copy stream to sink: %w", cp.err))
	}
	if file != nil {
		fi, err := file.Stat()
		if err != nil {
			return fail(fmt.Errorf("mapped-ram file: %w", err))
		}
		st.Bytes = fi.Size()
	}
	var info migrateInfo
	if err := q.Execute(ctx, "query-migrate", nil, &info); err != nil {
		return fail(err)
	}
	st.Passes = info.RAM.DirtySyncCount
	st.RAMTransferred = info.RAM.Transferred
	st.QEMUDowntime = time.Duration(info.Downtime) * time.Millisecond
	st.QEMUTotal = time.Duration(info.TotalTime) * time.Millisecond

	if !opts.Resume {
		// The caller resumes the VM (and measures its pause).
		st.Duration = time.Since(start)
		return st, nil
	}
	// After pre-copy and stop-copy the source sits in postmigrate; and since
	// QEMU 10 a background snapshot no longer resumes a VM that was paused.
	if s, err := vm.Status(ctx); err != nil {
		return fail(err)
	} else if s != "running" && wasRunning {
		if err := vm.Cont(ctx); err != nil {
			return fail(err)
		}
		st.Resumed = time.Now()
		emit(VMResumed{st.Resumed})
	}
	st.Duration = time.Since(start)
	if wasRunning || !st.Resumed.IsZero() {
		// A VM left paused has no heartbeat to wait for: the caller
		// resumes it and measures the pause.
		vm.measurePause(ctx, &st, start)
	}
	return st, nil
}

// cancelPaused cancels the migration and leaves the VM paused if it was
// paused when it was called: QEMU resumes the source of a cancelled
// migration that began on a running VM, even one stopped at its snapshot
// point, and the VM's resume is the caller's decision, not QEMU's. Errors
// are ignored (best effort on the way out of a failed snapshot).
//
// A mapped-ram migration is finished rather than cancelled (see
// finishMigration); QEMU then leaves the VM paused whatever it was, so a VM
// that ran when this was called is resumed: either way the VM's run state
// is the one it had.
func (vm *VM) cancelPaused(ctx context.Context, mappedRAM bool) {
	before, _ := vm.Status(ctx)
	if vm.endMigration(ctx, mappedRAM) != nil || before == "" {
		return
	}
	if before == "running" {
		// QEMU resumes the source of a cancelled migration itself.
		if !mappedRAM {
			return
		}
		if s, _ := vm.Status(ctx); s != "running" {
			_ = vm.Cont(ctx)
		}
		return
	}
	if s, _ := vm.Status(ctx); s == "running" {
		_ = vm.Stop(ctx)
	}
}

// endMigration ends the migration of a failed snapshot: it cancels it, or
// finishes a mapped-ram one (finishMigration), falling back to a cancel if
// that does not end within finishBudget.
func (vm *VM) endMigration(ctx context.Context, mappedRAM bool) error {
	if mappedRAM {
		fctx, cancel := context.WithTimeout(ctx, finishBudget)
		err := vm.finishMigration(fctx)
		cancel()
		if err == nil || ctx.Err() != nil {
			return err
		}
	}
	return vm.cancelMigration(ctx)
}

// finishBudget bounds finishMigration: a whole pass over a guest's memory
// into a local file takes well under a second per GiB here; a migration that
// has not finished by then is stuck, and is cancelled.
const finishBudget = 20 * time.Second

// finishMigration ends a mapped-ram migration by letting it complete, at
// once, rather than by migrate_cancel: QEMU 10.0's cancel (and any failure)
// of a multifd mapped-ram migration frees the file's page bitmap while the
// multifd sender threads may still be writing pages, and QEMU segfaults in
// ramblock_set_file_bmap_atomic (a core dump of realbackend's abort test,
// about one run in 15 on a loaded machine: the VM is lost). Completing
// costs the guest a pause of one last pass over what is still dirty, into
// a file the caller then discards. Without a downtime or bandwidth bound
// the next pass is the last; a migration waiting at pre-switchover is let
// through. It returns once the migration has ended, however it ended.
func (vm *VM) finishMigration(ctx context.Context) error {
	if err := vm.QMP.Execute(ctx, "migrate-set-parameters", map[string]any{
		"downtime-limit": maxDowntimeLimit.Milliseconds(), "max-bandwidth": unboundedBandwidth}, nil); err != nil {
		return err
	}
	continued := false
	return vm.waitMigrationEnded(ctx, func(status string) error {
		if status != "pre-switchover" || continued {
			return nil
		}
		continued = true
		return vm.QMP.Execute(ctx, "migrate-continue", map[string]any{"state": "pre-switchover"}, nil)
	})
}

// maxDowntimeLimit is the largest downtime-limit QEMU accepts (2000 s);
// unboundedBandwidth a max-bandwidth no copy here reaches (1 PiB/s).
const (
	maxDowntimeLimit   = 2000 * time.Second
	unboundedBandwidth = int64(1) << 50
)

// cancelMigration cancels the migration and waits until it has ended
// (cancelled, failed or completed) or ctx ends. QEMU cancels in its
// migration thread: until the migration has ended it refuses a new one
// ("migration in progress"), and its resume of the source, if any, is not
// yet behind us. The caller keeps draining the stream meanwhile (see the
// copy in snapshot), and closes its end of the pipe only after: a QEMU
// that still writes then gets EPIPE (it ignores SIGPIPE) and fails the
// migration, but a migration that has ended writes nothing more.
func (vm *VM) cancelMigration(ctx context.Context) error {
	_ = vm.QMP.Execute(ctx, "migrate_cancel", nil, nil)
	return vm.waitMigrationEnded(ctx, nil)
}

// waitMigrationEnded polls query-migrate until the migration has ended
// (completed, failed, cancelled, or none) or ctx ends. at, if set, is
// called with each status seen while it runs, for a caller that acts on one
// (finishMigration lets pre-switchover through); its error ends the wait.
func (vm *VM) waitMigrationEnded(ctx context.Context, at func(status string) error) error {
	for {
		var info migrateInfo
		if err := vm.QMP.Execute(ctx, "query-migrate", nil, &info); err != nil {
			return err
		}
		switch info.Status {
		case "setup", "active", "cancelling", "pre-switchover", "device", "wait-unplug":
		default:
			return nil
		}
		if at != nil {
			if err := at(info.Status); err != nil {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// HeartbeatSilence is how long a pause measurement waits with no console
// line at all for the first heartbeat after a resume: the port's
// hv.HeartbeatSilence, which realbackend uses too.
const HeartbeatSilence = hv.HeartbeatSilence

// measurePause waits for the first heartbeat after the resume (see
// HeartbeatSilence), then takes the largest heartbeat gap of the snapshot.
func (vm *VM) measurePause(ctx context.Context, st *Stats, start time.Time) {
	// The window opens at the last heartbeat before the snapshot began, so a
	// pause right at the start (StopCopy, Background) is measured too.
	before, _, ok := vm.Console.LastHeartbeat(start)
	if !ok {
		return // the guest prints no heartbeat
	}
	resumed := st.Resumed
	if resumed.IsZero() {
		resumed = time.Now()
	}
	last, err := vm.Console.WaitHeartbeatAfter(ctx, resumed, HeartbeatSilence)
	end := time.Now()
	if err == nil {
		end = last.At
	}
	st.Pause = vm.Console.MaxHeartbeatGap(before.At, end)
	if !st.Paused.IsZero() {
		_, st.PointHeartbeat, st.HavePoint = vm.Console.LastHeartbeat(st.Paused)
	}
}

type migrateInfo struct {
	Status    string `json:"status"`
	TotalTime int64  `json:"total-time"`
	Downtime  int64  `json:"downtime"`
	SetupTime int64  `json:"setup-time"`
	ErrorDesc string `json:"error-desc"`
	RAM       struct {
		Transferred    int64 `json:"transferred"`
		Total          int64 `json:"total"`
		DirtySyncCount int   `json:"dirty-sync-count"`
	} `json:"ram"`
}

func (vm *VM) migrationError(ctx context.Context) string {
	var info migrateInfo
	if err := vm.QMP.Execute(ctx, "query-migrate", nil, &info); err != nil {
		return "query-migrate: " + err.Error()
	}
	if info.ErrorDesc == "" {
		return "no error-desc"
	}
	return info.ErrorDesc
}

// ErrRestore is returned (wrapped, with QEMU's error-desc) when QEMU fails to
// load a snapshot stream.
var ErrRestore = errors.New("restore failed")

const restoreFD = "vnsnap-restore"

// Restore starts a VM from spec (which must match the snapshotted VM's,
// machine type included) and loads the snapshot stream read from r into it.
// The VM stays paused until the caller calls Cont. QEMU runs with
// exit-on-error off, so a load error is reported here rather than lost with
// the process. On error the VM is killed.
func Restore(ctx context.Context, host *Host, spec Spec, r io.Reader) (*VM, error) {
	vm, err := start(ctx, host, spec, true, nil)
	if err != nil {
		return nil, fmt.Errorf("restore %s: %w", spec.Name, err)
	}
	if err := vm.restore(ctx, r, nil); err != nil {
		vm.Kill()
		return nil, fmt.Errorf("restore %s: %w", spec.Name, err)
	}
	return vm, nil
}

func (vm *VM) restore(ctx context.Context, r io.Reader, file *os.File) error {
	q := vm.QMP
	caps := []map[string]any{
		{"capability": "events", "state": true},
		{"capability": "mapped-ram", "state": file != nil},
		{"capability": "multifd", "state": file != nil},
	}
	if file != nil {
		// QEMU checks the channel count against the file's header.
		if err := q.Execute(ctx, "migrate-set-parameters", map[string]any{"multifd-channels": mappedRAMChannels}, nil); err != nil {
			return err
		}
	}
	if err := q.Execute(ctx, "migrate-set-capabilities", map[string]any{"capabilities": caps}, nil); err != nil {
		return err
	}
	sub := q.Subscribe()
	defer sub.Close()
	fed := make(chan error, 1)
	uri := "fd:" + restoreFD
	if file != nil {
		// QEMU reads the file itself, at offsets.
		set, err := vm.addFdset(ctx, file, os.O_RDONLY)
		if err != nil {
			return err
		}
		defer vm.removeFdset(set)
		uri = fdsetURI(set)
		fed <- nil
	} else {
		pr, pw, err := os.Pipe()
		if err != nil {
			return err
		}
		defer pw.Close() // unblocks the feeder if QEMU stops reading
		err = q.ExecuteWithFile(ctx, "getfd", map[string]any{"fdname": restoreFD}, nil, pr)
		pr.Close()
		if err != nil {
			return err
		}
		go func() {
			_, err := io.Copy(pw, r)
			pw.Close()
			fed <- err
		}()
	}
	args := map[string]any{"uri": uri, "exit-on-error": false}
	if err := q.Execute(ctx, "migrate-incoming", args, nil); err != nil {
		return err
	}
	for {
		select {
		case ev, ok := <-sub.C():
			if !ok {
				return fmt.Errorf("during load: %w%s", ErrExited, vm.stderrTail())
			}
			if ev.Name != "MIGRATION" {
				continue
			}
			var d struct {
				Status string `json:"status"`
			}
			_ = json.Unmarshal(ev.Data, &d)
			switch d.Status {
			case "completed":
				// QEMU has read through the end-of-stream marker; the feeder
				// only has to see EOF (or EPIPE, if QEMU closed first).
				select {
				case err := <-fed:
					if err != nil && !errors.Is(err, syscall.EPIPE) {
						return fmt.Errorf("read snapshot stream: %w", err)
					}
				case <-time.After(5 * time.Second):
					return errors.New("snapshot stream has data after its end")
				}
				return nil
			case "failed", "cancelled":
				return fmt.Errorf("%w: %s%s", ErrRestore, vm.migrationError(ctx), vm.stderrTail())
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
