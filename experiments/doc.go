// Package experiments holds the paper suite: one harness per experiment
// (E1-E8 of issue 3), a registry of them by name, and a runner.
//
// An Experiment has a default config (small, for ./run.sh), a large one
// (--full), and reads overrides from a JSON or YAML file. Its config expands
// into independent simulator runs (jobs), one per point of its grid and
// seed; the runner executes them on GOMAXPROCS workers, puts the outcomes
// back in job order (so the output does not depend on scheduling), and the
// config turns them into tables. Analysis works from the tables alone, so
// figures and the report can be rebuilt from the JSON files on disk:
//
//	config --Plan--> jobs --Runner--> outcomes --Tables--> tables
//	tables --Analyze--> figures, summary table, findings --> report
//
// Findings are sentences computed from the data, compared with the
// paper's claims; when the data contradicts a claim, the sentence says so.
package experiments
