package results

import (
	"fmt"
	"math"
	"strconv"
)

// Column is one column of a Table.
type Column struct {
	Name string
	// Prec is the number of digits after the point for float values.
	Prec int
	// Volatile marks a column whose values differ from run to run (wall
	// time, events per second): it is left out of golden outputs.
	Volatile bool
}

// Table is an ordered list of rows with ordered columns. A row's values are
// strings, bools, integers or floats, one per column, in column order.
type Table struct {
	Columns []Column
	Rows    [][]any
	index   map[string]int
}

// NewTable returns an empty table with the given columns.
func NewTable(cols ...Column) *Table {
	t := &Table{Columns: cols}
	t.reindex()
	return t
}

// Str, Int and Float are shorthands for columns.
func Str(name string) Column             { return Column{Name: name} }
func Int(name string) Column             { return Column{Name: name} }
func Float(name string, prec int) Column { return Column{Name: name, Prec: prec} }
func Bool(name string) Column            { return Column{Name: name} }

func (t *Table) reindex() {
	t.index = make(map[string]int, len(t.Columns))
	for i, c := range t.Columns {
		t.index[c.Name] = i
	}
}

// Add appends a row; it panics if the row's length does not match the
// columns, since that is a bug in the experiment that builds it.
func (t *Table) Add(vals ...any) {
	if len(vals) != len(t.Columns) {
		panic(fmt.Sprintf("results: row of %d values for %d columns", len(vals), len(t.Columns)))
	}
	t.Rows = append(t.Rows, vals)
}

// Col returns the index of the named column; it panics if there is none.
func (t *Table) Col(name string) int {
	if t.index == nil {
		t.reindex()
	}
	i, ok := t.index[name]
	if !ok {
		panic(fmt.Sprintf("results: no column %q", name))
	}
	return i
}

// Has reports whether the table has the named column.
func (t *Table) Has(name string) bool {
	if t.index == nil {
		t.reindex()
	}
	_, ok := t.index[name]
	return ok
}

// Float returns row r's value in the named column as a float64 (NaN for a
// non-numeric value).
func (t *Table) Float(r int, name string) float64 { return toFloat(t.Rows[r][t.Col(name)]) }

// String returns row r's value in the named column, formatted.
func (t *Table) String(r int, name string) string {
	i := t.Col(name)
	return format(t.Rows[r][i], t.Columns[i].Prec)
}

// Filter returns a table with the rows for which keep is true.
func (t *Table) Filter(keep func(r int) bool) *Table {
	out := NewTable(t.Columns...)
	for r := range t.Rows {
		if keep(r) {
			out.Rows = append(out.Rows, t.Rows[r])
		}
	}
	return out
}

// Where returns the rows whose named column formats as value.
func (t *Table) Where(name, value string) *Table {
	return t.Filter(func(r int) bool { return t.String(r, name) == value })
}

// Distinct returns the distinct formatted values of a column in order of
// first appearance.
func (t *Table) Distinct(name string) []string {
	var out []string
	seen := map[string]bool{}
	for r := range t.Rows {
		v := t.String(r, name)
		if !seen[v] {
			seen[v] = true
			out = append(out, v)
		}
	}
	return out
}

// Floats returns the named column as floats.
func (t *Table) Floats(name string) []float64 {
	out := make([]float64, len(t.Rows))
	for r := range t.Rows {
		out[r] = t.Float(r, name)
	}
	return out
}

func toFloat(v any) float64 {
	switch x := v.(type) {
	case float64:
		return x
	case float32:
		return float64(x)
	case int:
		return float64(x)
	case int64:
		return float64(x)
	case uint64:
		return float64(x)
	case uint32:
		return float64(x)
	case int32:
		return float64(x)
	case bool:
		if x {
			return 1
		}
		return 0
	case string:
		f, err := strconv.ParseFloat(x, 64)
		if err != nil {
			return math.NaN()
		}
		return f
	}
	return math.NaN()
}

// format renders a value the same way in CSV, JSON-derived text and tables:
// floats with a fixed number of digits, so outputs compare byte for byte.
func format(v any, prec int) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return x
	case bool:
		return strconv.FormatBool(x)
	case float64:
		if math.IsNaN(x) {
			return "NaN"
		}
		s := strconv.FormatFloat(x, 'f', prec, 64)
		if s == "-0" || (len(s) > 2 && s[:3] == "-0." && isZero(s[3:])) {
			s = s[1:]
		}
		return s
	case float32:
		return format(float64(x), prec)
	case int:
		return strconv.Itoa(x)
	case int64:
		return strconv.FormatInt(x, 10)
	case uint64:
		return strconv.FormatUint(x, 10)
	case uint32, int32:
		return fmt.Sprint(x)
	}
	panic(fmt.Sprintf("results: unsupported value %T", v))
}

func isZero(digits string) bool {
	for _, c := range digits {
		if c != '0' {
			return false
		}
	}
	return true
}
