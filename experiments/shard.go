package experiments

import (
	"bufio"
	"bytes"
	"cmp"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/vnsnap/vnsnap/results"
)

// Shard is the Index-th of Count disjoint slices of a sweep's jobs,
// numbered from 1 (Slurm's --array=1-N hands out the same numbers).
type Shard struct{ Index, Count int }

// ParseShard parses "I/N" with 1 <= I <= N.
func ParseShard(s string) (Shard, error) {
	a, b, ok := strings.Cut(s, "/")
	i, err1 := strconv.Atoi(a)
	n, err2 := strconv.Atoi(b)
	if !ok || err1 != nil || err2 != nil {
		return Shard{}, fmt.Errorf("shard %q: want I/N, e.g. 2/4", s)
	}
	if n < 1 || i < 1 || i > n {
		return Shard{}, fmt.Errorf("shard %q: want 1 <= I <= N", s)
	}
	return Shard{i, n}, nil
}

func (s Shard) String() string { return fmt.Sprintf("%d/%d", s.Index, s.Count) }

// Part is one experiment of a sweep: its config, seeds and planned jobs.
type Part struct {
	Exp   *Experiment
	Cfg   Config
	Full  bool
	Seeds []uint64
	Jobs  []Job
}

// Sweep is a set of experiments whose jobs are sharded together.
type Sweep struct{ Parts []Part }

// NewPart plans experiment e with config cfg over seeds.
func NewPart(e *Experiment, cfg Config, full bool, seeds []uint64) (Part, error) {
	jobs, err := cfg.Plan(seeds)
	if err != nil {
		return Part{}, fmt.Errorf("%s: %w", e.Name, err)
	}
	return Part{Exp: e, Cfg: cfg, Full: full, Seeds: seeds, Jobs: jobs}, nil
}

// NewSweep loads and plans the experiments es as opt says (a config file
// only with a single experiment).
func NewSweep(es []*Experiment, opt Options) (*Sweep, error) {
	if opt.ConfigFile != "" && len(es) != 1 {
		return nil, errors.New("--config: give it to one experiment, not to all")
	}
	sw := &Sweep{}
	for _, e := range es {
		cfg, err := LoadConfig(e, opt.Full, opt.ConfigFile)
		if err != nil {
			return nil, err
		}
		n := opt.Seeds
		if n <= 0 {
			n = cfg.SeedCount()
		}
		p, err := NewPart(e, cfg, opt.Full, Seeds(n))
		if err != nil {
			return nil, err
		}
		sw.Parts = append(sw.Parts, p)
	}
	return sw, nil
}

// Names returns the experiments of the sweep, in order.
func (sw *Sweep) Names() []string {
	var out []string
	for _, p := range sw.Parts {
		out = append(out, p.Exp.Name)
	}
	return out
}

// meta returns part p's results metadata, stamped with shard s ("" for a
// whole run).
func (p Part) meta(s string) (results.Meta, error) {
	m, err := results.NewMeta(p.Exp.Name, p.Seeds, p.Cfg)
	m.Shard = s
	return m, err
}

// ExpectedCost estimates a job's simulator work, the quantity shards are
// balanced by: the virtual time it simulates times the events per virtual
// second that its VMs and flows cause. Only ratios between jobs matter; the
// estimate changes how jobs are spread over shards, never their results.
func ExpectedCost(j Job) float64 {
	c := j.Sim
	vms, hosts := float64(max(c.VMs, 1)), float64(max(c.Hosts, 1))
	secs := (c.Warmup + c.RunOn).Seconds()
	if c.Host.DiskBandwidth > 0 {
		// Each host writes its VMs' images through one disk.
		secs += float64(max(c.Snapshots, 1)) * vms / hosts * float64(c.MemBytes) / c.Host.DiskBandwidth
	}
	if c.Restore {
		secs += c.RunOn.Seconds()
	}
	var flows float64
	switch c.Traffic {
	case "all-to-all":
		flows = vms * (vms - 1)
	case "ring", "pairs":
		flows = vms
	}
	rate := 100*vms + flows*c.FlowRate/1460 // memory events, and TCP segments of 1460 bytes
	if c.Workload != nil {
		// Workloads run until they finish; their length is not in the
		// config, so assume a busy ten seconds.
		rate += 2000 * vms
		secs = max(secs, 10)
	}
	return max(secs*rate, 1)
}

// Assign spreads the sweep's jobs over n shards, balancing the sum of
// their expected costs: largest job first, each to the least loaded shard
// (ties: the lower shard, then the earlier job). It returns, per part, the
// shard (1..n) of each job. The result depends only on the plan and n.
func (sw *Sweep) Assign(n int) [][]int {
	type ref struct {
		part, job int
		cost      float64
	}
	var all []ref
	owner := make([][]int, len(sw.Parts))
	for p, part := range sw.Parts {
		owner[p] = make([]int, len(part.Jobs))
		for j, job := range part.Jobs {
			all = append(all, ref{p, j, ExpectedCost(job)})
		}
	}
	// A stable sort keeps the sweep's order among equal costs.
	slices.SortStableFunc(all, func(a, b ref) int { return cmp.Compare(b.cost, a.cost) })
	load := make([]float64, n)
	for _, r := range all {
		best := 0
		for s := 1; s < n; s++ {
			if load[s] < load[best] {
				best = s
			}
		}
		load[best] += r.cost
		owner[r.part][r.job] = best + 1
	}
	return owner
}

// ShardJob is one job a shard holds: its index in the experiment's plan,
// its grid point, seed and expected cost.
type ShardJob struct {
	Index  int             `json:"index"`
	Labels json.RawMessage `json:"labels"`
	Seed   uint64          `json:"seed"`
	Cost   float64         `json:"cost"`
}

// ShardManifest is a shard directory's <experiment>.shard.json: which
// sweep and shard it belongs to and which of the experiment's jobs it holds.
// It is written after the shard's tables and outcomes, so its presence
// means those are complete.
type ShardManifest struct {
	// Meta is the whole run's metadata with Meta.Shard set.
	Meta results.Meta `json:"meta"`
	Full bool         `json:"full"`
	// Sweep names every experiment sharded together with this one.
	Sweep     []string   `json:"sweep"`
	TotalJobs int        `json:"total_jobs"`
	Jobs      []ShardJob `json:"jobs"`
	// Outcomes is the file holding the held jobs' simulator results, which
	// the merge turns into tables exactly as a whole run does.
	Outcomes       string `json:"outcomes"`
	OutcomesSHA256 string `json:"outcomes_sha256"`
}

// ManifestSuffix ends the name of every shard manifest.
const ManifestSuffix = ".shard.json"

const outcomesSuffix = ".outcomes.jsonl.gz"

// storedOutcome is one line of a shard's outcomes file.
type storedOutcome struct {
	Job         int             `json:"job"`
	Res         json.RawMessage `json:"res"`
	Extra       json.RawMessage `json:"extra,omitempty"`
	WallSeconds float64         `json:"wall_s"`
}

// RunShard runs shard s of the sweep and writes its directory opt.Out: per
// experiment, the tables of the jobs it holds (<exp>.csv/json, metadata
// with the shard), their outcomes, and the manifest (<exp>.shard.json),
// written last. Manifests already in the directory are removed first, so
// the directory never mixes two shard runs.
func RunShard(sw *Sweep, s Shard, opt Options) error {
	if s.Count < 1 || s.Index < 1 || s.Index > s.Count {
		return fmt.Errorf("shard %s: want 1 <= I <= N", s)
	}
	out := opt.Out
	if out == "" {
		return errors.New("shard: no output directory")
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	old, err := filepath.Glob(filepath.Join(out, "*"+ManifestSuffix))
	if err != nil {
		return err
	}
	for _, f := range old {
		if err := os.Remove(f); err != nil {
			return err
		}
	}
	owner := sw.Assign(s.Count)
	for p, part := range sw.Parts {
		var held []int
		for j, o := range owner[p] {
			if o == s.Index {
				held = append(held, j)
			}
		}
		if err := runShardPart(part, held, s, sw.Names(), out, opt); err != nil {
			return err
		}
	}
	return nil
}

func runShardPart(part Part, held []int, s Shard, sweep []string, out string, opt Options) error {
	e := part.Exp
	start := time.Now()
	if opt.Log != nil {
		fmt.Fprintf(opt.Log, "%s: shard %s: %d of %d runs\n", e.Name, s, len(held), len(part.Jobs))
	}
	jobs := make([]Job, len(held))
	for i, j := range held {
		jobs[i] = part.Jobs[j]
	}
	outs, err := opt.run(jobs, e.Name)
	if err != nil {
		return fmt.Errorf("%s: shard %s: %w", e.Name, s, err)
	}
	meta, err := part.meta(s.String())
	if err != nil {
		return err
	}
	// The shard's own rows, for reading; the merge rebuilds the tables
	// from the outcomes, since a row may depend on other jobs (E5's
	// slowdown against its baseline).
	if err := writeTables(e, meta, part.Cfg.Tables(jobs, outs), out); err != nil {
		return err
	}
	data, err := encodeOutcomes(held, outs)
	if err != nil {
		return fmt.Errorf("%s: shard %s: %w", e.Name, s, err)
	}
	m := ShardManifest{Meta: meta, Full: part.Full, Sweep: sweep, TotalJobs: len(part.Jobs),
		Outcomes: e.Name + outcomesSuffix, OutcomesSHA256: sha(data)}
	for i, j := range held {
		lb, err := json.Marshal(jobs[i].Labels)
		if err != nil {
			return fmt.Errorf("%s: job %d labels: %w", e.Name, j, err)
		}
		m.Jobs = append(m.Jobs, ShardJob{Index: j, Labels: lb, Seed: jobs[i].Seed, Cost: ExpectedCost(jobs[i])})
	}
	if err := results.WriteFileAtomic(filepath.Join(out, m.Outcomes), data); err != nil {
		return err
	}
	mb, err := json.MarshalIndent(m, "", " ")
	if err != nil {
		return err
	}
	if err := results.WriteFileAtomic(filepath.Join(out, e.Name+ManifestSuffix), append(mb, '\n')); err != nil {
		return err
	}
	if opt.Log != nil {
		fmt.Fprintf(opt.Log, "%s: shard %s done in %.1f s, wrote %s/%s%s\n", e.Name, s, time.Since(start).Seconds(), out, e.Name, ManifestSuffix)
	}
	return nil
}

func sha(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// encodeOutcomes writes one JSON line per outcome, gzipped. Go's JSON
// writes a float64 in the shortest form that parses back to the same bits,
// so decoding gives back exactly the simulator's numbers.
func encodeOutcomes(held []int, outs []Outcome) ([]byte, error) {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	enc := json.NewEncoder(zw)
	for i, o := range outs {
		res, err := json.Marshal(o.Res)
		if err != nil {
			return nil, fmt.Errorf("job %d: result: %w", held[i], err)
		}
		so := storedOutcome{Job: held[i], Res: res, WallSeconds: o.WallSeconds}
		if o.Extra != nil {
			if so.Extra, err = json.Marshal(o.Extra); err != nil {
				return nil, fmt.Errorf("job %d: extra: %w", held[i], err)
			}
		}
		if err := enc.Encode(so); err != nil {
			return nil, fmt.Errorf("job %d: %w", held[i], err)
		}
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// decodeOutcomes reads an outcomes file for the jobs of a plan.
func decodeOutcomes(data []byte, jobs []Job) (map[int]Outcome, error) {
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bufio.NewReader(zr))
	got := map[int]Outcome{}
	for line := 1; ; line++ {
		var so storedOutcome
		if err := dec.Decode(&so); err != nil {
			if errors.Is(err, io.EOF) {
				return got, nil
			}
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		if so.Job < 0 || so.Job >= len(jobs) {
			return nil, fmt.Errorf("line %d: job %d is not in the plan (%d jobs)", line, so.Job, len(jobs))
		}
		if _, dup := got[so.Job]; dup {
			return nil, fmt.Errorf("line %d: job %d twice", line, so.Job)
		}
		o := Outcome{WallSeconds: so.WallSeconds}
		if err := json.Unmarshal(so.Res, &o.Res); err != nil {
			return nil, fmt.Errorf("line %d: job %d result: %w", line, so.Job, err)
		}
		if o.Res == nil {
			return nil, fmt.Errorf("line %d: job %d has no result", line, so.Job)
		}
		if len(so.Extra) > 0 {
			nx := jobs[so.Job].NewExtra
			if nx == nil {
				return nil, fmt.Errorf("line %d: job %d has extra data but its job cannot decode it", line, so.Job)
			}
			p := nx()
			if err := json.Unmarshal(so.Extra, p); err != nil {
				return nil, fmt.Errorf("line %d: job %d extra: %w", line, so.Job, err)
			}
			o.Extra = reflect.ValueOf(p).Elem().Interface()
		}
		got[so.Job] = o
	}
}

// ShardComplete returns nil if dir holds shard s of sw, finished and as
// this binary would write it (same version, configs and seeds), and
// otherwise says why not. It lets a resubmission run only the shards that
// are missing.
func (sw *Sweep) ShardComplete(dir string, s Shard) error {
	sd, err := readShardDir(dir)
	if err != nil {
		return err
	}
	if sd.shard != s {
		return fmt.Errorf("shard %s: holds shard %s, want %s", dir, sd.shard, s)
	}
	if !slices.Equal(sd.sweep, sw.Names()) {
		return fmt.Errorf("shard %s: sweep %v, want %v", dir, sd.sweep, sw.Names())
	}
	for _, p := range sw.Parts {
		meta, err := p.meta(s.String())
		if err != nil {
			return err
		}
		m := sd.mans[p.Exp.Name]
		if err := sameSweep(ShardManifest{Meta: meta, Full: p.Full, TotalJobs: len(p.Jobs)}, m); err != nil {
			return fmt.Errorf("shard %s: %s: %v", dir, p.Exp.Name, err)
		}
		data, err := os.ReadFile(filepath.Join(dir, m.Outcomes))
		if err != nil {
			return fmt.Errorf("shard %s: %w", dir, err)
		}
		if sha(data) != m.OutcomesSHA256 {
			return fmt.Errorf("shard %s: %s does not match its manifest", dir, m.Outcomes)
		}
	}
	return nil
}
