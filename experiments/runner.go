package experiments

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"gopkg.in/yaml.v3"

	"github.com/vnsnap/vnsnap/results"
	sim "github.com/vnsnap/vnsnap/simbackend"
)

// Options control one run of an experiment.
type Options struct {
	Full       bool   // the large config
	ConfigFile string // JSON or YAML overrides; "" for none
	Seeds      int    // number of seeds (1..Seeds); 0 means the config's own
	Out        string // output directory
	Workers    int    // parallel simulator runs; 0 means GOMAXPROCS
	// Log receives one line per experiment started and finished; nil is quiet.
	Log io.Writer
	// Bar draws a progress bar on Log (set it when Log is a terminal).
	Bar bool
	// execute replaces Execute (tests replay recorded outcomes).
	execute func(jobs []Job, workers int, done func()) ([]Outcome, error)
}

// run executes jobs as Execute does, or through opt.execute if set.
func (opt Options) run(jobs []Job, name string) ([]Outcome, error) {
	ex := opt.execute
	if ex == nil {
		ex = Execute
	}
	return ex(jobs, opt.Workers, progress(name, len(jobs), opt))
}

// DefaultOut is where outputs go unless told otherwise.
const DefaultOut = "results/out"

// LoadConfig returns e's default (or full) config with the overrides of
// path applied, if path is not empty. YAML files (.yaml, .yml) are read
// like JSON ones; unknown fields are an error.
func LoadConfig(e *Experiment, full bool, path string) (Config, error) {
	cfg := e.New(full)
	if path == "" {
		return cfg, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if ext := strings.ToLower(filepath.Ext(path)); ext == ".yaml" || ext == ".yml" {
		var v any
		if err := yaml.Unmarshal(b, &v); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if b, err = json.Marshal(v); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(cfg); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

// Seeds returns the seeds 1..n.
func Seeds(n int) []uint64 {
	s := make([]uint64, n)
	for i := range s {
		s[i] = uint64(i + 1)
	}
	return s
}

// Run runs experiment e as opt says, writes its tables and figures under
// opt.Out and returns its report section.
func Run(e *Experiment, opt Options) (results.Section, error) {
	sw, err := NewSweep([]*Experiment{e}, opt)
	if err != nil {
		return results.Section{}, err
	}
	part := sw.Parts[0]
	jobs := part.Jobs
	start := time.Now()
	if opt.Log != nil {
		fmt.Fprintf(opt.Log, "%s: %d runs (%d seeds)\n", e.Name, len(jobs), len(part.Seeds))
	}
	outs, err := opt.run(jobs, e.Name)
	if err != nil {
		return results.Section{}, fmt.Errorf("%s: %w", e.Name, err)
	}
	meta, err := part.meta("")
	if err != nil {
		return results.Section{}, err
	}
	out := opt.Out
	if out == "" {
		out = DefaultOut
	}
	sec, err := writeRun(e, meta, part.Cfg.Tables(jobs, outs), out)
	if opt.Log != nil && err == nil {
		fmt.Fprintf(opt.Log, "%s: done in %.1f s, wrote %s/%s.{csv,json} and %d figures\n",
			e.Name, time.Since(start).Seconds(), out, e.Name, len(sec.Figures))
	}
	return sec, err
}

// progress returns the per-job callback that advances a progress bar, or
// nil when there is none to draw.
func progress(name string, total int, opt Options) func() {
	if opt.Log == nil || !opt.Bar {
		return nil
	}
	bar := progressbar.NewOptions(total,
		progressbar.OptionSetWriter(opt.Log),
		progressbar.OptionSetDescription(fmt.Sprintf("%-14s", name)),
		progressbar.OptionShowCount(),
		progressbar.OptionSetWidth(30),
		progressbar.OptionSetElapsedTime(true),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionClearOnFinish(),
	)
	var mu sync.Mutex
	return func() {
		mu.Lock()
		defer mu.Unlock()
		_ = bar.Add(1)
	}
}

// Execute runs jobs on workers goroutines (GOMAXPROCS if 0) and returns the
// outcomes in job order, whatever order they finish in. done, if not nil, is
// called after each job. The first error (or a simulator panic, which
// reports a broken invariant) stops the remaining jobs.
func Execute(jobs []Job, workers int, done func()) ([]Outcome, error) {
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	workers = max(1, min(workers, len(jobs)))
	outs := make([]Outcome, len(jobs))
	errs := make([]error, len(jobs))
	next := make(chan int)
	var failed sync.Once
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				outs[i], errs[i] = runJob(jobs[i])
				if errs[i] != nil {
					failed.Do(func() { close(stop) })
				}
				if done != nil {
					done()
				}
			}
		}()
	}
feed:
	for i := range jobs {
		select {
		case next <- i:
		case <-stop:
			break feed
		}
	}
	close(next)
	wg.Wait()
	return outs, errors.Join(errs...)
}

func runJob(j Job) (out Outcome, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("run %v seed %d: panic: %v", j.Labels, j.Seed, p)
		}
	}()
	run := j.Run
	if run == nil {
		run = func(c sim.Config) (*sim.Result, any, error) {
			r, err := sim.Run(c)
			return r, nil, err
		}
	}
	t0 := time.Now()
	res, extra, err := run(j.Sim)
	if err != nil {
		return Outcome{}, fmt.Errorf("run %v seed %d: %w", j.Labels, j.Seed, err)
	}
	return Outcome{Res: res, Extra: extra, WallSeconds: time.Since(t0).Seconds()}, nil
}

// Load reads experiment e's tables from dir.
func Load(e *Experiment, dir string) (results.Meta, Tables, error) {
	ts := Tables{}
	var meta results.Meta
	for _, name := range e.tableNames() {
		m, t, err := results.ReadJSON(filepath.Join(dir, e.tableFile(name)+".json"))
		if err != nil {
			return results.Meta{}, nil, err
		}
		if name == "" {
			meta = m
		}
		ts[name] = t
	}
	return meta, ts, nil
}

// Render reads experiment e's tables from dir, analyses them, writes its
// figures to dir and returns its report section.
func Render(e *Experiment, dir string) (results.Section, error) {
	meta, ts, err := Load(e, dir)
	if err != nil {
		return results.Section{}, err
	}
	a, err := e.Analyze(ts)
	if err != nil {
		return results.Section{}, fmt.Errorf("%s: analyse: %w", e.Name, err)
	}
	sec := results.Section{Name: e.Name, Title: e.Title, About: e.About, Meta: meta, Summary: a.Summary, Notes: a.Notes}
	for _, f := range a.Figures {
		if err := results.SaveFigure(dir, f.Name, f.Figure); err != nil {
			return results.Section{}, err
		}
		sec.Figures = append(sec.Figures, results.FigureRef{File: f.Name, Caption: f.Caption, Text: f.Text})
	}
	return sec, nil
}

// Report rebuilds the report from every experiment whose outputs are in
// dir, writing mdPath and htmlPath ("" for none). It returns the names of
// the experiments it found.
func Report(dir, mdPath, htmlPath string) ([]string, error) {
	var secs []results.Section
	var names []string
	for _, e := range All() {
		if _, err := os.Stat(filepath.Join(dir, e.Name+".json")); err != nil {
			continue
		}
		sec, err := Render(e, dir)
		if err != nil {
			return nil, err
		}
		secs = append(secs, sec)
		names = append(names, e.Name)
	}
	if len(secs) == 0 {
		return nil, fmt.Errorf("no experiment outputs in %s", dir)
	}
	r := results.Report{
		Title: "vnsnap: the paper suite",
		Intro: "Experiments E1-E8 of the VNsnap paper (Kangarlou, Eugster and Xu, DSN 2009) and extensions, run on " +
			"vnsnap's discrete-event simulator. Every number below is computed from the rows in " + filepath.ToSlash(dir) +
			"; every sentence comparing with the paper is computed from the same rows, not written by hand. " +
			"Error bars are 95 % confidence intervals of the mean over seeds unless a caption says otherwise. " +
			"Pre-copy runs as on the real backends (Observed mode): the modelled hypervisor's own loop (Xen's libxc rule " +
			"unless an experiment says otherwise) reports its passes to the core. Every pause costs the calibration's fixed " +
			"steps (stop, the switch's colour flip, the disk freeze, a monitor round trip, resume; built-in placeholders until " +
			"`vnsnap calibrate` measures them) plus the last dirty pages and the device and vCPU state at the copy's bandwidth, " +
			"so downtimes are a few milliseconds longer than with the earlier constant 1 ms pause; copy-on-write stalls a VM " +
			"for each first write to a page not yet copied. " +
			"Which figures changed with this model, and why: every figure of E1-E8 was regenerated; E1's downtimes grew by " +
			"the fixed steps and the device state (a few ms); E2's rounds and durations follow the modelled hypervisor's own " +
			"loop instead of the core's stop policy; E5's copy-on-write slowdown is now the guest's fault stalls, not a given " +
			"factor; E3, E4, E6-E8 moved by the same pause costs and the Observed-mode snapshot points. None of E1-E8 uses the " +
			"calibration measured on this machine (experiments/calib/qemu-tcg.json, QEMU under TCG): they keep the " +
			"simulator's built-in costs (no switchover, every page populated), because TCG's costs (a switchover of " +
			"hundreds of milliseconds, copies near 100 MB/s) describe an emulator on two shared cores, not the hardware the " +
			"paper's figures are about; only E9, which compares with this machine's QEMU, runs with that calibration.",
		Sections: secs,
	}
	return names, results.WriteReport(r, mdPath, htmlPath, dir)
}
