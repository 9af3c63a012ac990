package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
)

// A view shows the progress events of a snapshot or restore and then its
// result: bars on a terminal (barView), plain lines otherwise (plainView),
// JSON lines with --json (jsonView).
type view interface {
	event(e progressEvent)
	// finish shows the result (or the exchange's error) and returns the
	// command's error.
	finish(r response, err error) error
}

// newView picks the view: --json, bars when stdout is a terminal, plain
// lines on stderr otherwise (stdout keeps the report alone).
func newView(stdout, stderr io.Writer, asJSON bool) view {
	switch {
	case asJSON:
		return &jsonView{w: stdout}
	case isTerminal(stdout):
		return newBarView(stdout)
	default:
		return &plainView{stdout: stdout, w: stderr, every: plainEvery, vms: map[string]*vmView{}}
	}
}

// resultError is the command's error for result r.
func resultError(r response) error {
	if !r.OK {
		return errors.New(r.Error)
	}
	return nil
}

// jsonView prints each event, then the result, as one JSON line.
type jsonView struct{ w io.Writer }

func (v *jsonView) event(e progressEvent) {
	b, _ := json.Marshal(e)
	fmt.Fprintf(v.w, "%s\n", b)
}

func (v *jsonView) finish(r response, err error) error {
	if err != nil {
		return err
	}
	r.V, r.Type = progressVersion, "result" // a version-0 supervisor sets neither
	b, _ := json.Marshal(r)
	fmt.Fprintf(v.w, "%s\n", b)
	return resultError(r)
}

// vmView is what a view keeps of one VM: its last event and its rate.
type vmView struct {
	last progressEvent
	// anchorAt and anchorBytes open the window the rate is measured over.
	anchorAt    time.Time
	anchorBytes int64
	rate        float64 // bytes per second
	printed     time.Time
}

// rateWindow is the shortest window a rate is measured over.
const rateWindow = 500 * time.Millisecond

// counted returns the bytes an event counts, their total and what they
// are: the flush's while a memory-sink image is written to the store, else
// the stream's (copied by a snapshot, read by a restore).
func counted(e progressEvent) (done, total int64, what string) {
	switch {
	case e.Phase == "flushing" || e.Phase == "flushed":
		return e.FlushBytes, e.FlushTotal, "flush"
	case e.Op == "restore":
		return e.Bytes, e.Total, "read"
	}
	return e.Bytes, e.Total, "copy"
}

// update takes e into v; it reports whether the phase or pass changed.
func (v *vmView) update(e progressEvent) bool {
	changed := e.Phase != v.last.Phase || e.Pass != v.last.Pass
	_, _, was := counted(v.last)
	done, _, what := counted(e)
	switch {
	case v.anchorAt.IsZero() || what != was:
		v.anchorAt, v.anchorBytes, v.rate = e.At, done, 0
	case e.At.Sub(v.anchorAt) >= rateWindow:
		v.rate = float64(done-v.anchorBytes) / e.At.Sub(v.anchorAt).Seconds()
		v.anchorAt, v.anchorBytes = e.At, done
	}
	v.last = e
	return changed
}

func (v *vmView) phase() string {
	if v.last.Pass > 0 && v.last.Phase == "live-copy" {
		return fmt.Sprintf("%s pass %d", v.last.Phase, v.last.Pass)
	}
	return v.last.Phase
}

func (v *vmView) counts() string {
	done, total, what := counted(v.last)
	s := fmt.Sprintf("%s %s", what, mibs(done))
	if total > 0 {
		s += " of " + mibs(total)
	}
	if v.rate > 0 {
		s += fmt.Sprintf(" at %s/s", mibs(int64(v.rate)))
	}
	return s
}

func mibs(n int64) string { return fmt.Sprintf("%.1fMiB", mib(n)) }

// plainEvery is how often a plain view prints a VM whose phase stays.
const plainEvery = 2 * time.Second

// plainView prints a line per VM when its phase changes, and every
// plainEvery while it stays; the report goes to stdout.
type plainView struct {
	stdout, w io.Writer
	every     time.Duration
	vms       map[string]*vmView
}

func (v *plainView) event(e progressEvent) {
	vm := v.vms[e.VM]
	if vm == nil {
		vm = &vmView{}
		v.vms[e.VM] = vm
	}
	if !vm.update(e) && e.At.Sub(vm.printed) < v.every {
		return
	}
	vm.printed = e.At
	fmt.Fprintf(v.w, "%s %s: %s, %s, %.1fs\n", e.Op, e.VM, vm.phase(), vm.counts(), time.Duration(e.ElapsedNS).Seconds())
}

func (v *plainView) finish(r response, err error) error {
	if err != nil {
		return err
	}
	fmt.Fprint(v.stdout, r.Text)
	return resultError(r)
}

// barView draws one line per VM on a terminal with mpb (multi-bar), in the
// order the VMs first appear, then prints the report below.
type barView struct {
	stdout io.Writer
	p      *mpb.Progress
	mu     sync.Mutex // guards vms: the decorators run in mpb's goroutine
	vms    map[string]*vmView
	bars   map[string]*mpb.Bar
	order  []string
}

func newBarView(stdout io.Writer) *barView {
	return &barView{
		stdout: stdout, vms: map[string]*vmView{}, bars: map[string]*mpb.Bar{},
		p: mpb.New(mpb.WithOutput(stdout), mpb.WithWidth(32), mpb.WithRefreshRate(150*time.Millisecond)),
	}
}

func (v *barView) event(e progressEvent) {
	v.mu.Lock()
	vm := v.vms[e.VM]
	if vm == nil {
		vm = &vmView{}
		v.vms[e.VM] = vm
	}
	vm.update(e)
	done, total, _ := counted(e)
	v.mu.Unlock()
	bar := v.bars[e.VM]
	if bar == nil {
		locked := func(f func() string) decor.DecorFunc {
			return func(decor.Statistics) string { v.mu.Lock(); defer v.mu.Unlock(); return f() }
		}
		// Total 0: the bar never completes by itself; finish completes it.
		bar = v.p.AddBar(0,
			mpb.PrependDecorators(
				decor.Name(e.VM+" ", decor.WCSyncWidthR),
				decor.Any(locked(vm.phase), decor.WC{W: 18, C: decor.DindentRight}),
			),
			mpb.AppendDecorators(decor.Any(locked(vm.counts))),
		)
		v.bars[e.VM] = bar
		v.order = append(v.order, e.VM)
	}
	bar.SetTotal(max(total, done), false)
	bar.SetCurrent(done)
}

func (v *barView) finish(r response, err error) error {
	for _, name := range v.order {
		if err != nil || !r.OK {
			v.bars[name].Abort(false)
		} else {
			v.bars[name].SetTotal(-1, true)
		}
	}
	v.p.Wait()
	if err != nil {
		return err
	}
	fmt.Fprint(v.stdout, r.Text)
	return resultError(r)
}
