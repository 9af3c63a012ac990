package main

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// slurmIdle is how long the Slurm test waits with no job changing state
// before it fails. A tiny shard runs for seconds even on a loaded machine;
// only a stuck scheduler or daemon keeps every job in one state this long.
const slurmIdle = 3 * time.Minute

// slurmCluster is a one-node Slurm (munged, slurmctld, slurmd) in a
// temporary directory, started by a test and stopped when it ends.
type slurmCluster struct {
	dir, conf string
	env       []string
	jobs      []string // every job the test submitted, cancelled at the end
}

// requireSlurm returns the paths of the Slurm programs, or skips the test
// outside CI when they are missing; in CI (CI set) it fails.
func requireSlurm(t *testing.T) {
	t.Helper()
	var missing []string
	for _, p := range []string{"munged", "slurmctld", "slurmd", "sbatch", "scontrol", "scancel", "squeue"} {
		if _, err := exec.LookPath(p); err != nil {
			missing = append(missing, p)
		}
	}
	if len(missing) == 0 && os.Getuid() == 0 {
		return
	}
	why := fmt.Sprintf("missing %v", missing)
	if os.Getuid() != 0 {
		why = "not root (the test's one-node Slurm runs as SlurmUser root)"
	}
	if os.Getenv("CI") == "" {
		t.Skipf("real Slurm test: %s; install with scripts/setup-slurm.sh (CI never skips it)", why)
	}
	t.Fatalf("real Slurm test cannot run: %s (run scripts/setup-slurm.sh as root)", why)
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startSlurm starts munged, slurmctld and slurmd with a one-node
// configuration in a temporary directory: no cgroups (proctrack/linuxproc,
// task/none), no accounting, SlurmUser root. The daemons run in the
// foreground as children of the test, die with it (Pdeathsig), and are
// stopped by t.Cleanup, after the test's jobs are cancelled, even when the
// test fails.
func startSlurm(t *testing.T) *slurmCluster {
	t.Helper()
	requireSlurm(t)
	t0 := time.Now()
	dir, err := os.MkdirTemp("", "vnsnap-slurm-")
	if err != nil {
		t.Fatal(err)
	}
	c := &slurmCluster{dir: dir, conf: filepath.Join(dir, "slurm.conf")}
	var procs []*exec.Cmd
	t.Cleanup(func() {
		c.stop(t, procs)
		if t.Failed() {
			for _, f := range []string{"slurmctld.log", "slurmd.log", "munged.log"} {
				b, _ := os.ReadFile(filepath.Join(dir, f))
				t.Logf("%s (last 3000 bytes):\n%s", f, tail(b, 3000))
			}
		}
		os.RemoveAll(dir)
	})
	for _, d := range []string{"munge", "state", "spool"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	key := make([]byte, 1024)
	rand.Read(key)
	keyFile := filepath.Join(dir, "munge", "munge.key")
	if err := os.WriteFile(keyFile, key, 0o400); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "munge", "munge.socket")
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	host, _, _ = strings.Cut(host, ".")
	conf := fmt.Sprintf(`# One-node Slurm for vnsnap's tests (cmd/vnsnap/slurm_test.go).
ClusterName=vnsnaptest
SlurmctldHost=%[1]s(127.0.0.1)
SlurmctldPort=%[2]d
SlurmdPort=%[3]d
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=%[4]s
StateSaveLocation=%[5]s/state
SlurmdSpoolDir=%[5]s/spool
SlurmctldPidFile=%[5]s/slurmctld.pid
SlurmdPidFile=%[5]s/slurmd.pid
SlurmctldLogFile=%[5]s/slurmctld.log
SlurmdLogFile=%[5]s/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
MinJobAge=3600
NodeName=%[1]s NodeAddr=127.0.0.1 CPUs=%[6]d State=UNKNOWN
PartitionName=test Nodes=%[1]s Default=YES MaxTime=INFINITE State=UP
`, host, freePort(t), freePort(t), sock, dir, runtime.NumCPU())
	if err := os.WriteFile(c.conf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	c.env = append(os.Environ(), "SLURM_CONF="+c.conf)
	start := func(name string, args ...string) {
		cmd := exec.Command(name, args...)
		cmd.Env = c.env
		out, err := os.Create(filepath.Join(dir, name+".out"))
		if err != nil {
			t.Fatal(err)
		}
		defer out.Close()
		cmd.Stdout, cmd.Stderr = out, out
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			t.Fatalf("start %s: %v", name, err)
		}
		procs = append(procs, cmd)
	}
	start("munged", "--foreground", "--force", "--socket="+sock, "--key-file="+keyFile,
		"--log-file="+filepath.Join(dir, "munged.log"), "--pid-file="+filepath.Join(dir, "munge", "munged.pid"),
		"--seed-file="+filepath.Join(dir, "munge", "munged.seed"))
	c.waitFor(t, "munged's socket", func() bool { _, err := os.Stat(sock); return err == nil }, procs)
	start("slurmctld", "-D", "-i", "-f", c.conf)
	start("slurmd", "-D", "-f", c.conf, "-N", host)
	c.waitFor(t, "the node to be idle", func() bool {
		out, err := c.cmd("sinfo", "-h", "-N", "-o", "%T")
		return err == nil && strings.TrimSpace(out) == "idle"
	}, procs)
	t.Logf("Slurm up in %.1f s (munged, slurmctld, slurmd; one node, %d CPUs)", time.Since(t0).Seconds(), runtime.NumCPU())
	return c
}

// waitFor polls ok until it holds; it fails the test when a daemon exits
// first, or after a minute (the daemons come up in about a second).
func (c *slurmCluster) waitFor(t *testing.T, what string, ok func() bool, procs []*exec.Cmd) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !ok() {
		for _, p := range procs {
			var ws syscall.WaitStatus
			if pid, _ := syscall.Wait4(p.Process.Pid, &ws, syscall.WNOHANG, nil); pid == p.Process.Pid {
				b, _ := os.ReadFile(filepath.Join(c.dir, filepath.Base(p.Path)+".out"))
				t.Fatalf("Slurm cannot start: %s exited (%v) while waiting for %s:\n%s", p.Path, ws, what, tail(b, 2000))
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("Slurm cannot start: no %s after a minute", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stop cancels the test's jobs, waits (briefly) for them to leave, and
// stops the daemons: SIGTERM, then SIGKILL to the process group.
func (c *slurmCluster) stop(t *testing.T, procs []*exec.Cmd) {
	if len(c.jobs) > 0 {
		c.cmd("scancel", c.jobs...)
		for end := time.Now().Add(30 * time.Second); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
			out, err := c.cmd("squeue", "-h", "-o", "%i %T")
			if err != nil || strings.TrimSpace(out) == "" {
				break
			}
		}
	}
	for _, p := range slices.Backward(procs) {
		if p.ProcessState != nil {
			continue
		}
		p.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { p.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			syscall.Kill(-p.Process.Pid, syscall.SIGKILL)
			<-done
		}
	}
}

// cmd runs a Slurm client against the cluster.
func (c *slurmCluster) cmd(name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	cmd.Env = c.env
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, errb.String())
	}
	return out.String(), nil
}

var (
	jobField = regexp.MustCompile(`\b(JobId|ArrayJobId|ArrayTaskId|JobState|ExitCode|Reason)=(\S*)`)
	final    = map[string]bool{"COMPLETED": true, "FAILED": true, "CANCELLED": true, "TIMEOUT": true, "NODE_FAIL": true,
		"OUT_OF_MEMORY": true, "PREEMPTED": true, "BOOT_FAIL": true, "DEADLINE": true}
)

// states returns the state of every task of the jobs: "ID" for a plain
// job, "ID_I" for array task I; an array's pending remainder shows as
// "ID_[...]" until it has started.
func (c *slurmCluster) states(t *testing.T, ids ...string) map[string]string {
	t.Helper()
	var lines []string
	for _, id := range ids {
		out, err := c.cmd("scontrol", "show", "job", "-o", id)
		if err != nil {
			t.Fatalf("job states: %v", err)
		}
		lines = append(lines, strings.Split(strings.TrimSpace(out), "\n")...)
	}
	st := map[string]string{}
	for _, line := range lines {
		f := map[string]string{}
		for _, m := range jobField.FindAllStringSubmatch(line, -1) {
			if _, dup := f[m[1]]; !dup {
				f[m[1]] = m[2]
			}
		}
		id := f["JobId"]
		if a, ok := f["ArrayJobId"]; ok {
			id = a + "_" + f["ArrayTaskId"]
		}
		st[id] = f["JobState"]
		if f["JobState"] == "PENDING" && f["Reason"] == "DependencyNeverSatisfied" {
			st[id] = "NEVER"
		}
	}
	return st
}

// wait returns the final states of the jobs' tasks once every one has
// ended. It fails if no task changes state for slurmIdle.
func (c *slurmCluster) wait(t *testing.T, ids ...string) map[string]string {
	t.Helper()
	var last string
	changed := time.Now()
	for {
		st := c.states(t, ids...)
		done := true
		for _, s := range st {
			done = done && (final[s] || s == "NEVER")
		}
		if done {
			return st
		}
		if now := fmt.Sprint(sortedStates(st)); now != last {
			last, changed = now, time.Now()
			t.Logf("jobs: %s", now)
		} else if time.Since(changed) > slurmIdle {
			t.Fatalf("no job changed state for %v: %s", slurmIdle, now)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func sortedStates(st map[string]string) []string {
	var out []string
	for id, s := range st {
		out = append(out, id+"="+s)
	}
	sort.Strings(out)
	return out
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// buildVnsnap builds this command into dir, as the jobs need a binary.
func buildVnsnap(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "vnsnap")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// runBin runs the built vnsnap and returns its stdout.
func runBin(t *testing.T, env []string, bin string, args ...string) string {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("vnsnap %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, out.String(), errb.String())
	}
	return out.String()
}

var (
	sweepJob = regexp.MustCompile(`(?m)^sweep job (\d+): shards ([\d,]+) of (\d+)$`)
	mergeJob = regexp.MustCompile(`(?m)^merge job (\d+):`)
)

// TestSlurmSweep runs `vnsnap experiment slurm e1 --shards 4 --submit` on
// a real one-node Slurm: the shards run as an array job, one task is
// cancelled and one fails, the merge job (afterany) runs after them and
// fails naming the missing shard; the same command again submits only the
// two failed indices and a new merge, whose output equals the local run's
// byte for byte.
func TestSlurmSweep(t *testing.T) {
	c := startSlurm(t)
	tmp := t.TempDir()
	bin := buildVnsnap(t, tmp)
	cfg, err := filepath.Abs(filepath.Join("..", "..", "experiments", "testdata", "e1-downtime.config.json"))
	if err != nil {
		t.Fatal(err)
	}
	local, merged, sweep := filepath.Join(tmp, "local"), filepath.Join(tmp, "merged"), filepath.Join(tmp, "sweep")
	t0 := time.Now()
	runBin(t, c.env, bin, "experiment", "e1", "--config", cfg, "--seeds", "2", "--out", local, "--quiet")
	t.Logf("local run: %.1f s", time.Since(t0).Seconds())

	// Shard 2 fails: its output directory cannot be made.
	block := filepath.Join(sweep, "shards", "2")
	if err := os.MkdirAll(filepath.Dir(block), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(block, []byte("a file where shard 2's directory goes\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A task takes every CPU of the node, so the tasks run one at a time.
	args := []string{"experiment", "slurm", "e1", "--shards", "4", "--cpus", strconv.Itoa(runtime.NumCPU()), "--partition", "test", "--time", "10:00",
		"--config", cfg, "--seeds", "2", "--dir", sweep, "--out", merged, "--submit"}
	t1 := time.Now()
	out := runBin(t, c.env, bin, args...)
	sj, mj := sweepJob.FindStringSubmatch(out), mergeJob.FindStringSubmatch(out)
	if sj == nil || mj == nil {
		t.Fatalf("submit printed no sweep and merge job:\n%s", out)
	}
	c.jobs = append(c.jobs, sj[1], mj[1])
	if sj[2] != "1,2,3,4" {
		t.Errorf("first submission: shards %s, want 1,2,3,4", sj[2])
	}
	// Kill task 4: the node runs one task at a time, so task 4 is still
	// waiting (or just started) now.
	if _, err := c.cmd("scancel", sj[1]+"_4"); err != nil {
		t.Fatal(err)
	}
	st := c.wait(t, sj[1], mj[1])
	// A task cancelled while pending leaves no job record; one cancelled
	// while running ends CANCELLED. Either way shard 4 never finished.
	if s, ok := st[sj[1]+"_4"]; ok && s != "CANCELLED" {
		t.Fatalf("task 4 was to be cancelled, but it ended %s", s)
	}
	delete(st, sj[1]+"_4")
	if _, err := os.Stat(filepath.Join(sweep, "shards", "4", "e1-downtime.shard.json")); err == nil {
		t.Fatal("the cancelled shard 4 wrote its manifest")
	}
	want := map[string]string{sj[1] + "_1": "COMPLETED", sj[1] + "_2": "FAILED", sj[1] + "_3": "COMPLETED", mj[1]: "FAILED"}
	if d := cmp.Diff(want, st); d != "" {
		t.Fatalf("first submission: job states (-want +got):\n%s", d)
	}
	logs, _ := filepath.Glob(filepath.Join(sweep, "logs", "merge."+mj[1]+".out"))
	if len(logs) != 1 {
		t.Fatalf("no merge log for job %s", mj[1])
	}
	ml, _ := os.ReadFile(logs[0])
	if !bytes.Contains(ml, []byte(block)) {
		t.Errorf("merge log does not name the failed shard %s:\n%s", block, ml)
	}
	if _, err := os.Stat(merged); err == nil {
		t.Errorf("the failed merge wrote %s", merged)
	}
	t.Logf("first submission: %.1f s", time.Since(t1).Seconds())

	// Fix shard 2 and submit again: only 2 and 4 run.
	if err := os.Remove(block); err != nil {
		t.Fatal(err)
	}
	t2 := time.Now()
	out = runBin(t, c.env, bin, args...)
	sj, mj = sweepJob.FindStringSubmatch(out), mergeJob.FindStringSubmatch(out)
	if sj == nil || mj == nil {
		t.Fatalf("resubmit printed no sweep and merge job:\n%s", out)
	}
	c.jobs = append(c.jobs, sj[1], mj[1])
	if sj[2] != "2,4" {
		t.Errorf("resubmission: shards %s, want 2,4 (the failed and the cancelled one)", sj[2])
	}
	st = c.wait(t, sj[1], mj[1])
	want = map[string]string{sj[1] + "_2": "COMPLETED", sj[1] + "_4": "COMPLETED", mj[1]: "COMPLETED"}
	if d := cmp.Diff(want, st); d != "" {
		ml, _ := os.ReadFile(filepath.Join(sweep, "logs", "merge."+mj[1]+".out"))
		t.Fatalf("resubmission: job states (-want +got):\n%s\nmerge log:\n%s", d, ml)
	}
	t.Logf("resubmission: %.1f s; whole test so far %.1f s", time.Since(t2).Seconds(), time.Since(t0).Seconds())
	sameDirs(t, local, merged)
}

// sameDirs checks that two output directories hold the same files with the
// same bytes.
func sameDirs(t *testing.T, want, got string) {
	t.Helper()
	names := func(d string) []string {
		ents, err := os.ReadDir(d)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, e := range ents {
			out = append(out, e.Name())
		}
		return out
	}
	wn, gn := names(want), names(got)
	if d := cmp.Diff(wn, gn); d != "" {
		t.Fatalf("files (-local +merged):\n%s", d)
	}
	for _, n := range wn {
		a, _ := os.ReadFile(filepath.Join(want, n))
		b, _ := os.ReadFile(filepath.Join(got, n))
		if !bytes.Equal(a, b) {
			t.Errorf("%s: merged differs from the local run (%d vs %d bytes)", n, len(b), len(a))
		}
	}
	if len(wn) < 3 {
		t.Errorf("local run wrote only %v", wn)
	}
}
