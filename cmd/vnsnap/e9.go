package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vnsnap/vnsnap/experiments/realrun"
)

const e9Usage = `usage:
  vnsnap experiment e9 --real [--out DIR] [--full] [--repeats N] [--points I,J] [flags]
      run E9's real side (sim-vs-real) on this machine's QEMU and write
      DIR/e9-real.csv and DIR/e9-real.json; then
  vnsnap experiment e9 --config FILE   with {"measured": "DIR/e9-real.json"}
      compares the simulator with them (without --config: the committed
      measurements, experiments/testdata/e9-real.json)
`

// isE9 reports whether an experiment name is E9 (sim-vs-real).
func isE9(name string) bool { return name == "e9" || name == "e9-sim-vs-real" }

// hasRealFlag reports whether args ask for E9's real side.
func hasRealFlag(args []string) bool {
	for _, a := range args {
		if a == "--real" || a == "-real" || a == "--real=true" || a == "-real=true" {
			return true
		}
	}
	return false
}

// runE9 is `vnsnap experiment e9 --real`: E9's real side. Its simulated
// side and the comparison are an experiment of the suite
// (experiments/e9.go), which reads the committed measurements or a file
// this writes.
func runE9(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("vnsnap experiment e9", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, e9Usage, "\nflags:\n"); fs.PrintDefaults() }
	real := fs.Bool("real", false, "measure on real QEMU")
	out := fs.String("out", "results/out", "output `dir`ectory")
	full := fs.Bool("full", false, "the full grid (2 and 4 VMs, dirty rates 0-128 MiB/s, every algorithm and sink, five repeats)")
	repeats := fs.Int("repeats", 0, "repeats per grid point and case (default: the grid's)")
	points := fs.String("points", "", "comma-separated 1-based `indices` of the grid's points to run (default: all), to split a long grid into runs")
	var rf realFlags
	rf.register(fs)
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return err
		}
		return errUsage
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if !*real {
		return errors.New("experiment e9: --real=false: run `vnsnap experiment e9` without it for the simulated side")
	}
	if *repeats < 0 || *repeats > 100 {
		return fmt.Errorf("--repeats: %d, want 1..100 (0: the grid's)", *repeats)
	}
	g := realrun.DefaultGrid()
	if *full {
		g = realrun.FullGrid()
	}
	if *repeats > 0 {
		g.Repeats = *repeats
	}
	if *points != "" {
		var sel []realrun.Point
		var picked []int
		for _, s := range strings.Split(*points, ",") {
			i, err := strconv.Atoi(strings.TrimSpace(s))
			if err != nil || i < 1 || i > len(g.Points) {
				return fmt.Errorf("--points: %q, want indices 1..%d", s, len(g.Points))
			}
			if slices.Contains(picked, i) {
				return fmt.Errorf("--points: %d given twice", i)
			}
			picked = append(picked, i)
			sel = append(sel, g.Points[i-1])
		}
		g.Points = sel
	}
	// The output directory is made only once every flag has been checked,
	// so that a bad flag leaves nothing behind.
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return fmt.Errorf("--out: %w", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	o, cleanup, err := rf.options(ctx, stderr)
	if err != nil {
		return err
	}
	defer cleanup()
	t0 := time.Now()
	rows, err := g.Run(ctx, o)
	if err != nil {
		return fmt.Errorf("experiment e9 --real: %w", err)
	}
	cfg := realrun.RunConfig{
		Grid: g, QEMU: o.Host.Version.String(), Machine: o.Host.Machine, CPU: realrun.CPUModel(), Cores: runtime.NumCPU(),
		Date: time.Now().UTC().Format(time.RFC3339),
	}
	if err := realrun.Write(*out, cfg, rows); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "e9 (real): %d rows from %d points in %s: wrote %s and %s\n", len(rows), len(g.Points),
		time.Since(t0).Round(time.Second), filepath.Join(*out, realrun.Name+".csv"), filepath.Join(*out, realrun.Name+".json"))
	return nil
}
