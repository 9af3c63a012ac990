package experiments

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/vnsnap/vnsnap/results"
	sim "github.com/vnsnap/vnsnap/simbackend"
)

// Experiment is one named harness.
type Experiment struct {
	Name  string // e1-downtime
	Title string // E1: downtime against memory size
	About string // what it varies and what it measures
	// Extra names the experiment's tables besides its main one; table
	// "vms" is written as <name>-vms.csv.
	Extra []string
	// New returns the default config (small) or, with full, the large one.
	New func(full bool) Config
	// Analyze turns the experiment's tables into figures and findings.
	Analyze func(t Tables) (Analysis, error)
}

// Config is an experiment's config. Implementations are JSON-decodable
// structs; a config file overrides the fields it names.
type Config interface {
	// SeedCount is the number of seeds to run unless told otherwise.
	SeedCount() int
	// Plan expands the config into independent simulator runs.
	Plan(seeds []uint64) ([]Job, error)
	// Tables turns the runs' outcomes (in job order) into tables: the main
	// one under the experiment's name ("") and any Extra ones.
	Tables(jobs []Job, outs []Outcome) Tables
}

// Job is one simulator run.
type Job struct {
	Labels []any // the grid point, in the order the experiment's rows use
	Seed   uint64
	Sim    sim.Config
	// Run, if set, replaces sim.Run, e.g. to collect a trace through a hook.
	// It returns the result and anything the experiment collected.
	Run func(cfg sim.Config) (*sim.Result, any, error)
	// NewExtra, set when Run returns something, returns a pointer to a zero
	// value of that type, into which a shard's stored copy (JSON) decodes.
	NewExtra func() any
}

// Outcome is what a Job produced.
type Outcome struct {
	Res   *sim.Result
	Extra any
	// WallSeconds is how long the run took on this machine: not
	// deterministic, so only volatile columns may use it.
	WallSeconds float64
}

// Tables holds an experiment's tables by name ("" is the main table).
type Tables map[string]*results.Table

// Main returns the main table.
func (t Tables) Main() *results.Table { return t[""] }

// Analysis is what an experiment's analysis produces.
type Analysis struct {
	Summary *results.Table
	Figures []Fig
	Notes   []string
}

// Fig is one figure with its file name (without extension), caption and
// computed findings.
type Fig struct {
	Name    string
	Figure  results.Figure
	Caption string
	Text    string
}

// All returns every experiment, in the suite's order.
func All() []*Experiment {
	return []*Experiment{e1(), e2(), e3(), e4(), e5(), e6(), e7(), e8(), e9()}
}

// Lookup returns the experiment with the given name (or its short form,
// "e1"), or an error that lists the names.
func Lookup(name string) (*Experiment, error) {
	var names []string
	for _, e := range All() {
		if e.Name == name || strings.SplitN(e.Name, "-", 2)[0] == name {
			return e, nil
		}
		names = append(names, e.Name)
	}
	sort.Strings(names)
	return nil, fmt.Errorf("unknown experiment %q (want one of %s)", name, strings.Join(names, ", "))
}

// tableFile returns the file base name of table t of experiment e.
func (e *Experiment) tableFile(t string) string {
	if t == "" {
		return e.Name
	}
	return e.Name + "-" + t
}

// tableNames returns "" and the extra table names.
func (e *Experiment) tableNames() []string {
	return append([]string{""}, slices.Clone(e.Extra)...)
}
