// Command vnsnap-table prints the JSON lines of `vnsnap sim --json` runs as
// a comparison table (used by run.sh).
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"text/tabwriter"

	sim "github.com/vnsnap/vnsnap/simbackend"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: vnsnap-table FILE.jsonl")
		os.Exit(2)
	}
	f, err := os.Open(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "vnsnap-table:", err)
		os.Exit(1)
	}
	defer f.Close()
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "algo\tsink\tmedian downtime ms\tmax downtime ms\twindow ms\ttotal ms\torphans\tin transit\tdropped\tmax stall ms\trestore\t")
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	line := 0
	for sc.Scan() {
		line++
		var r sim.Result
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			fmt.Fprintf(os.Stderr, "vnsnap-table: %s line %d: %v\n", os.Args[1], line, err)
			os.Exit(1)
		}
		var d []float64
		for _, v := range r.VMs {
			d = append(d, v.DowntimeMS)
		}
		sort.Float64s(d)
		restore := "-"
		if r.RestoreOK != nil {
			restore = "ok"
			if !*r.RestoreOK {
				restore = "FAILED"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%.1f\t%.1f\t%.1f\t%.0f\t%d\t%d\t%d\t%.0f\t%s\t\n", r.Algo, r.Sink,
			d[len(d)/2], d[len(d)-1], r.WindowMS, r.TotalMS, r.Orphans, r.InTransit, r.Dropped, r.MaxStallMS, restore)
	}
	if err := sc.Err(); err != nil {
		fmt.Fprintln(os.Stderr, "vnsnap-table:", err)
		os.Exit(1)
	}
	tw.Flush()
}
