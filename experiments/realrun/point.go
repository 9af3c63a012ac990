// Package realrun runs the real side of the sim-vs-real experiment (E9) and
// the measurements of `vnsnap calibrate`: small VNEs of built-in guests on
// real QEMU through realbackend, snapshotted with each algorithm and sink,
// one row per VM and snapshot.
//
// A grid point is a VNE description (Point: how many VMs, which guest, the
// dirtier's rate and working set); one boot serves every case (algorithm and
// sink) and repeat of the point, so a point costs one boot plus one snapshot
// per case and repeat. Before the snapshots the guests' dirty rate is
// measured with QEMU's calc-dirty-rate, so the simulator can be given the
// rate the guest really had rather than the one it was asked for.
package realrun

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/vnsnap/vnsnap/core"
	"github.com/vnsnap/vnsnap/qemubackend"
	"github.com/vnsnap/vnsnap/qemubackend/guestimg"
	"github.com/vnsnap/vnsnap/realbackend"
	"github.com/vnsnap/vnsnap/realbackend/hv"
	"github.com/vnsnap/vnsnap/vne"
)

// Point is one VNE description of the grid.
type Point struct {
	VMs    int     `json:"vms"`     // on two hosts, round-robin
	MemMiB int     `json:"mem_mib"` // per VM
	Guest  string  `json:"guest"`   // "idle" or "dirtier"
	Rate   float64 `json:"rate_mibps"`
	WSMiB  int     `json:"ws_mib"` // dirtier's working set
}

// Name is the point's short label ("2x128MiB-dirtier-8").
func (p Point) Name() string {
	if p.Guest == "dirtier" {
		return fmt.Sprintf("%dx%dMiB-dirtier-%g", p.VMs, p.MemMiB, p.Rate)
	}
	return fmt.Sprintf("%dx%dMiB-%s", p.VMs, p.MemMiB, p.Guest)
}

func (p Point) validate() error {
	switch {
	case p.VMs < 1 || p.VMs > 16:
		return fmt.Errorf("point %s: vms %d, want 1..16", p.Name(), p.VMs)
	case p.MemMiB < 64 || p.MemMiB > 4096:
		return fmt.Errorf("point %s: mem %d MiB, want 64..4096", p.Name(), p.MemMiB)
	case p.Guest != "idle" && p.Guest != "dirtier":
		return fmt.Errorf("point %s: guest %q, want idle or dirtier", p.Name(), p.Guest)
	case p.Guest == "dirtier" && (p.Rate < 0 || p.Rate > 4096 || p.WSMiB < 1 || p.WSMiB >= p.MemMiB):
		return fmt.Errorf("point %s: dirtier rate %g MiB/s, ws %d MiB: want 0..4096 and 1..mem", p.Name(), p.Rate, p.WSMiB)
	}
	return nil
}

// yaml is the point's VNE file.
func (p Point) yaml() string {
	var b strings.Builder
	fmt.Fprintf(&b, "name: e9\nhosts:\n  - name: h1\n  - name: h2\nvms:\n")
	for i := 0; i < p.VMs; i++ {
		guest := "{builtin: idle}"
		if p.Guest == "dirtier" {
			guest = fmt.Sprintf(`{builtin: dirtier, args: ["-rate=%g", "-ws=%d"]}`, p.Rate, p.WSMiB)
		}
		fmt.Fprintf(&b, "  - {name: v%d, host: h%d, memory: %dMiB, ip: 10.0.0.%d, guest: %s}\n",
			i+1, i%2+1, p.MemMiB, i+1, guest)
	}
	return b.String()
}

// Case is one algorithm with one sink.
type Case struct {
	Algorithm core.Algorithm
	Sink      core.Sink
}

func (c Case) String() string { return c.Algorithm.String() + "/" + c.Sink.String() }

// Options say how to run points.
type Options struct {
	Host  *qemubackend.Host
	Image guestimg.Image
	// Dir is a short scratch directory (unix socket paths): each point's
	// runtime files and store go below it and are removed after the point.
	Dir     string
	Cases   []Case
	Repeats int
	// Warmup is how long the guests run after boot before the dirty rate is
	// measured and the first snapshot taken (default 2 s).
	Warmup time.Duration
	// DirtyCalc is calc-dirty-rate's measuring time (default 1 s).
	DirtyCalc time.Duration
	// Log, if set, receives one line per step (progress).
	Log func(format string, args ...any)
	// OnProgress, if set, receives the snapshots' per-VM progress events.
	OnProgress func(realbackend.Progress)
}

func (o *Options) logf(format string, args ...any) {
	if o.Log != nil {
		o.Log(format, args...)
	}
}

// Row is one VM's measurements in one snapshot.
type Row struct {
	Point    string  `json:"point"`
	VMs      int     `json:"vms"`
	MemMiB   int     `json:"mem_mib"`
	Guest    string  `json:"guest"`
	Rate     float64 `json:"rate_mibps"`  // the dirtier's -rate
	WSMiB    int     `json:"ws_mib"`      // the dirtier's -ws
	Measured float64 `json:"dirty_mibps"` // calc-dirty-rate of this VM before the snapshots
	// GuestRate is the rate the dirtier achieved before the snapshots, by
	// its own account: its working set over the time between two of its
	// sweep lines (0: an idle guest, or a file from before it was
	// measured). Under TCG calc-dirty-rate reads about 0 MiB/s.
	GuestRate float64 `json:"guest_mibps"`
	Algorithm string  `json:"algorithm"`
	Sink      string  `json:"sink"`
	Repeat    int     `json:"repeat"`
	VM        string  `json:"vm"`
	// PauseMs is the core's downtime (pause command to resume event);
	// OutsideMs the largest heartbeat gap around the snapshot (the pause
	// seen from outside); QEMUPauseMs QEMU's own downtime figure.
	PauseMs     float64 `json:"pause_ms"`
	OutsideMs   float64 `json:"outside_ms"`
	QEMUPauseMs float64 `json:"qemu_pause_ms"`
	// DurationMs is the core's copy duration (start to image complete).
	DurationMs float64 `json:"duration_ms"`
	// BytesCopied is the memory the core counted as copied; StreamBytes
	// the image stream written; MemoryCopied QEMU's RAM transferred.
	BytesCopied  int64 `json:"bytes_copied"`
	StreamBytes  int64 `json:"stream_bytes"`
	MemoryCopied int64 `json:"memory_copied"`
	Passes       int   `json:"passes"`
	// LiveBytes and LiveMs are a pre-copy's live passes by QEMU's own
	// count: the RAM sent and the time taken before the pause (0: not a
	// pre-copy, or a file from before they were recorded).
	LiveBytes int64   `json:"live_bytes,omitempty"`
	LiveMs    float64 `json:"live_ms,omitempty"`
	// WindowMs is the VNE's snapshot window; SnapshotMs the whole
	// snapshot's duration (start to commit).
	WindowMs   float64 `json:"window_ms"`
	SnapshotMs float64 `json:"snapshot_ms"`
	// StallMs is the application stall: how much later than its interval
	// the guest's heartbeat came across the snapshot (the outside pause
	// less one heartbeat interval, at least 0).
	StallMs float64 `json:"stall_ms"`
}

// heartbeat is the built-in guests' heartbeat interval (realbackend's
// default).
const heartbeat = 20 * time.Millisecond

// RunPoint boots p's VNE once and snapshots it with every case, Repeats
// times, in the order repeat-major (so a slow drift of the machine spreads
// over the cases). It returns one row per VM and snapshot.
func RunPoint(ctx context.Context, p Point, o Options) ([]Row, error) {
	if err := p.validate(); err != nil {
		return nil, err
	}
	if o.Repeats < 1 {
		o.Repeats = 1
	}
	if o.DirtyCalc == 0 {
		o.DirtyCalc = time.Second
	}
	env, done, err := boot(ctx, p, &o)
	if err != nil {
		return nil, err
	}
	defer done()
	st, err := os.MkdirTemp(o.Dir, "s-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(st)
	measured := make([]float64, env.NumVMs())
	for i := range measured {
		vm := env.Machine(i).(*qemubackend.Machine).VM()
		r, err := vm.DirtyRate(ctx, o.DirtyCalc)
		if err != nil {
			return nil, fmt.Errorf("point %s: %w", p.Name(), err)
		}
		measured[i] = r / (1 << 20)
	}
	o.logf("%s: dirty rate measured %s MiB/s", p.Name(), fmtRates(measured))
	guest := make([]float64, env.NumVMs())
	if p.Guest == "dirtier" {
		if guest, err = sweepRates(ctx, env, p, &o); err != nil {
			return nil, fmt.Errorf("point %s: %w", p.Name(), err)
		}
		o.logf("%s: the dirtiers' own rates %s MiB/s", p.Name(), fmtRates(guest))
	}
	var rows []Row
	n := 0
	for rep := 0; rep < o.Repeats; rep++ {
		for _, c := range o.Cases {
			n++
			name := fmt.Sprintf("s%d", n)
			o.logf("%s: %s repeat %d/%d", p.Name(), c, rep+1, o.Repeats)
			r, err := env.Snapshot(ctx, realbackend.SnapshotOptions{Store: st, Name: name, Algorithm: c.Algorithm, Sink: c.Sink, OnProgress: o.OnProgress})
			if err != nil {
				return rows, fmt.Errorf("point %s: %s repeat %d: %w", p.Name(), c, rep+1, err)
			}
			rows = append(rows, rowsOf(p, c, rep, measured, guest, r)...)
			if err := removeSnapshots(st); err != nil {
				return rows, err
			}
			if err := waitHeartbeats(ctx, env, 500*time.Millisecond); err != nil {
				return rows, fmt.Errorf("point %s: after %s: %w", p.Name(), c, err)
			}
		}
	}
	return rows, nil
}

// boot starts p's VNE in a scratch directory below o.Dir and lets it warm
// up; done closes it and removes the directory.
func boot(ctx context.Context, p Point, o *Options) (env *realbackend.Env, done func(), err error) {
	if o.Warmup == 0 {
		o.Warmup = 2 * time.Second
	}
	dir, err := os.MkdirTemp(o.Dir, "p-")
	if err != nil {
		return nil, nil, err
	}
	defer func() {
		if err != nil {
			os.RemoveAll(dir)
		}
	}()
	v, err := vne.Parse("e9.yaml", []byte(p.yaml()), dir)
	if err != nil {
		return nil, nil, fmt.Errorf("point %s: %w", p.Name(), err)
	}
	o.logf("%s: booting %d VMs", p.Name(), p.VMs)
	env, err = realbackend.Boot(ctx, v, realbackend.Options{Hypervisor: autoConverging(o.Host), Image: o.Image, Dir: dir})
	if err != nil {
		return nil, nil, fmt.Errorf("point %s: boot: %w", p.Name(), err)
	}
	if err = waitHeartbeats(ctx, env, o.Warmup); err != nil {
		env.Close()
		return nil, nil, fmt.Errorf("point %s: %w", p.Name(), err)
	}
	return env, func() { env.Close(); os.RemoveAll(dir) }, nil
}

// sweepRates measures each dirtier's achieved rate: its working set over
// the time between two consecutive sweep lines ("DIRTIER OK ...") that
// arrive from now on. The VMs' lines are timestamped as they arrive, so the
// VMs are measured over the same sweeps whatever the order of the waits. A
// dirtier that finishes fewer than two sweeps within three times its set
// period (and 15 s) does not run at its rate: its rate is the sweeps it did
// finish over that time (0 if none), and why is logged with its last line.
func sweepRates(ctx context.Context, env *realbackend.Env, p Point, o *Options) ([]float64, error) {
	period := time.Duration(float64(p.WSMiB) / p.Rate * float64(time.Second))
	wait := 3*period + 15*time.Second
	cons := make([]*qemubackend.Console, env.NumVMs())
	from := make([]int, len(cons))
	for i := range cons {
		cons[i] = env.Machine(i).(*qemubackend.Machine).VM().Console
		from[i] = cons[i].Len()
	}
	start := time.Now()
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	out := make([]float64, len(cons))
	for i, c := range cons {
		a, ia, err := c.WaitPrefix(wctx, from[i], "DIRTIER OK")
		if err == nil {
			var b qemubackend.Line
			if b, _, err = c.WaitPrefix(wctx, ia+1, "DIRTIER OK"); err == nil {
				if d := b.At.Sub(a.At); d > 0 {
					out[i] = float64(p.WSMiB) / d.Seconds()
				}
				continue
			}
			out[i] = float64(p.WSMiB) / time.Since(start).Seconds() // one sweep in the wait
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		last := "none"
		for _, l := range c.Lines() {
			if strings.HasPrefix(l.Text, "DIRTIER") {
				last = fmt.Sprintf("%q at %s", l.Text, l.At.Format("15:04:05.000"))
			}
		}
		o.logf("%s: vm %d: fewer than two dirtier sweeps in %v (set period %v; last dirtier line %s): rate taken as %.2f MiB/s",
			p.Name(), i+1, wait.Round(time.Second), period.Round(time.Millisecond), last, out[i])
	}
	return out, nil
}

// removeSnapshots empties the store: the next snapshot's epoch is one
// more than the VNE's current one (realbackend takes the larger of the
// store's and the VNE's), so nothing needs keeping.
func removeSnapshots(st string) error {
	if err := os.RemoveAll(st); err != nil {
		return err
	}
	return os.Mkdir(st, 0o755)
}

// bootSilence bounds the wait for a booting guest's first heartbeat with
// no console line at all: a TCG guest boots in tens of seconds on an idle
// machine, minutes on a loaded one, and its kernel may print nothing
// meanwhile (a test's context ends sooner if QEMU gets no CPU).
const bootSilence = 10 * time.Minute

// waitHeartbeats waits for each guest's first heartbeat, lets the guests
// run for d, then checks that each printed a heartbeat in the last second:
// a guest that does not run is an error, not a measurement.
func waitHeartbeats(ctx context.Context, env *realbackend.Env, d time.Duration) error {
	hbs := make([]hv.Heartbeats, env.NumVMs())
	for i := range hbs {
		hb, ok := env.Machine(i).(hv.Heartbeats)
		if !ok {
			return errors.New("the machine has no heartbeat console")
		}
		if _, err := hb.WaitHeartbeatAfter(ctx, time.Time{}, bootSilence); err != nil {
			return fmt.Errorf("vm %d: no first heartbeat: %w", i+1, err)
		}
		hbs[i] = hb
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
	}
	now := time.Now()
	for i, hb := range hbs {
		if _, err := hb.WaitHeartbeatAfter(ctx, now.Add(-time.Second), 30*time.Second); err != nil {
			return fmt.Errorf("vm %d: no heartbeat: %w", i+1, err)
		}
	}
	return nil
}

func rowsOf(p Point, c Case, rep int, measured, guest []float64, r *realbackend.Report) []Row {
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	var rows []Row
	for i, vr := range r.VMs {
		cr := r.Core.VMs[i]
		stall := vr.Pause.Gap - heartbeat
		if stall < 0 {
			stall = 0
		}
		rows = append(rows, Row{
			Point: p.Name(), VMs: p.VMs, MemMiB: p.MemMiB, Guest: p.Guest, Rate: p.Rate, WSMiB: p.WSMiB,
			Measured: measured[i], GuestRate: guest[i], Algorithm: c.Algorithm.String(), Sink: cr.Sink.String(), Repeat: rep, VM: vr.Name,
			PauseMs: ms(cr.Downtime()), OutsideMs: ms(vr.Pause.Gap), QEMUPauseMs: ms(vr.Save.Downtime),
			DurationMs: ms(cr.Duration()), BytesCopied: cr.BytesCopied(), StreamBytes: vr.Save.Bytes,
			MemoryCopied: vr.Save.MemoryCopied, Passes: vr.Save.Passes,
			LiveBytes: vr.Save.LiveBytes, LiveMs: ms(vr.Save.LiveTime),
			WindowMs: ms(r.Core.Window()), SnapshotMs: ms(r.Duration), StallMs: ms(stall),
		})
	}
	return rows
}

func fmtRates(r []float64) string {
	s := make([]string, len(r))
	for i, v := range r {
		s[i] = fmt.Sprintf("%.1f", v)
	}
	return strings.Join(s, " ")
}

// autoConverging is the QEMU port of host with auto-converge on in live
// saves, as the simulator's QEMU model assumes (qemubackend leaves it off
// by default).
func autoConverging(host *qemubackend.Host) *qemubackend.Hypervisor {
	h := qemubackend.NewHypervisor(host)
	h.AutoConverge = true
	return h
}
