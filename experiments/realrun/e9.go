package realrun

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"

	"github.com/vnsnap/vnsnap/core"
	"github.com/vnsnap/vnsnap/results"
)

// Name is the results' name of E9's real side (results/<Name>.csv, .json).
const Name = "e9-real"

// Grid is E9's real side: every point with every case, Repeats times.
type Grid struct {
	Points  []Point  `json:"points"`
	Cases   []string `json:"cases"` // "algorithm/sink"
	Repeats int      `json:"repeats"`
}

// DefaultGrid is the small run (a quarter of an hour on a loaded two-core
// machine): 2 and 3 VMs, an idle guest and dirtiers up to a rate where
// QEMU's pre-copy at TCG speed needs auto-converge, the pre-copy,
// stop-and-copy and copy-on-write cases.
func DefaultGrid() Grid {
	return Grid{
		Points: []Point{
			{VMs: 2, MemMiB: 128, Guest: "idle"},
			// A dirtier's working set must fit a 128 MiB guest beside its
			// initramfs: with 48 or 64 MiB the dirtier printed nothing,
			// dirtied nothing and left 27 MB filled (killed, it seems,
			// while filling its working set); the real-QEMU tests run it
			// with 8-16 MiB in 128 MiB guests.
			{VMs: 2, MemMiB: 128, Guest: "dirtier", Rate: 16, WSMiB: 16},
			{VMs: 3, MemMiB: 128, Guest: "dirtier", Rate: 64, WSMiB: 16},
		},
		Cases:   []string{"vnsnap/memory", "vnsnap/disk", "vnsnap-log/memory", "stop-copy/disk", "cow/memory"},
		Repeats: 2,
	}
}

// FullGrid is the long run: 2-4 VMs, dirty rates 0 to 128 MiB/s, every
// case, five repeats.
func FullGrid() Grid {
	g := Grid{Repeats: 5}
	for _, n := range []int{2, 4} {
		g.Points = append(g.Points, Point{VMs: n, MemMiB: 128, Guest: "idle"})
		for _, r := range []float64{4, 16, 64, 128} {
			g.Points = append(g.Points, Point{VMs: n, MemMiB: 128, Guest: "dirtier", Rate: r, WSMiB: 16})
		}
	}
	for _, a := range []string{"vnsnap", "vnsnap-log", "stop-copy", "cow", "sync-freeze"} {
		for _, s := range []string{"memory", "disk"} {
			g.Cases = append(g.Cases, a+"/"+s)
		}
	}
	return g
}

// ParseCase parses "algorithm/sink".
func ParseCase(s string) (Case, error) {
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == '/' {
			a, err := core.ParseAlgorithm(s[:i])
			if err != nil {
				return Case{}, fmt.Errorf("case %q: %w", s, err)
			}
			k, err := core.ParseSink(s[i+1:])
			if err != nil {
				return Case{}, fmt.Errorf("case %q: %w", s, err)
			}
			return Case{a, k}, nil
		}
	}
	return Case{}, fmt.Errorf("case %q: want algorithm/sink", s)
}

// Run runs the grid; it returns the rows measured so far with an error.
func (g Grid) Run(ctx context.Context, o Options) ([]Row, error) {
	o.Cases = nil
	for _, s := range g.Cases {
		c, err := ParseCase(s)
		if err != nil {
			return nil, err
		}
		o.Cases = append(o.Cases, c)
	}
	o.Repeats = g.Repeats
	var rows []Row
	for i, p := range g.Points {
		o.logf("point %d/%d: %s", i+1, len(g.Points), p.Name())
		r, err := RunPoint(ctx, p, o)
		rows = append(rows, r...)
		if err != nil {
			return rows, err
		}
	}
	return rows, nil
}

var columns = []results.Column{
	results.Str("point"), results.Int("vms"), results.Int("mem_mib"), results.Str("guest"),
	results.Float("rate_mibps", 1), results.Int("ws_mib"), results.Float("dirty_mibps", 1), results.Float("guest_mibps", 1),
	results.Str("algorithm"), results.Str("sink"), results.Int("repeat"), results.Str("vm"),
	results.Float("pause_ms", 2), results.Float("outside_ms", 2), results.Float("qemu_pause_ms", 2),
	results.Float("duration_ms", 2), results.Int("bytes_copied"), results.Int("stream_bytes"),
	results.Int("memory_copied"), results.Int("passes"), results.Float("window_ms", 2),
	results.Float("snapshot_ms", 2), results.Float("stall_ms", 2),
}

// Table returns the rows as a results table.
func Table(rows []Row) *results.Table {
	t := results.NewTable(columns...)
	for _, r := range rows {
		t.Add(r.Point, r.VMs, r.MemMiB, r.Guest, r.Rate, r.WSMiB, r.Measured, r.GuestRate, r.Algorithm, r.Sink, r.Repeat, r.VM,
			r.PauseMs, r.OutsideMs, r.QEMUPauseMs, r.DurationMs, r.BytesCopied, r.StreamBytes, r.MemoryCopied,
			r.Passes, r.WindowMs, r.SnapshotMs, r.StallMs)
	}
	return t
}

// RunConfig is what a results file records of the run besides the grid.
type RunConfig struct {
	Grid    Grid   `json:"grid"`
	QEMU    string `json:"qemu"`
	Machine string `json:"machine"` // QEMU's machine type
	CPU     string `json:"cpu"`
	Cores   int    `json:"cores"`
	Date    string `json:"date"`
}

// Write writes the rows to dir/e9-real.csv and .json (the real runs have no
// seed: the seed list is empty).
func Write(dir string, cfg RunConfig, rows []Row) error { return WriteNamed(dir, Name, cfg, rows) }

// WriteNamed writes the rows to dir/name.csv and .json.
func WriteNamed(dir, name string, cfg RunConfig, rows []Row) error {
	m, err := results.NewMeta(name, nil, cfg)
	if err != nil {
		return err
	}
	return results.WriteTable(dir, name, m, Table(rows))
}

// Read reads rows written by Write.
func Read(path string) (RunConfig, []Row, error) {
	m, t, err := results.ReadJSON(path)
	if err != nil {
		return RunConfig{}, nil, err
	}
	return fromTable(path, m, t)
}

// ReadBytes reads the JSON file Write wrote from memory.
func ReadBytes(b []byte) (RunConfig, []Row, error) {
	m, t, err := results.DecodeJSON(b)
	if err != nil {
		return RunConfig{}, nil, err
	}
	return fromTable(Name+".json", m, t)
}

func fromTable(path string, m results.Meta, t *results.Table) (RunConfig, []Row, error) {
	for _, c := range columns {
		if !t.Has(c.Name) && c.Name != "guest_mibps" { // added later: 0 when absent
			return RunConfig{}, nil, fmt.Errorf("%s: no column %q", filepath.Base(path), c.Name)
		}
	}
	var cfg RunConfig
	if err := jsonUnmarshal(m.Config, &cfg); err != nil {
		return RunConfig{}, nil, fmt.Errorf("%s: config: %w", filepath.Base(path), err)
	}
	rows := make([]Row, len(t.Rows))
	for i := range t.Rows {
		rows[i] = rowOf(t, i)
	}
	return cfg, rows, nil
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

// rowOf reads row i of a table in the columns' layout.
func rowOf(t *results.Table, i int) Row {
	s := func(c string) string { return t.String(i, c) }
	f := func(c string) float64 { return t.Float(i, c) }
	n := func(c string) int64 { return int64(t.Float(i, c)) }
	opt := func(c string) float64 {
		if !t.Has(c) {
			return 0
		}
		return f(c)
	}
	return Row{
		Point: s("point"), VMs: int(n("vms")), MemMiB: int(n("mem_mib")), Guest: s("guest"), Rate: f("rate_mibps"),
		WSMiB: int(n("ws_mib")), Measured: f("dirty_mibps"), GuestRate: opt("guest_mibps"), Algorithm: s("algorithm"), Sink: s("sink"),
		Repeat: int(n("repeat")), VM: s("vm"), PauseMs: f("pause_ms"), OutsideMs: f("outside_ms"),
		QEMUPauseMs: f("qemu_pause_ms"), DurationMs: f("duration_ms"), BytesCopied: n("bytes_copied"),
		StreamBytes: n("stream_bytes"), MemoryCopied: n("memory_copied"), Passes: int(n("passes")),
		WindowMs: f("window_ms"), SnapshotMs: f("snapshot_ms"), StallMs: f("stall_ms"),
	}
}
