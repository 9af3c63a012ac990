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
//
// A sweep (one experiment or all) can be split into shards for a cluster:
// Sweep.Assign spreads the jobs over N shards by expected cost, RunShard
// runs one shard and stores its jobs' outcomes (JSON, exact floats) with a
// manifest, and Merge checks that the shards make up one sweep, rebuilds
// the outcomes in job order and runs the same Tables and Render as a whole
// run, so the merged files equal a whole run's byte for byte:
//
//	jobs --Assign--> shard I/N --RunShard--> outcomes + manifest
//	shard 1..N --Merge--> outcomes in job order --Tables, Render--> the whole run's files
package experiments
