package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return code, out.String(), errb.String()
}

// TestShardMergeCLI runs e1's tiny config whole and in two shards through
// the command line and checks the merge writes the same files.
func TestShardMergeCLI(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join("..", "..", "experiments", "testdata", "e1-downtime.config.json")
	whole, merged := filepath.Join(dir, "whole"), filepath.Join(dir, "merged")
	if code, _, e := runCLI(t, "experiment", "e1", "--config", cfg, "--seeds", "2", "--out", whole, "--quiet"); code != 0 {
		t.Fatalf("whole run: exit %d: %s", code, e)
	}
	var shards []string
	for _, s := range []string{"1/2", "2/2"} {
		d := filepath.Join(dir, "shard"+s[:1])
		code, out, e := runCLI(t, "experiment", "e1", "--shard", s, "--config", cfg, "--seeds", "2", "--out", d, "--quiet")
		if code != 0 {
			t.Fatalf("shard %s: exit %d: %s", s, code, e)
		}
		if !strings.Contains(out, "shard "+s) {
			t.Errorf("shard %s printed %q", s, out)
		}
		shards = append(shards, d)
	}
	if code, _, e := runCLI(t, append([]string{"experiment", "merge", "--out", merged}, shards...)...); code != 0 {
		t.Fatalf("merge: exit %d: %s", code, e)
	}
	sameDirs(t, whole, merged)

	// A missing shard is a run-time failure (exit 1) naming it.
	code, _, e := runCLI(t, "experiment", "merge", "--out", filepath.Join(dir, "m2"), shards[0])
	if code != 1 || !strings.Contains(e, "shard 2/2") || !strings.Contains(e, "missing") {
		t.Errorf("merge of one of two shards: exit %d, stderr %q; want 1 naming shard 2/2 missing", code, e)
	}
}

func TestShardCLIErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"experiment", "e1", "--shard", "0/3"}, "--shard"},
		{[]string{"experiment", "e1", "--shard", "3"}, "--shard"},
		{[]string{"experiment", "slurm", "e1", "--shards", "0"}, "--shards"},
		{[]string{"experiment", "slurm", "e1", "--partition", "a b"}, "--partition"},
		{[]string{"experiment", "slurm", "e10"}, "unknown experiment"},
		{[]string{"experiment", "merge"}, "usage"},
	} {
		code, _, e := runCLI(t, tc.args...)
		if code != 2 || !strings.Contains(e, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want 2 naming %q", tc.args, code, e, tc.want)
		}
	}
}

// TestSlurmScripts checks the sbatch files without a cluster: they are
// valid bash, run the shards as an array and merge them all, do not change
// with the order of the flags, and a submission never overwrites a file
// the user edited.
func TestSlurmScripts(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "sweep")
	cfg := filepath.Join("..", "..", "experiments", "testdata", "e2-convergence.config.json")
	args := []string{"experiment", "slurm", "e2", "--shards", "5", "--partition", "batch", "--time", "1:00:00",
		"--config", cfg, "--seeds", "3", "--dir", dir, "--out", filepath.Join(dir, "out"), "--vnsnap", "/opt/vnsnap/bin/vnsnap"}
	if code, _, e := runCLI(t, args...); code != 0 {
		t.Fatalf("exit %d: %s", code, e)
	}
	sweep, _ := os.ReadFile(filepath.Join(dir, "sweep.sbatch"))
	merge, _ := os.ReadFile(filepath.Join(dir, "merge.sbatch"))
	for _, w := range []string{"#SBATCH --array=1-5\n", "#SBATCH --partition=batch\n", "#SBATCH --time=1:00:00\n",
		"#SBATCH --cpus-per-task=1\n", `/opt/vnsnap/bin/vnsnap experiment e2-convergence --shard "$i/5"`,
		"--seeds 3 --config " + filepath.Join(dir, "e2-convergence.config.json")} {
		if !bytes.Contains(sweep, []byte(w)) {
			t.Errorf("sweep.sbatch lacks %q:\n%s", w, sweep)
		}
	}
	for _, w := range []string{"experiment merge --out " + filepath.Join(dir, "out"), `"$d"/shards/{1..5}`, "#SBATCH --partition=batch\n"} {
		if !bytes.Contains(merge, []byte(w)) {
			t.Errorf("merge.sbatch lacks %q:\n%s", w, merge)
		}
	}
	for _, f := range []string{"sweep.sbatch", "merge.sbatch"} {
		if out, err := exec.Command("bash", "-n", filepath.Join(dir, f)).CombinedOutput(); err != nil {
			t.Errorf("bash -n %s: %v\n%s", f, err, out)
		}
	}
	// The same flags in another order write the same files, so a
	// resubmission accepts them.
	re := append([]string{"experiment", "slurm", "--seeds", "3", "e2"}, args[3:]...)
	if code, _, e := runCLI(t, re...); code != 0 {
		t.Fatalf("reordered flags: exit %d: %s", code, e)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "sweep.sbatch")); !bytes.Equal(b, sweep) {
		t.Errorf("reordered flags changed sweep.sbatch:\n%s", b)
	}
	// An edited script is kept: --submit refuses to overwrite it.
	edited := append(sweep, "# my edit\n"...)
	os.WriteFile(filepath.Join(dir, "sweep.sbatch"), edited, 0o644)
	code, _, e := runCLI(t, append(args, "--submit")...)
	if code != 2 || !strings.Contains(e, "sweep.sbatch differs") {
		t.Errorf("submit over an edited script: exit %d, stderr %q; want 2 naming sweep.sbatch", code, e)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "sweep.sbatch")); !bytes.Equal(b, edited) {
		t.Error("the edited sweep.sbatch was overwritten")
	}
}
