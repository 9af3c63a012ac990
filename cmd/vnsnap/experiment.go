package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/vnsnap/vnsnap/experiments"
)

const experimentUsage = `usage:
  vnsnap experiment list
  vnsnap experiment NAME [--config FILE] [--seeds N] [--out DIR] [--full] [--workers N] [--quiet]
  vnsnap experiment all  [same flags] [--report FILE]   every experiment, then the report
  vnsnap experiment report [--out DIR] [--report FILE]  rebuild figures and report from DIR
  vnsnap experiment NAME|all --shard I/N [same flags]  run the I-th of N slices of the jobs into
                                                       a shard directory (--out, default results/shards/...)
  vnsnap experiment merge [--out DIR] [--report FILE] SHARD_DIR...
                                                       check the shards and write the whole run's outputs
  vnsnap experiment slurm NAME|all [--shards N] [--partition P] [--time T] [--cpus N] [--dir DIR]
                                   [--out DIR] [--config FILE] [--seeds N] [--full] [--submit]
                                                       write (and submit) a Slurm array job of the shards
                                                       and a job that merges them

  vnsnap experiment e9 --real [--out DIR] [--full]   E9's real side on this machine's QEMU

NAME is an experiment's name (e1-downtime) or its short form (e1).
`

func runExperiment(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, experimentUsage)
		if len(args) == 0 {
			return errUsage
		}
		return flag.ErrHelp
	}
	name, rest := args[0], args[1:]
	switch name {
	case "list":
		return listExperiments(stdout)
	case "merge":
		return runMerge(rest, stdout, stderr)
	case "slurm":
		return runSlurm(rest, stdout, stderr)
	}
	if isE9(name) && hasRealFlag(rest) {
		return runE9(rest, stdout, stderr)
	}
	fs := flag.NewFlagSet("vnsnap experiment "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, experimentUsage, "\nflags:\n"); fs.PrintDefaults() }
	var opt experiments.Options
	fs.StringVar(&opt.ConfigFile, "config", "", "JSON or YAML `file` overriding the experiment's config")
	fs.IntVar(&opt.Seeds, "seeds", 0, "number of seeds, 1..`N` (default: the config's)")
	fs.StringVar(&opt.Out, "out", experiments.DefaultOut, "output `dir`ectory (with --shard: results/shards/NAME/I)")
	shardSpec := fs.String("shard", "", "run only shard `I/N` of the jobs, into a shard directory for `vnsnap experiment merge`")
	fs.BoolVar(&opt.Full, "full", false, "run the large config")
	fs.IntVar(&opt.Workers, "workers", 0, "parallel simulator runs (default GOMAXPROCS)")
	quiet := fs.Bool("quiet", false, "no progress on stderr")
	report := fs.String("report", defaultReport, "report `file` (Markdown; an HTML page is written beside it)")
	if err := fs.Parse(rest); err != nil {
		if err == flag.ErrHelp {
			return err
		}
		return errUsage
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if opt.Seeds < 0 {
		return fmt.Errorf("--seeds: %d is negative", opt.Seeds)
	}
	if !*quiet {
		opt.Log = stderr
		opt.Bar = isTerminal(stderr)
	}
	if *shardSpec != "" {
		outSet := false
		fs.Visit(func(f *flag.Flag) { outSet = outSet || f.Name == "out" })
		return runShard(name, *shardSpec, outSet, opt, stdout)
	}
	htmlPath := reportHTML(*report)
	switch name {
	case "report":
		names, err := experiments.Report(opt.Out, *report, htmlPath)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "wrote %s and %s (%s)\n", *report, htmlPath, strings.Join(names, ", "))
		return nil
	case "all":
		if opt.ConfigFile != "" {
			return fmt.Errorf("--config: give it to one experiment, not to all")
		}
		t0 := time.Now()
		for _, e := range experiments.All() {
			if _, err := experiments.Run(e, opt); err != nil {
				return err
			}
		}
		if _, err := experiments.Report(opt.Out, *report, htmlPath); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "paper suite done in %s: outputs in %s, report %s and %s\n",
			time.Since(t0).Round(time.Second), opt.Out, *report, htmlPath)
		return nil
	}
	e, err := experiments.Lookup(name)
	if err != nil {
		return err
	}
	sec, err := experiments.Run(e, opt)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: wrote %s/%s.csv, %s/%s.json and %d figures\n", e.Name, opt.Out, e.Name, opt.Out, e.Name, len(sec.Figures))
	for _, f := range sec.Figures {
		fmt.Fprintf(stdout, "  %s.png: %s\n", f.File, f.Text)
	}
	return nil
}

// defaultReport is the report of the paper suite (every experiment).
const defaultReport = "results/REPORT.md"

// reportHTML is the HTML page written beside the Markdown report md.
func reportHTML(md string) string { return strings.TrimSuffix(md, filepath.Ext(md)) + ".html" }

func listExperiments(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, e := range experiments.All() {
		d, f := e.New(false), e.New(true)
		jd, _ := d.Plan(experiments.Seeds(d.SeedCount()))
		jf, _ := f.Plan(experiments.Seeds(f.SeedCount()))
		fmt.Fprintf(tw, "%s\t%s\t%d runs (--full: %d)\n", e.Name, e.Title, len(jd), len(jf))
	}
	return tw.Flush()
}

// isTerminal reports whether w is a terminal (for the progress bar).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
