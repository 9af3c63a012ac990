package results

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
)

// Meta is what every results file records about the run that produced it.
type Meta struct {
	Experiment string          `json:"experiment"`
	Seeds      []uint64        `json:"seeds"`
	Config     json.RawMessage `json:"config"`
	Version    string          `json:"version"`
	GoVersion  string          `json:"go_version"`
	// Shard is "I/N" in the files of one shard of a sweep (vnsnap
	// experiment --shard) and empty in a whole run's or a merge's.
	Shard string `json:"shard,omitempty"`
}

// NewMeta returns the metadata of a run of experiment with the given seeds
// and config (marshalled to JSON), stamped with this binary's version.
func NewMeta(experiment string, seeds []uint64, config any) (Meta, error) {
	b, err := json.Marshal(config)
	if err != nil {
		return Meta{}, fmt.Errorf("results: config of %s: %w", experiment, err)
	}
	return Meta{Experiment: experiment, Seeds: seeds, Config: b, Version: Version(), GoVersion: runtime.Version()}, nil
}

// Version returns the module version and VCS revision of this binary as the
// Go toolchain recorded them ("(devel) 1a2b...+dirty"), or "unknown".
func Version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	v := bi.Main.Version
	if v == "" {
		v = "(devel)"
	}
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" {
			v += " " + s.Value
		}
		if s.Key == "vcs.modified" && s.Value == "true" {
			v += "+dirty"
		}
	}
	return v
}

// EncodeCSV writes the table as CSV: a header row, then one row per table
// row with floats in their column's fixed format. Volatile columns are left
// out unless withVolatile is set (golden files leave them out).
func EncodeCSV(w io.Writer, t *Table, withVolatile bool) error {
	cw := csv.NewWriter(w)
	var keep []int
	var head []string
	for i, c := range t.Columns {
		if c.Volatile && !withVolatile {
			continue
		}
		keep = append(keep, i)
		head = append(head, c.Name)
	}
	if err := cw.Write(head); err != nil {
		return err
	}
	rec := make([]string, len(keep))
	for _, row := range t.Rows {
		for j, i := range keep {
			rec[j] = format(row[i], t.Columns[i].Prec)
		}
		if err := cw.Write(rec); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}

// CSV returns the file form of a table: comment lines ("# key: value") with
// the metadata, then EncodeCSV with every column.
func CSV(m Meta, t *Table) ([]byte, error) {
	var b bytes.Buffer
	fmt.Fprintf(&b, "# experiment: %s\n# seeds: %s\n# version: %s\n# go: %s\n# config: %s\n",
		m.Experiment, seedList(m.Seeds), m.Version, m.GoVersion, m.Config)
	if m.Shard != "" {
		fmt.Fprintf(&b, "# shard: %s\n", m.Shard)
	}
	if err := EncodeCSV(&b, t, true); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

func seedList(s []uint64) string {
	parts := make([]string, len(s))
	for i, v := range s {
		parts[i] = fmt.Sprint(v)
	}
	return strings.Join(parts, " ")
}

// jsonFile is the JSON form of a table.
type jsonFile struct {
	Meta    Meta         `json:"meta"`
	Columns []jsonColumn `json:"columns"`
	Rows    [][]any      `json:"rows"`
}

type jsonColumn struct {
	Name     string `json:"name"`
	Prec     int    `json:"prec,omitempty"`
	Volatile bool   `json:"volatile,omitempty"`
}

// JSON returns the JSON form of a table: the metadata, the columns, and the
// rows as arrays in column order (floats rounded to their column's format).
func JSON(m Meta, t *Table) ([]byte, error) {
	f := jsonFile{Meta: m, Rows: make([][]any, len(t.Rows))}
	for _, c := range t.Columns {
		f.Columns = append(f.Columns, jsonColumn{c.Name, c.Prec, c.Volatile})
	}
	for r, row := range t.Rows {
		out := make([]any, len(row))
		for i, v := range row {
			if x, ok := v.(float64); ok {
				out[i] = json.Number(format(x, t.Columns[i].Prec))
				if format(x, t.Columns[i].Prec) == "NaN" {
					out[i] = nil
				}
				continue
			}
			out[i] = v
		}
		f.Rows[r] = out
	}
	b, err := json.MarshalIndent(f, "", " ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// ReadJSON reads a file written by WriteTable back into its metadata and
// table; numbers come back as float64.
func ReadJSON(path string) (Meta, *Table, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Meta{}, nil, err
	}
	m, t, err := DecodeJSON(b)
	if err != nil {
		return Meta{}, nil, fmt.Errorf("%s: %w", path, err)
	}
	return m, t, nil
}

// DecodeJSON decodes a file written by WriteTable (its JSON form) from
// memory.
func DecodeJSON(b []byte) (Meta, *Table, error) {
	var f jsonFile
	if err := json.Unmarshal(b, &f); err != nil {
		return Meta{}, nil, err
	}
	t := &Table{}
	for _, c := range f.Columns {
		t.Columns = append(t.Columns, Column{Name: c.Name, Prec: c.Prec, Volatile: c.Volatile})
	}
	t.reindex()
	for i, row := range f.Rows {
		if len(row) != len(t.Columns) {
			return Meta{}, nil, fmt.Errorf("row %d has %d values for %d columns", i, len(row), len(t.Columns))
		}
		t.Rows = append(t.Rows, row)
	}
	return f.Meta, t, nil
}

// WriteTable writes dir/name.csv and dir/name.json atomically.
func WriteTable(dir, name string, m Meta, t *Table) error {
	c, err := CSV(m, t)
	if err != nil {
		return fmt.Errorf("results: %s.csv: %w", name, err)
	}
	j, err := JSON(m, t)
	if err != nil {
		return fmt.Errorf("results: %s.json: %w", name, err)
	}
	if err := WriteFileAtomic(filepath.Join(dir, name+".csv"), c); err != nil {
		return err
	}
	return WriteFileAtomic(filepath.Join(dir, name+".json"), j)
}

// WriteFileAtomic writes data to a temporary file in path's directory,
// syncs it and renames it over path, so a crash leaves either the old file
// or the new one, never half of one.
func WriteFileAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, werr := f.Write(data)
	if werr == nil {
		werr = f.Sync()
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Chmod(tmp, 0o644)
	}
	if werr == nil {
		werr = os.Rename(tmp, path)
	}
	if werr != nil {
		os.Remove(tmp)
		return fmt.Errorf("results: write %s: %w", path, werr)
	}
	return nil
}
