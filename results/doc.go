// Package results holds what experiments produce and how it is written:
// tables of rows with ordered columns and a fixed float format (table.go),
// CSV and JSON files that record the seeds, the config, the vnsnap version
// and the Go version and are written atomically (write.go), figures drawn
// with gonum/plot as PNG and SVG (plot.go), summaries over seeds
// (stats.go), and the report that gathers every figure with a table and
// computed findings (report.go).
//
// The package knows nothing about the simulator: experiments fill tables,
// describe figures, and compute the sentences of their findings.
package results
