package experiments

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/vnsnap/vnsnap/results"
)

// recorder keeps the outcome of every job it ran, by grid point and seed,
// so shard runs can replay them without simulating again.
type recorder struct {
	mu   sync.Mutex
	outs map[string]Outcome
}

func jobKey(j Job) string {
	b, err := json.Marshal(j.Labels)
	if err != nil {
		panic(err)
	}
	return fmt.Sprintf("%s seed %d", b, j.Seed)
}

func (r *recorder) record(jobs []Job, workers int, done func()) ([]Outcome, error) {
	outs, err := Execute(jobs, workers, done)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, j := range jobs {
		k := jobKey(j)
		if _, dup := r.outs[k]; dup {
			return nil, fmt.Errorf("two jobs %s: the recorder needs unique grid points", k)
		}
		r.outs[k] = outs[i]
	}
	return outs, nil
}

func (r *recorder) replay(jobs []Job, _ int, _ func()) ([]Outcome, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	outs := make([]Outcome, len(jobs))
	for i, j := range jobs {
		o, ok := r.outs[jobKey(j)]
		if !ok {
			return nil, fmt.Errorf("job %s was never recorded", jobKey(j))
		}
		outs[i] = o
	}
	return outs, nil
}

// tinyRun is a whole run of an experiment on its tiny config with two
// seeds, made once per test binary and shared by the tests that read it.
type tinyRun struct {
	once sync.Once
	dir  string
	sec  results.Section
	rec  *recorder
	err  error
}

var (
	tinyMu   sync.Mutex
	tinyRuns = map[string]*tinyRun{}
	tinyRoot string
)

func TestMain(m *testing.M) {
	var err error
	if tinyRoot, err = os.MkdirTemp("", "vnsnap-experiments-"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(tinyRoot)
	os.Exit(code)
}

func tinyOptions(e *Experiment) Options {
	return Options{ConfigFile: filepath.Join("testdata", e.Name+".config.json"), Seeds: 2}
}

// wholeTiny returns the directory and section of experiment e's tiny whole
// run, and the recorder of its outcomes. Callers must not write into dir.
func wholeTiny(t *testing.T, e *Experiment) (string, results.Section, *recorder) {
	t.Helper()
	tinyMu.Lock()
	r, ok := tinyRuns[e.Name]
	if !ok {
		r = &tinyRun{}
		tinyRuns[e.Name] = r
	}
	tinyMu.Unlock()
	r.once.Do(func() {
		r.dir = filepath.Join(tinyRoot, e.Name)
		r.rec = &recorder{outs: map[string]Outcome{}}
		opt := tinyOptions(e)
		opt.Out, opt.execute = r.dir, r.rec.record
		r.sec, r.err = Run(e, opt)
	})
	if r.err != nil {
		t.Fatalf("%s: %v", e.Name, r.err)
	}
	return r.dir, r.sec, r.rec
}

// tinySweep returns a sweep of es on their tiny configs.
func tinySweep(t *testing.T, es ...*Experiment) *Sweep {
	t.Helper()
	sw := &Sweep{}
	for _, e := range es {
		sw.Parts = append(sw.Parts, tinyPart(t, e, 2))
	}
	return sw
}

// tinyPart returns the part of e on its tiny config with the first n seeds.
func tinyPart(t *testing.T, e *Experiment, n int) Part {
	t.Helper()
	cfg, err := LoadConfig(e, false, tinyOptions(e).ConfigFile)
	if err != nil {
		t.Fatal(err)
	}
	p, err := NewPart(e, cfg, false, Seeds(n))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// runShards runs every shard of sw into dir/1 .. dir/n and returns them.
func runShards(t *testing.T, sw *Sweep, n int, dir string, execute func([]Job, int, func()) ([]Outcome, error)) []string {
	t.Helper()
	var dirs []string
	for i := 1; i <= n; i++ {
		d := filepath.Join(dir, fmt.Sprint(i))
		if err := RunShard(sw, Shard{i, n}, Options{Out: d, execute: execute}); err != nil {
			t.Fatalf("shard %d/%d: %v", i, n, err)
		}
		dirs = append(dirs, d)
	}
	return dirs
}

// sameFiles checks that every file of experiment e in want is in got with
// the same bytes, and got has no other file of e.
func sameFiles(t *testing.T, e *Experiment, want, got string) {
	t.Helper()
	list := func(dir string) []string {
		var out []string
		ents, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range ents {
			n := x.Name()
			if strings.HasPrefix(n, e.Name+".") || strings.HasPrefix(n, e.Name+"-") {
				out = append(out, n)
			}
		}
		return out
	}
	wl, gl := list(want), list(got)
	if d := cmp.Diff(wl, gl); d != "" {
		t.Fatalf("%s: files (-whole +merged):\n%s", e.Name, d)
	}
	for _, n := range wl {
		a, _ := os.ReadFile(filepath.Join(want, n))
		b, _ := os.ReadFile(filepath.Join(got, n))
		if !bytes.Equal(a, b) {
			if strings.HasSuffix(n, ".csv") {
				t.Errorf("%s differs (-whole +merged):\n%s", n, cmp.Diff(string(a), string(b)))
			} else {
				t.Errorf("%s differs (%d bytes whole, %d merged)", n, len(a), len(b))
			}
		}
	}
}

// TestShardMergeEqualsRun shards every experiment in 1, 3 and 7 shards,
// alone and all together (one sweep whose shards mix experiments), merges
// them and compares every file the merge writes (tables, figures) with the
// whole run's, byte for byte. The shards replay the whole run's outcomes,
// so volatile columns (E8's wall time) match too; what is tested is the
// split, the stored outcomes and the merge. TestShardRealRun and the Slurm
// test in cmd/vnsnap run the shards' simulations for real.
func TestShardMergeEqualsRun(t *testing.T) {
	all := All()
	for _, e := range all {
		t.Run(e.Name, func(t *testing.T) {
			t.Parallel()
			whole, _, rec := wholeTiny(t, e)
			for _, n := range []int{1, 3, 7} {
				dir := t.TempDir()
				shards := runShards(t, tinySweep(t, e), n, dir, rec.replay)
				out := filepath.Join(dir, "merged")
				secs, err := Merge(shards, out)
				if err != nil {
					t.Fatalf("N=%d: %v", n, err)
				}
				if len(secs) != 1 || secs[0].Name != e.Name {
					t.Fatalf("N=%d: merge sections %v, want [%s]", n, secs, e.Name)
				}
				sameFiles(t, e, whole, out)
			}
		})
	}
	t.Run("all", func(t *testing.T) {
		t.Parallel()
		wholes := map[string]string{}
		for _, e := range all {
			wholes[e.Name], _, _ = wholeTiny(t, e)
		}
		// RunShard executes one experiment's jobs at a time: replay them
		// from the recorder that has them all.
		byExp := func(jobs []Job, w int, done func()) ([]Outcome, error) {
			for _, e := range all {
				_, _, r := wholeTiny(t, e)
				if outs, err := r.replay(jobs, w, done); err == nil {
					return outs, nil
				}
			}
			return nil, fmt.Errorf("jobs of no recorded experiment")
		}
		for _, n := range []int{1, 3, 7} {
			dir := t.TempDir()
			sw := tinySweep(t, all...)
			shards := runShards(t, sw, n, dir, byExp)
			// Every shard holds some jobs, and the costs are balanced.
			loads := shardLoads(t, shards)
			if n > 1 {
				lo, hi := slices.Min(loads), slices.Max(loads)
				if lo <= 0 || hi > 2*lo {
					t.Errorf("N=%d: shard costs %v: want every shard within 2x of the lightest", n, loads)
				}
			}
			out := filepath.Join(dir, "merged")
			secs, err := Merge(shards, out)
			if err != nil {
				t.Fatalf("N=%d: %v", n, err)
			}
			if len(secs) != len(all) {
				t.Fatalf("N=%d: %d sections, want %d", n, len(secs), len(all))
			}
			for _, e := range all {
				sameFiles(t, e, wholes[e.Name], out)
			}
		}
	})
}

// shardLoads sums the expected cost of the jobs in each shard directory.
func shardLoads(t *testing.T, dirs []string) []float64 {
	t.Helper()
	var loads []float64
	for _, d := range dirs {
		sd, err := readShardDir(d)
		if err != nil {
			t.Fatal(err)
		}
		var sum float64
		for _, m := range sd.mans {
			for _, j := range m.Jobs {
				sum += j.Cost
			}
		}
		loads = append(loads, sum)
	}
	return loads
}

// TestShardRealRun runs the shards' simulations for real (no replay), for
// every experiment in three shards, and compares the merge's deterministic
// columns and metadata with the whole run's.
func TestShardRealRun(t *testing.T) {
	for _, e := range All() {
		t.Run(e.Name, func(t *testing.T) {
			t.Parallel()
			whole, _, _ := wholeTiny(t, e)
			dir := t.TempDir()
			shards := runShards(t, tinySweep(t, e), 3, dir, nil)
			out := filepath.Join(dir, "merged")
			if _, err := Merge(shards, out); err != nil {
				t.Fatal(err)
			}
			for _, tn := range e.tableNames() {
				f := e.tableFile(tn) + ".json"
				wm, wt, err := results.ReadJSON(filepath.Join(whole, f))
				if err != nil {
					t.Fatal(err)
				}
				gm, gt, err := results.ReadJSON(filepath.Join(out, f))
				if err != nil {
					t.Fatal(err)
				}
				if d := cmp.Diff(wm, gm); d != "" {
					t.Errorf("%s: meta (-whole +merged):\n%s", f, d)
				}
				var a, b bytes.Buffer
				if err := results.EncodeCSV(&a, wt, false); err != nil {
					t.Fatal(err)
				}
				if err := results.EncodeCSV(&b, gt, false); err != nil {
					t.Fatal(err)
				}
				if d := cmp.Diff(a.String(), b.String()); d != "" {
					t.Errorf("%s: deterministic columns (-whole +merged):\n%s", f, d)
				}
			}
		})
	}
}

// TestShardDirectory checks what a shard directory records: the shard in
// every table's metadata, and a manifest naming the jobs it holds.
func TestShardDirectory(t *testing.T) {
	e, _ := Lookup("e2")
	_, _, rec := wholeTiny(t, e)
	dir := t.TempDir()
	shards := runShards(t, tinySweep(t, e), 3, dir, rec.replay)
	total := 0
	for i, d := range shards {
		c, err := os.ReadFile(filepath.Join(d, e.Name+".csv"))
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"# experiment: e2-convergence\n", "# seeds: 1 2\n", "# version: ", "# config: {",
			fmt.Sprintf("# shard: %d/3\n", i+1)} {
			if !bytes.Contains(c, []byte(want)) {
				t.Errorf("%s/%s.csv lacks %q", d, e.Name, want)
			}
		}
		sd, err := readShardDir(d)
		if err != nil {
			t.Fatal(err)
		}
		m := sd.mans[e.Name]
		if m.Meta.Shard != fmt.Sprintf("%d/3", i+1) || m.TotalJobs == 0 || len(m.Jobs) == 0 {
			t.Errorf("%s: manifest shard %q, %d of %d jobs", d, m.Meta.Shard, len(m.Jobs), m.TotalJobs)
		}
		_, tab, err := results.ReadJSON(filepath.Join(d, e.Name+".json"))
		if err != nil {
			t.Fatal(err)
		}
		if len(tab.Rows) != len(m.Jobs) { // E2 has one row per run
			t.Errorf("%s: %d rows for %d jobs", d, len(tab.Rows), len(m.Jobs))
		}
		total += len(m.Jobs)
	}
	if sw := tinySweep(t, e); total != len(sw.Parts[0].Jobs) {
		t.Errorf("shards hold %d jobs, the plan has %d", total, len(sw.Parts[0].Jobs))
	}
}

// TestMergeErrors checks that a missing, duplicate, foreign, unfinished
// or damaged shard is an error naming it.
func TestMergeErrors(t *testing.T) {
	e2, _ := Lookup("e2")
	e6, _ := Lookup("e6")
	_, _, rec2 := wholeTiny(t, e2)
	_, _, rec6 := wholeTiny(t, e6)
	dir := t.TempDir()
	shards := runShards(t, tinySweep(t, e2), 3, filepath.Join(dir, "a"), rec2.replay)
	other := runShards(t, tinySweep(t, e6), 3, filepath.Join(dir, "b"), rec6.replay)

	// A shard of the same experiment with other seeds.
	p := tinyPart(t, e2, 1)
	seeds1 := filepath.Join(dir, "seeds1")
	if err := RunShard(&Sweep{Parts: []Part{p}}, Shard{2, 3}, Options{Out: seeds1, execute: rec2.replay}); err != nil {
		t.Fatal(err)
	}
	// A shard whose outcomes were damaged after it finished.
	damaged := filepath.Join(dir, "damaged")
	if err := os.CopyFS(damaged, os.DirFS(shards[1])); err != nil {
		t.Fatal(err)
	}
	of := filepath.Join(damaged, e2.Name+outcomesSuffix)
	b, _ := os.ReadFile(of)
	b[len(b)/2] ^= 0xff
	os.WriteFile(of, b, 0o644)
	// A shard made by another build of vnsnap.
	otherVersion := filepath.Join(dir, "version")
	if err := os.CopyFS(otherVersion, os.DirFS(shards[1])); err != nil {
		t.Fatal(err)
	}
	mf := filepath.Join(otherVersion, e2.Name+ManifestSuffix)
	mb, _ := os.ReadFile(mf)
	var man map[string]any
	if err := json.Unmarshal(mb, &man); err != nil {
		t.Fatal(err)
	}
	man["meta"].(map[string]any)["version"] = "v9.9.9 0123abcd"
	mb, _ = json.Marshal(man)
	os.WriteFile(mf, mb, 0o644)
	// A shard that has not finished: no manifest.
	unfinished := filepath.Join(dir, "unfinished")
	os.MkdirAll(unfinished, 0o755)

	for _, tc := range []struct {
		name string
		dirs []string
		want []string
	}{
		{"missing", []string{shards[0], shards[2]}, []string{"shard 2/3", "missing"}},
		{"duplicate", []string{shards[0], shards[1], shards[1], shards[2]}, []string{shards[1], "both shard 2/3"}},
		{"foreign experiment", []string{shards[0], other[1], shards[2]}, []string{other[1], "foreign"}},
		{"foreign seeds", []string{shards[0], seeds1, shards[2]}, []string{seeds1, "foreign", "seeds [1]"}},
		{"foreign version", []string{shards[0], otherVersion, shards[2]}, []string{otherVersion, "foreign", "v9.9.9"}},
		{"damaged", []string{shards[0], damaged, shards[2]}, []string{damaged, "SHA-256"}},
		{"unfinished", []string{shards[0], unfinished, shards[2]}, []string{unfinished, "did not finish"}},
		{"absent", []string{shards[0], filepath.Join(dir, "nope"), shards[2]}, []string{filepath.Join(dir, "nope")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(dir, "out-"+strings.ReplaceAll(tc.name, " ", "-"))
			_, err := Merge(tc.dirs, out)
			if err == nil {
				t.Fatal("merge: got no error")
			}
			if _, serr := os.Stat(out); serr == nil {
				t.Errorf("the failed merge wrote %s", out)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not name %q", err, w)
				}
			}
		})
	}
	// The good shards still merge.
	if _, err := Merge(shards, filepath.Join(dir, "out")); err != nil {
		t.Fatal(err)
	}
}

func TestParseShard(t *testing.T) {
	for s, want := range map[string]Shard{"1/1": {1, 1}, "3/7": {3, 7}, "7/7": {7, 7}} {
		got, err := ParseShard(s)
		if err != nil || got != want {
			t.Errorf("ParseShard(%q) = %v, %v; want %v", s, got, err, want)
		}
	}
	for _, s := range []string{"", "0/3", "4/3", "1/0", "a/b", "1", "-1/2", "1/2/3"} {
		if _, err := ParseShard(s); err == nil {
			t.Errorf("ParseShard(%q): got no error", s)
		}
	}
}

// TestAssign checks that shards are disjoint, cover every job, and do not
// depend on anything but the plan and the count.
func TestAssign(t *testing.T) {
	sw := tinySweep(t, All()...)
	for _, n := range []int{1, 2, 3, 7, 50} {
		a, b := sw.Assign(n), tinySweep(t, All()...).Assign(n)
		if d := cmp.Diff(a, b); d != "" {
			t.Fatalf("N=%d: two assignments differ:\n%s", n, d)
		}
		used := map[int]bool{}
		for p, part := range sw.Parts {
			if len(a[p]) != len(part.Jobs) {
				t.Fatalf("N=%d: %s: %d owners for %d jobs", n, part.Exp.Name, len(a[p]), len(part.Jobs))
			}
			for _, s := range a[p] {
				if s < 1 || s > n {
					t.Fatalf("N=%d: owner %d", n, s)
				}
				used[s] = true
			}
		}
		if want := min(n, jobCount(sw)); len(used) != want {
			t.Errorf("N=%d: %d shards hold jobs, want %d", n, len(used), want)
		}
	}
}

func jobCount(sw *Sweep) int {
	n := 0
	for _, p := range sw.Parts {
		n += len(p.Jobs)
	}
	return n
}
