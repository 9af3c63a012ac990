// Package progress gives tests of real VMs deadlines derived from progress
// instead of wall time, so that they hold on a loaded machine: a context
// stays alive while the work it bounds keeps moving (QEMU processes get CPU
// time, consoles print, bytes flow) and ends when nothing has moved for an
// idle period, or at a hard cap that is only a safety net against a guest
// that spins without end. It imports only the standard library, so that
// qemubackend's own tests can use it too.
package progress

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// ErrStalled is the cause of a Watch context that saw no progress for its
// idle period.
var ErrStalled = errors.New("no progress")

// ErrCapped is the cause of a Watch context that reached its hard cap.
var ErrCapped = errors.New("hard cap reached")

// Probe returns a value that changes whenever the watched work makes
// progress: a count of console bytes, CPU ticks, bytes moved.
type Probe func() int64

// Watch returns a context derived from parent that ends when none of the
// probes has changed for idle (cause: ErrStalled, naming what), when hardCap
// has passed since the call (cause: ErrCapped), or when parent ends. Report
// context.Cause (or Why) in failure messages: the context's Err alone only
// says "canceled".
func Watch(parent context.Context, what string, idle, hardCap time.Duration, probes ...Probe) (context.Context, context.CancelFunc) {
	capped, cancelCap := context.WithTimeoutCause(parent, hardCap, fmt.Errorf("%w: %s still moving after %v", ErrCapped, what, hardCap))
	ctx, cancel := context.WithCancelCause(capped)
	sample := func() []int64 {
		v := make([]int64, len(probes))
		for i, p := range probes {
			v[i] = p()
		}
		return v
	}
	tick := min(idle/10, time.Second)
	go func() {
		last, moved := sample(), time.Now()
		t := time.NewTicker(tick)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			if v := sample(); !equal(v, last) {
				last, moved = v, time.Now()
			} else if time.Since(moved) >= idle {
				cancel(fmt.Errorf("%w: %s unchanged for %v", ErrStalled, what, idle))
				return
			}
		}
	}()
	return ctx, func() { cancel(context.Canceled); cancelCap() }
}

// Why returns err with ctx's cause appended when ctx has ended, for a
// failure message that says whether the work stalled or hit the cap.
func Why(ctx context.Context, err error) error {
	if c := context.Cause(ctx); c != nil && err != nil && !errors.Is(err, c) {
		return fmt.Errorf("%w (%v)", err, c)
	}
	return err
}

func equal(a, b []int64) bool {
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// DescendantCPU returns a probe of the CPU time, in clock ticks, used by
// this process's descendants (QEMU processes, builds): those running now and
// those already reaped. A booting or running guest under TCG keeps its QEMU
// on the CPU, so this moves while any VM runs, however slowly the machine
// lets it; it stops when every VM is paused, hung in a host call, or gone.
func DescendantCPU() Probe {
	self := os.Getpid()
	return func() int64 {
		var total int64
		if st, ok := readStat("self"); ok {
			total += st.cutime + st.cstime
		}
		stats := map[int]procStat{}
		ents, _ := os.ReadDir("/proc")
		for _, e := range ents {
			pid, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			if st, ok := readStat(e.Name()); ok {
				stats[pid] = st
			}
		}
		for pid, st := range stats {
			if isDescendant(pid, self, stats) {
				total += st.utime + st.stime
			}
		}
		return total
	}
}

func isDescendant(pid, root int, stats map[int]procStat) bool {
	for range 64 { // depth bound: a ppid loop cannot hang the probe
		st, ok := stats[pid]
		if !ok || st.ppid <= 1 {
			return false
		}
		if st.ppid == root {
			return true
		}
		pid = st.ppid
	}
	return false
}

type procStat struct {
	ppid                         int
	utime, stime, cutime, cstime int64
}

// readStat parses /proc/<pid>/stat: the command name is in parentheses and
// may hold spaces, so fields are counted after the last ')'.
func readStat(pid string) (procStat, bool) {
	b, err := os.ReadFile(filepath.Join("/proc", pid, "stat"))
	if err != nil {
		return procStat{}, false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return procStat{}, false
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state): ppid is field 4, utime..cstime fields 14-17.
	if len(f) < 15 {
		return procStat{}, false
	}
	n := func(k int) int64 { v, _ := strconv.ParseInt(f[k-3], 10, 64); return v }
	return procStat{ppid: int(n(4)), utime: n(14), stime: n(15), cutime: n(16), cstime: n(17)}, true
}

// DirBytes returns a probe of the total size of the regular files in dir
// (not recursive): console logs that grow while guests print.
func DirBytes(dir string) Probe {
	return func() int64 {
		var total int64
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			if fi, err := e.Info(); err == nil && fi.Mode().IsRegular() {
				total += fi.Size()
			}
		}
		return total
	}
}
