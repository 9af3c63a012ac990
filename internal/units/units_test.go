package units

import "testing"

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
		{in: "fast", err: true},
		{in: "-1MiB", err: true},
		{in: "", err: true},
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
				t.Fatalf("error = %v, want error %t", err, tt.err)
			}
			if got != tt.want {
				t.Errorf("got %g, want %g", got, tt.want)
			}
		})
	}
	if _, err := ParseBytes("1.5"); err == nil {
		t.Errorf("ParseBytes(1.5): got no error, want one")
	}
}
