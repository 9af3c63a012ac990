package units

import (
	"math"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		in   string
		want float64
		rate bool
		err  bool
	}{
		{in: "512MiB", want: 512 << 20},
		{in: "1.5GB", want: 1.5e9},
		{in: "4096", want: 4096},
		{in: "20MiB/s", want: 20 << 20, rate: true},
		{in: "1Gbit/s", want: 125e6, rate: true},
		{in: "0", want: 0},
		{in: "fast", err: true},
		{in: "-1MiB", err: true},
		{in: "", err: true},
		// Not finite, or not finite once the unit is applied.
		{in: "NaN", err: true},
		{in: "nan", err: true},
		{in: "NaN MiB", err: true},
		{in: "NaN MiB/s", rate: true, err: true},
		{in: "Inf", err: true},
		{in: "+Inf GiB", err: true},
		{in: "-Inf", err: true},
		{in: "infinity/s", rate: true, err: true},
		{in: "1e400MiB", err: true},
		{in: "1e400", err: true},
		{in: "1e308GiB", err: true},
		{in: "1e308TB/s", rate: true, err: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			var got float64
			var err error
			if tt.rate {
				got, err = ParseRate(tt.in)
			} else {
				got, err = ParseSize(tt.in)
			}
			if (err != nil) != tt.err {
				t.Fatalf("got %g, error %v, want error %t", got, err, tt.err)
			}
			if got != tt.want {
				t.Errorf("got %g, want %g", got, tt.want)
			}
			if math.IsNaN(got) || math.IsInf(got, 0) || got < 0 {
				t.Errorf("got %g, want a finite non-negative value", got)
			}
		})
	}
}

func TestParseBytes(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		err  bool
	}{
		{in: "4KiB", want: 4096},
		{in: "9200000000000000000", want: 9200000000000000000},
		{in: "1.5", err: true},
		{in: "1e19", err: true},                // beyond int64
		{in: "9223372036854775807", err: true}, // rounds to 2^63 as a float64
		{in: "8EiB", err: true},                // no such unit
		{in: "8388608TiB", err: true},          // 2^63 bytes
		{in: "1e400MiB", err: true},
		{in: "NaN", err: true},
		{in: "Inf", err: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseBytes(tt.in)
			if (err != nil) != tt.err {
				t.Fatalf("got %d, error %v, want error %t", got, err, tt.err)
			}
			if got != tt.want {
				t.Errorf("got %d, want %d", got, tt.want)
			}
		})
	}
}
