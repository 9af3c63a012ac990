package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/vnsnap/vnsnap/experiments"
)

// sweepExperiments returns the experiments NAME or "all" stands for.
func sweepExperiments(name string) ([]*experiments.Experiment, error) {
	if name == "all" {
		return experiments.All(), nil
	}
	e, err := experiments.Lookup(name)
	if err != nil {
		return nil, err
	}
	return []*experiments.Experiment{e}, nil
}

// sweepLabel is the name a sweep goes by in paths and job names.
func sweepLabel(es []*experiments.Experiment) string {
	if len(es) == 1 {
		return es[0].Name
	}
	return "all"
}

// runShard runs `vnsnap experiment NAME|all --shard I/N`.
func runShard(name, spec string, outSet bool, opt experiments.Options, stdout io.Writer) error {
	s, err := experiments.ParseShard(spec)
	if err != nil {
		return fmt.Errorf("--shard: %w", err)
	}
	es, err := sweepExperiments(name)
	if err != nil {
		return err
	}
	sw, err := experiments.NewSweep(es, opt)
	if err != nil {
		return err
	}
	if !outSet {
		opt.Out = filepath.Join("results", "shards", sweepLabel(es), strconv.Itoa(s.Index))
	}
	if err := experiments.RunShard(sw, s, opt); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "shard %s of %s: wrote %s\n", s, strings.Join(sw.Names(), ", "), opt.Out)
	return nil
}

// parseInterleaved parses flags that may come before, between or after
// the positional arguments, and returns the positional ones.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

const mergeUsage = `usage: vnsnap experiment merge [--out DIR] [--report FILE] SHARD_DIR...

Checks that the shard directories are the shards of one sweep (same
experiments, configs, seeds and vnsnap version), each given once, together
holding every job exactly once; then writes the same tables, figures (and,
for a sweep of all experiments, the report) as a whole run.
`

func runMerge(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("vnsnap experiment merge", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, mergeUsage, "\nflags:\n"); fs.PrintDefaults() }
	out := fs.String("out", experiments.DefaultOut, "output `dir`ectory")
	report := fs.String("report", "", "report `file` (default results/REPORT.md for a sweep of all experiments, none otherwise)")
	dirs, err := parseInterleaved(fs, args)
	if err != nil {
		if err == flag.ErrHelp {
			return err
		}
		return errUsage
	}
	if len(dirs) == 0 {
		fs.Usage()
		return errUsage
	}
	secs, err := experiments.Merge(dirs, *out)
	if err != nil {
		return exitError{1, err}
	}
	var names []string
	for _, s := range secs {
		names = append(names, s.Name)
	}
	fmt.Fprintf(stdout, "merged %d shards of %s into %s\n", len(dirs), strings.Join(names, ", "), *out)
	rep := *report
	if rep == "" && len(secs) == len(experiments.All()) {
		rep = defaultReport
	}
	if rep != "" {
		html := reportHTML(rep)
		if _, err := experiments.Report(*out, rep, html); err != nil {
			return exitError{1, err}
		}
		fmt.Fprintf(stdout, "wrote %s and %s\n", rep, html)
	}
	return nil
}

const slurmUsage = `usage: vnsnap experiment slurm NAME|all [flags]

Writes DIR/sweep.sbatch, an array job whose task I runs shard I/N of the
sweep into DIR/shards/I, and DIR/merge.sbatch, which merges the shards into
--out. With --submit it submits both through sbatch, the merge after the
array (afterany: it checks that every shard is there). Run the same command
again after a failure: it submits only the shards that are not complete,
and a new merge.
`

// slurmPlan is what the sbatch files are written from.
type slurmPlan struct {
	label, exp    string // sweep label (job names), experiment argument
	shards        int
	dir, out, rep string // absolute
	vnsnap        string
	partition     string
	time          string
	cpus          int
	flags         []string // passed to every shard: --seeds, --full, --config
	cmdline       string   // the vnsnap command that wrote the files
}

func runSlurm(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("vnsnap experiment slurm", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, slurmUsage, "\nflags:\n"); fs.PrintDefaults() }
	shards := fs.Int("shards", 4, "number of shards (array tasks)")
	partition := fs.String("partition", "", "Slurm `partition` (default: the cluster's)")
	tlimit := fs.String("time", "", "time limit per task, in sbatch's `format` (e.g. 2:00:00; default: the partition's)")
	cpus := fs.Int("cpus", 1, "CPUs per task; the shard runs that many simulations at once")
	dir := fs.String("dir", "", "`dir`ectory for the sbatch files, shards and logs (default results/slurm/NAME)")
	out := fs.String("out", experiments.DefaultOut, "where the merge writes the outputs")
	report := fs.String("report", "", "report `file` the merge writes (default results/REPORT.md for all, none otherwise)")
	cfgFile := fs.String("config", "", "JSON or YAML `file` overriding the experiment's config (copied into DIR)")
	seeds := fs.Int("seeds", 0, "number of seeds, 1..`N` (default: the config's)")
	full := fs.Bool("full", false, "run the large config")
	bin := fs.String("vnsnap", "", "the vnsnap `binary` the jobs run, on a file system the nodes share (default: this one)")
	submit := fs.Bool("submit", false, "submit through sbatch (only the shards not yet complete)")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		if err == flag.ErrHelp {
			return err
		}
		return errUsage
	}
	if len(pos) != 1 {
		fs.Usage()
		return errUsage
	}
	switch {
	case *shards < 1:
		return fmt.Errorf("--shards: %d, want at least 1", *shards)
	case *cpus < 1:
		return fmt.Errorf("--cpus: %d, want at least 1", *cpus)
	case *seeds < 0:
		return fmt.Errorf("--seeds: %d is negative", *seeds)
	}
	for _, v := range []struct{ flag, val string }{{"--partition", *partition}, {"--time", *tlimit}} {
		if strings.ContainsAny(v.val, " \t\n'\"\\$`") {
			return fmt.Errorf("%s: %q: no spaces or quotes", v.flag, v.val)
		}
	}
	es, err := sweepExperiments(pos[0])
	if err != nil {
		return err
	}
	opt := experiments.Options{ConfigFile: *cfgFile, Seeds: *seeds, Full: *full}
	sw, err := experiments.NewSweep(es, opt) // checks the config before anything is written
	if err != nil {
		return err
	}
	p := slurmPlan{label: sweepLabel(es), exp: sweepLabel(es), shards: *shards, partition: *partition, time: *tlimit, cpus: *cpus}
	if *dir == "" {
		*dir = filepath.Join("results", "slurm", p.label)
	}
	if p.dir, err = filepath.Abs(*dir); err != nil {
		return err
	}
	if p.out, err = filepath.Abs(*out); err != nil {
		return err
	}
	if rep := *report; rep != "" || len(es) == len(experiments.All()) {
		if rep == "" {
			rep = defaultReport
		}
		if p.rep, err = filepath.Abs(rep); err != nil {
			return err
		}
	}
	p.vnsnap = *bin
	if p.vnsnap == "" {
		if p.vnsnap, err = os.Executable(); err != nil {
			return fmt.Errorf("--vnsnap: %w", err)
		}
	}
	if p.vnsnap, err = filepath.Abs(p.vnsnap); err != nil {
		return err
	}
	if *seeds > 0 {
		p.flags = append(p.flags, "--seeds", strconv.Itoa(*seeds))
	}
	if *full {
		p.flags = append(p.flags, "--full")
	}
	for _, sub := range []string{"shards", "logs"} {
		if err := os.MkdirAll(filepath.Join(p.dir, sub), 0o755); err != nil {
			return err
		}
	}
	if *cfgFile != "" {
		// The sweep reads its own copy, so the shards cannot see two
		// versions of the file.
		b, err := os.ReadFile(*cfgFile)
		if err != nil {
			return err
		}
		c := filepath.Join(p.dir, es[0].Name+".config"+filepath.Ext(*cfgFile))
		if err := writeIfSame(c, b, *submit); err != nil {
			return err
		}
		p.flags = append(p.flags, "--config", c)
	}
	p.cmdline = p.command()
	sweepFile, mergeFile := filepath.Join(p.dir, "sweep.sbatch"), filepath.Join(p.dir, "merge.sbatch")
	if err := writeIfSame(sweepFile, []byte(p.sweepScript()), *submit); err != nil {
		return err
	}
	if err := writeIfSame(mergeFile, []byte(p.mergeScript()), *submit); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s and %s\n", sweepFile, mergeFile)
	if !*submit {
		fmt.Fprintf(stdout, "submit: j=$(sbatch --parsable %s) && sbatch --dependency=afterany:${j%%%%;*} %s\n", sweepFile, mergeFile)
		return nil
	}
	var todo []string
	for i := 1; i <= p.shards; i++ {
		if err := sw.ShardComplete(p.shardDir(i), experiments.Shard{Index: i, Count: p.shards}); err != nil {
			todo = append(todo, strconv.Itoa(i))
		}
	}
	mergeArgs := []string{"--parsable"}
	if len(todo) > 0 {
		id, err := sbatch("--parsable", "--array="+strings.Join(todo, ","), sweepFile)
		if err != nil {
			return exitError{1, err}
		}
		fmt.Fprintf(stdout, "sweep job %s: shards %s of %d\n", id, strings.Join(todo, ","), p.shards)
		mergeArgs = append(mergeArgs, "--dependency=afterany:"+id)
	} else {
		fmt.Fprintf(stdout, "all %d shards are complete in %s\n", p.shards, filepath.Join(p.dir, "shards"))
	}
	id, err := sbatch(append(mergeArgs, mergeFile)...)
	if err != nil {
		return exitError{1, err}
	}
	fmt.Fprintf(stdout, "merge job %s: writes %s\n", id, p.out)
	return nil
}

// sbatch runs sbatch with args and returns the job id it prints
// (--parsable prints "id" or "id;cluster").
func sbatch(args ...string) (string, error) {
	cmd := exec.Command("sbatch", args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("sbatch %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	id, _, _ := strings.Cut(strings.TrimSpace(out.String()), ";")
	if _, err := strconv.Atoi(id); err != nil {
		return "", fmt.Errorf("sbatch %s: printed %q, want a job id", strings.Join(args, " "), out.String())
	}
	return id, nil
}

// writeIfSame writes path, unless it exists with other contents and keep
// is set: a user's edits are never overwritten by a submission.
func writeIfSame(path string, data []byte, keep bool) error {
	old, err := os.ReadFile(path)
	switch {
	case err == nil && bytes.Equal(old, data):
		return nil
	case err == nil && keep:
		return fmt.Errorf("%s differs from what these flags write (edited?): submit it with sbatch yourself, or remove it", path)
	case err != nil && !errors.Is(err, os.ErrNotExist):
		return err
	}
	return os.WriteFile(path, data, 0o644)
}

// command is the canonical vnsnap command that writes p's files, so the
// same flags in any order write the same scripts.
func (p slurmPlan) command() string {
	args := []string{"vnsnap", "experiment", "slurm", p.exp, "--shards", strconv.Itoa(p.shards), "--cpus", strconv.Itoa(p.cpus)}
	if p.partition != "" {
		args = append(args, "--partition", p.partition)
	}
	if p.time != "" {
		args = append(args, "--time", p.time)
	}
	args = append(args, "--dir", p.dir, "--out", p.out)
	if p.rep != "" {
		args = append(args, "--report", p.rep)
	}
	args = append(args, p.flags...)
	return strings.ReplaceAll(quoteAll(args), "\n", " ")
}

func (p slurmPlan) shardDir(i int) string {
	return filepath.Join(p.dir, "shards", strconv.Itoa(i))
}

// quote quotes s for bash when it needs it.
func quote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:=+,%@") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func quoteAll(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = quote(a)
	}
	return strings.Join(q, " ")
}

// directives returns the #SBATCH lines both scripts share.
func (p slurmPlan) directives() string {
	var b strings.Builder
	if p.partition != "" {
		fmt.Fprintf(&b, "#SBATCH --partition=%s\n", p.partition)
	}
	if p.time != "" {
		fmt.Fprintf(&b, "#SBATCH --time=%s\n", p.time)
	}
	return b.String()
}

func (p slurmPlan) sweepScript() string {
	var b strings.Builder
	fmt.Fprintf(&b, `#!/bin/bash
# vnsnap sweep of %[1]s in %[2]d shards: array task I runs shard I/%[2]d of the
# jobs (grid points x seeds, balanced by expected cost) into shards/I.
# Written by: %[3]s
#
# Submit:    j=$(sbatch --parsable sweep.sbatch) && sbatch --dependency=afterany:$j merge.sbatch
# Resubmit only failed tasks, e.g. 2 and 4, then the merge:
#            j=$(sbatch --parsable --array=2,4 sweep.sbatch) && sbatch --dependency=afterany:$j merge.sbatch
# (or run the vnsnap command above again with --submit: it submits the shards not complete).
#SBATCH --job-name=vnsnap-%[4]s
#SBATCH --array=1-%[2]d
#SBATCH --cpus-per-task=%[5]d
#SBATCH --output=%[6]s/logs/shard-%%a.%%A.out
`, p.exp, p.shards, p.cmdline, p.label, p.cpus, p.dir)
	b.WriteString(p.directives())
	fmt.Fprintf(&b, `set -euo pipefail
i=$SLURM_ARRAY_TASK_ID
exec %s experiment %s --shard "$i/%d" --out %s/shards/"$i" \
	--workers "${SLURM_CPUS_PER_TASK:-1}" --quiet`, quote(p.vnsnap), p.exp, p.shards, quote(p.dir))
	if len(p.flags) > 0 {
		b.WriteString(" " + quoteAll(p.flags))
	}
	b.WriteString("\n")
	return b.String()
}

func (p slurmPlan) mergeScript() string {
	var b strings.Builder
	fmt.Fprintf(&b, `#!/bin/bash
# Merges the %[1]d shards of sweep.sbatch (%[2]s) into %[3]s.
# Submitted after the array with afterany, it runs however the tasks ended:
# the merge checks that every shard is complete and names the ones that
# are not; resubmit those (see sweep.sbatch), then this script.
# Written by: %[4]s
#SBATCH --job-name=vnsnap-%[5]s-merge
#SBATCH --output=%[6]s/logs/merge.%%j.out
`, p.shards, p.exp, p.out, p.cmdline, p.label, p.dir)
	b.WriteString(p.directives())
	args := []string{"--out", p.out}
	if p.rep != "" {
		args = append(args, "--report", p.rep)
	}
	fmt.Fprintf(&b, `set -euo pipefail
d=%[1]s
if ! %[2]s experiment merge %[3]s "$d"/shards/{1..%[4]d}; then
	echo "merge: some shards are missing or failed: resubmit them, e.g. j=\$(sbatch --parsable --array=2 $d/sweep.sbatch) && sbatch --dependency=afterany:\$j $d/merge.sbatch" >&2
	exit 1
fi
`, quote(p.dir), quote(p.vnsnap), quoteAll(args), p.shards)
	return b.String()
}
