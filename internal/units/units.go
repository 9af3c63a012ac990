// Package units parses and formats the sizes and rates users type:
// "512MiB", "1.5GB", "20MiB/s", "1Gbit/s".
package units

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

var sizeSuffixes = []struct {
	s string
	m float64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
	{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12},
	{"Kbit", 1e3 / 8}, {"Mbit", 1e6 / 8}, {"Gbit", 1e9 / 8},
	{"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30},
	{"B", 1},
}

// ParseSize parses a byte count with an optional unit suffix (KiB, MiB, GiB,
// TiB, KB, MB, GB, TB, Kbit, Mbit, Gbit, B; K, M and G mean KiB, MiB and
// GiB). A bare number is bytes. The result is finite and not negative: NaN,
// infinities, negative numbers and values that overflow a float64 once the
// unit is applied ("1e400MiB", "1e308GiB") are errors.
func ParseSize(s string) (float64, error) {
	t := strings.TrimSpace(s)
	mult := 1.0
	for _, suf := range sizeSuffixes {
		if strings.HasSuffix(t, suf.s) {
			t = strings.TrimSpace(strings.TrimSuffix(t, suf.s))
			mult = suf.m
			break
		}
	}
	v, err := strconv.ParseFloat(t, 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
		return 0, fmt.Errorf("%q is not a size (want e.g. 512MiB, 1.5GB or 4096)", s)
	}
	v *= mult
	if math.IsInf(v, 0) {
		return 0, fmt.Errorf("%q is too large a size", s)
	}
	return v, nil
}

// ParseBytes parses a size that must be a whole number of bytes that fits in
// an int64.
func ParseBytes(s string) (int64, error) {
	v, err := ParseSize(s)
	if err != nil {
		return 0, err
	}
	// 2^63 is the first float64 beyond math.MaxInt64; every float64 below it
	// converts exactly if it is whole.
	if v >= 1<<63 {
		return 0, fmt.Errorf("%q is too many bytes (at most %d)", s, int64(math.MaxInt64))
	}
	if v != math.Trunc(v) {
		return 0, fmt.Errorf("%q is not a whole number of bytes", s)
	}
	return int64(v), nil
}

// ParseRate parses a rate in bytes per second: a size followed by "/s"
// ("20MiB/s", "1Gbit/s"). The "/s" may be left out. Like ParseSize it
// rejects NaN, infinities, negative rates and overflow.
func ParseRate(s string) (float64, error) {
	t := strings.TrimSuffix(strings.TrimSpace(s), "/s")
	v, err := ParseSize(t)
	if err != nil {
		return 0, fmt.Errorf("%q is not a rate (want e.g. 20MiB/s or 1Gbit/s)", s)
	}
	return v, nil
}

// FormatBytes formats a byte count with a binary unit.
func FormatBytes(n float64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2fGiB", n/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1fMiB", n/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1fKiB", n/(1<<10))
	}
	return fmt.Sprintf("%.0fB", n)
}
