package experiments

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/vnsnap/vnsnap/results"
)

// shardDir is what one shard directory holds: its manifests by experiment.
type shardDir struct {
	dir   string
	shard Shard
	sweep []string
	mans  map[string]ShardManifest
}

// readShardDir reads and checks the manifests of one shard directory: they
// must name one shard of one sweep and cover every experiment of it.
func readShardDir(dir string) (shardDir, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*"+ManifestSuffix))
	if err != nil {
		return shardDir{}, err
	}
	if len(files) == 0 {
		if _, err := os.Stat(dir); err != nil {
			return shardDir{}, fmt.Errorf("shard %s: %w", dir, err)
		}
		return shardDir{}, fmt.Errorf("shard %s: no *%s in it: not a shard directory, or its run did not finish", dir, ManifestSuffix)
	}
	sort.Strings(files)
	sd := shardDir{dir: dir, mans: map[string]ShardManifest{}}
	for i, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return shardDir{}, err
		}
		var m ShardManifest
		if err := json.Unmarshal(b, &m); err != nil {
			return shardDir{}, fmt.Errorf("shard manifest %s: %w", f, err)
		}
		// The manifest is indented; the tables carry the config compact.
		var c bytes.Buffer
		if err := json.Compact(&c, m.Meta.Config); err != nil {
			return shardDir{}, fmt.Errorf("shard manifest %s: meta.config: %w", f, err)
		}
		m.Meta.Config = c.Bytes()
		for k := range m.Jobs {
			var l bytes.Buffer
			if err := json.Compact(&l, m.Jobs[k].Labels); err != nil {
				return shardDir{}, fmt.Errorf("shard manifest %s: jobs[%d].labels: %w", f, k, err)
			}
			m.Jobs[k].Labels = l.Bytes()
		}
		s, err := ParseShard(m.Meta.Shard)
		if err != nil {
			return shardDir{}, fmt.Errorf("shard manifest %s: meta.shard: %w", f, err)
		}
		if want := strings.TrimSuffix(filepath.Base(f), ManifestSuffix); m.Meta.Experiment != want {
			return shardDir{}, fmt.Errorf("shard manifest %s: experiment %q, want %q", f, m.Meta.Experiment, want)
		}
		if i == 0 {
			sd.shard, sd.sweep = s, m.Sweep
		} else if s != sd.shard || !slices.Equal(m.Sweep, sd.sweep) {
			return shardDir{}, fmt.Errorf("shard %s: %s is shard %s of sweep %v, %s is shard %s of sweep %v",
				dir, filepath.Base(files[0]), sd.shard, sd.sweep, filepath.Base(f), s, m.Sweep)
		}
		sd.mans[m.Meta.Experiment] = m
	}
	for _, name := range sd.sweep {
		if _, ok := sd.mans[name]; !ok {
			return shardDir{}, fmt.Errorf("shard %s (%s): no %s%s: its run did not finish", dir, sd.shard, name, ManifestSuffix)
		}
	}
	if len(sd.mans) != len(sd.sweep) {
		return shardDir{}, fmt.Errorf("shard %s (%s): manifests of experiments outside its sweep %v", dir, sd.shard, sd.sweep)
	}
	return sd, nil
}

// sameSweep returns an error naming the first field in which b's manifest
// of an experiment differs from a's.
func sameSweep(a, b ShardManifest) error {
	switch {
	case a.Meta.Version != b.Meta.Version:
		return fmt.Errorf("version %q, want %q", b.Meta.Version, a.Meta.Version)
	case a.Meta.GoVersion != b.Meta.GoVersion:
		return fmt.Errorf("go version %q, want %q", b.Meta.GoVersion, a.Meta.GoVersion)
	case !slices.Equal(a.Meta.Seeds, b.Meta.Seeds):
		return fmt.Errorf("seeds %v, want %v", b.Meta.Seeds, a.Meta.Seeds)
	case a.Full != b.Full:
		return fmt.Errorf("full %v, want %v", b.Full, a.Full)
	case !bytes.Equal(a.Meta.Config, b.Meta.Config):
		return fmt.Errorf("config %s, want %s", b.Meta.Config, a.Meta.Config)
	case a.TotalJobs != b.TotalJobs:
		return fmt.Errorf("%d jobs, want %d", b.TotalJobs, a.TotalJobs)
	}
	return nil
}

// Merge checks that dirs are the shards of one sweep, each present once,
// holding every job of every experiment exactly once, and writes under out
// the same tables and figures as a whole run of the sweep. It returns the
// sweep's experiments (in order) and their report sections.
func Merge(dirs []string, out string) ([]results.Section, error) {
	if len(dirs) == 0 {
		return nil, fmt.Errorf("merge: no shard directories")
	}
	var sds []shardDir
	for _, d := range dirs {
		sd, err := readShardDir(d)
		if err != nil {
			return nil, err
		}
		sds = append(sds, sd)
	}
	ref := sds[0]
	byIndex := map[int]string{}
	for _, sd := range sds {
		if sd.shard.Count != ref.shard.Count {
			return nil, fmt.Errorf("shard %s is shard %s, but %s is shard %s: not the same sweep", sd.dir, sd.shard, ref.dir, ref.shard)
		}
		if !slices.Equal(sd.sweep, ref.sweep) {
			return nil, fmt.Errorf("shard %s: foreign shard: sweep %v, but %s's is %v", sd.dir, sd.sweep, ref.dir, ref.sweep)
		}
		for _, name := range ref.sweep {
			if err := sameSweep(ref.mans[name], sd.mans[name]); err != nil {
				return nil, fmt.Errorf("shard %s: foreign shard: %s: %v (as in %s)", sd.dir, name, err, ref.dir)
			}
		}
		if prev, dup := byIndex[sd.shard.Index]; dup {
			return nil, fmt.Errorf("shard %s and shard %s are both shard %s", prev, sd.dir, sd.shard)
		}
		byIndex[sd.shard.Index] = sd.dir
	}
	var missing []string
	for i := 1; i <= ref.shard.Count; i++ {
		if _, ok := byIndex[i]; !ok {
			missing = append(missing, fmt.Sprintf("%d/%d", i, ref.shard.Count))
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("merge: shard %s of the sweep %v missing (given: %s)",
			strings.Join(missing, ", "), ref.sweep, strings.Join(dirs, " "))
	}
	// Check and rebuild every experiment before writing any file, so a bad
	// shard leaves out as it was.
	var merged []mergedPart
	for _, name := range ref.sweep {
		mp, err := mergePart(name, sds)
		if err != nil {
			return nil, err
		}
		merged = append(merged, mp)
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return nil, err
	}
	var secs []results.Section
	for _, mp := range merged {
		sec, err := writeRun(mp.e, mp.meta, mp.tables, out)
		if err != nil {
			return nil, err
		}
		secs = append(secs, sec)
	}
	return secs, nil
}

// mergedPart is one experiment of a sweep, checked and rebuilt.
type mergedPart struct {
	e      *Experiment
	meta   results.Meta
	tables Tables
}

// mergePart checks and rebuilds one experiment of the sweep.
func mergePart(name string, sds []shardDir) (mergedPart, error) {
	e, err := Lookup(name)
	if err != nil {
		return mergedPart{}, err
	}
	m0 := sds[0].mans[name]
	cfg := e.New(m0.Full)
	dec := json.NewDecoder(bytes.NewReader(m0.Meta.Config))
	dec.DisallowUnknownFields()
	if err := dec.Decode(cfg); err != nil {
		return mergedPart{}, fmt.Errorf("%s: config in %s: %w", name, sds[0].dir, err)
	}
	part, err := NewPart(e, cfg, m0.Full, m0.Meta.Seeds)
	if err != nil {
		return mergedPart{}, err
	}
	meta, err := part.meta("")
	if err != nil {
		return mergedPart{}, err
	}
	// The config must mean the same to this binary as to the shards'.
	if !bytes.Equal(meta.Config, m0.Meta.Config) || meta.Version != m0.Meta.Version || meta.GoVersion != m0.Meta.GoVersion {
		return mergedPart{}, fmt.Errorf("%s: shards are of version %q (%s), config %s; this binary is %q (%s) and reads the config as %s",
			name, m0.Meta.Version, m0.Meta.GoVersion, m0.Meta.Config, meta.Version, meta.GoVersion, meta.Config)
	}
	if len(part.Jobs) != m0.TotalJobs {
		return mergedPart{}, fmt.Errorf("%s: the config plans %d jobs, the shards say %d", name, len(part.Jobs), m0.TotalJobs)
	}
	where := make([]string, len(part.Jobs)) // which shard holds each job
	outs := make([]Outcome, len(part.Jobs))
	for _, sd := range sds {
		m := sd.mans[name]
		at := fmt.Sprintf("%s (shard %s)", sd.dir, sd.shard)
		for _, j := range m.Jobs {
			if j.Index < 0 || j.Index >= len(part.Jobs) {
				return mergedPart{}, fmt.Errorf("%s: %s holds job %d, but there are %d", name, at, j.Index, len(part.Jobs))
			}
			if where[j.Index] != "" {
				return mergedPart{}, fmt.Errorf("%s: job %d %s seed %d is in %s and in %s", name, j.Index, j.Labels, j.Seed, where[j.Index], at)
			}
			where[j.Index] = at
			pj := part.Jobs[j.Index]
			lb, _ := json.Marshal(pj.Labels)
			if !bytes.Equal(lb, j.Labels) || pj.Seed != j.Seed {
				return mergedPart{}, fmt.Errorf("%s: %s: job %d is %s seed %d, the plan's is %s seed %d",
					name, at, j.Index, j.Labels, j.Seed, lb, pj.Seed)
			}
		}
		data, err := os.ReadFile(filepath.Join(sd.dir, m.Outcomes))
		if err != nil {
			return mergedPart{}, fmt.Errorf("%s: %s: %w", name, at, err)
		}
		if got := sha(data); got != m.OutcomesSHA256 {
			return mergedPart{}, fmt.Errorf("%s: %s: %s has SHA-256 %s, the manifest says %s (damaged or rewritten)",
				name, at, m.Outcomes, got, m.OutcomesSHA256)
		}
		got, err := decodeOutcomes(data, part.Jobs)
		if err != nil {
			return mergedPart{}, fmt.Errorf("%s: %s: %s: %w", name, at, m.Outcomes, err)
		}
		if len(got) != len(m.Jobs) {
			return mergedPart{}, fmt.Errorf("%s: %s: %s has %d outcomes for %d jobs", name, at, m.Outcomes, len(got), len(m.Jobs))
		}
		for _, j := range m.Jobs {
			o, ok := got[j.Index]
			if !ok {
				return mergedPart{}, fmt.Errorf("%s: %s: %s lacks job %d", name, at, m.Outcomes, j.Index)
			}
			outs[j.Index] = o
		}
	}
	for j, w := range where {
		if w == "" {
			pj := part.Jobs[j]
			return mergedPart{}, fmt.Errorf("%s: job %d %v seed %d is in no shard", name, j, pj.Labels, pj.Seed)
		}
	}
	return mergedPart{e, meta, part.Cfg.Tables(part.Jobs, outs)}, nil
}

// writeRun writes an experiment's tables under out, then its figures, and
// returns its report section: the end of a whole run and of a merge.
func writeRun(e *Experiment, meta results.Meta, tables Tables, out string) (results.Section, error) {
	if err := writeTables(e, meta, tables, out); err != nil {
		return results.Section{}, err
	}
	return Render(e, out)
}

// writeTables writes every table of e under out (a whole run's, a merge's
// and a shard's).
func writeTables(e *Experiment, meta results.Meta, tables Tables, out string) error {
	for _, name := range e.tableNames() {
		t, ok := tables[name]
		if !ok {
			return fmt.Errorf("%s: no table %q", e.Name, name)
		}
		if err := results.WriteTable(out, e.tableFile(name), meta, t); err != nil {
			return err
		}
	}
	return nil
}
