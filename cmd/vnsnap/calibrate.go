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
	"strings"
	"syscall"
	"time"

	"github.com/vnsnap/vnsnap/experiments/calib"
	"github.com/vnsnap/vnsnap/experiments/realrun"
	"github.com/vnsnap/vnsnap/qemubackend"
	"github.com/vnsnap/vnsnap/results"
)

// realFlags are the flags shared by calibrate and experiment e9 --real.
type realFlags struct {
	qemu, moduleRoot, scratch string
	quiet                     bool
}

func (f *realFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.qemu, "qemu", "", "qemu-system-x86_64 binary (default: on PATH)")
	fs.StringVar(&f.moduleRoot, "module-root", "", "vnsnap source tree, to build the built-in guest image (default: found from the working directory)")
	fs.StringVar(&f.scratch, "scratch", "", "short scratch `dir`ectory for the VMs' runtime files (default: a new one in $TMPDIR)")
	fs.BoolVar(&f.quiet, "quiet", false, "no progress on stderr")
}

// options probes QEMU, builds the guest image and makes the scratch
// directory; cleanup removes what it made.
func (f *realFlags) options(ctx context.Context, stderr io.Writer) (o realrun.Options, cleanup func(), err error) {
	host, err := qemubackend.Probe(ctx, f.qemu)
	if err != nil {
		return o, nil, err
	}
	img, err := buildImage(ctx, f.moduleRoot, "qemu")
	if err != nil {
		return o, nil, err
	}
	dir := f.scratch
	cleanup = func() {}
	if dir == "" {
		if dir, err = os.MkdirTemp("", "vnsnap-e9-"); err != nil {
			return o, nil, err
		}
		cleanup = func() { os.RemoveAll(dir) }
	} else if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return o, nil, fmt.Errorf("--scratch: %s is not a directory", dir)
	}
	o = realrun.Options{Host: host, Image: img, Dir: dir}
	if !f.quiet {
		start := time.Now()
		o.Log = func(format string, args ...any) {
			fmt.Fprintf(stderr, "[%6.1fs] %s\n", time.Since(start).Seconds(), fmt.Sprintf(format, args...))
		}
	}
	return o, cleanup, nil
}

// runCalibrate measures the simulator's calibration on this machine's QEMU.
func runCalibrate(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("calibrate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("out", "", "calibration `file` to write (JSON; see experiments/calib)")
	simOut := fs.String("sim-out", "", "also write the simulator's part alone to this `file` (for vnsnap sim --calibration)")
	rows := fs.String("rows", "", "also write every measured snapshot to this `dir`ectory (calibrate.csv, .json)")
	full := fs.Bool("full", false, "the long run: more dirty rates, every algorithm and sink, three repeats")
	var rf realFlags
	rf.register(fs)
	fs.Usage = func() { fmt.Fprintln(stderr, "usage: vnsnap calibrate --out FILE [flags]"); fs.PrintDefaults() }
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return err
		}
		return errUsage
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if *out == "" {
		return errors.New("--out: a calibration file is required")
	}
	for _, p := range []struct{ flag, path string }{{"--out", *out}, {"--sim-out", *simOut}} {
		if p.path == "" {
			continue
		}
		if st, err := os.Stat(filepath.Dir(p.path)); err != nil || !st.IsDir() {
			return fmt.Errorf("%s: directory of %s does not exist", p.flag, p.path)
		}
	}
	plan := realrun.DefaultCalibration()
	if *full {
		plan = realrun.FullCalibration()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	o, cleanup, err := rf.options(ctx, stderr)
	if err != nil {
		return err
	}
	defer cleanup()
	t0 := time.Now()
	f, measured, err := realrun.Calibrate(ctx, plan, o)
	if err != nil {
		return fmt.Errorf("calibrate: %w", err)
	}
	if err := f.Write(*out); err != nil {
		return err
	}
	if *simOut != "" {
		b, err := f.SimJSON()
		if err != nil {
			return err
		}
		if err := results.WriteFileAtomic(*simOut, b); err != nil {
			return err
		}
	}
	if *rows != "" {
		cfg := realrun.RunConfig{QEMU: f.QEMU, Machine: o.Host.Machine, CPU: f.Machine.CPU, Cores: f.Machine.Cores, Date: f.Date}
		if err := realrun.WriteNamed(*rows, "calibrate", cfg, measured); err != nil {
			return err
		}
	}
	printCalibration(stdout, f)
	fmt.Fprintf(stdout, "wrote %s in %s (%d snapshots)\n", *out, time.Since(t0).Round(time.Second), len(f.Runs))
	return nil
}

func printCalibration(w io.Writer, f *calib.File) {
	var dirty []string
	for _, d := range f.Dirty {
		dirty = append(dirty, fmt.Sprintf("%g->%.1f", d.SetMiBps, d.MeasuredMiBps))
	}
	fmt.Fprintf(w, "machine: %s, %d cores; QEMU %s\n", f.Machine.CPU, f.Machine.Cores, f.QEMU)
	fmt.Fprintf(w, "monitor round trip %v, stop %v, cont %v; device state %d bytes\n",
		time.Duration(f.Sim.QMPRoundTrip), time.Duration(f.Sim.Stop), time.Duration(f.Sim.Cont), f.Sim.DeviceState)
	fmt.Fprintf(w, "copy bandwidth: memory %.1f MB/s, disk %.1f MB/s; pre-copy's live passes %.1f MB/s\n", f.BW.Memory/1e6, f.BW.Disk/1e6, f.Sim.LiveBandwidth/1e6)
	fmt.Fprintf(w, "dirty rates (MiB/s set->measured): %s\n", strings.Join(dirty, " "))
}
