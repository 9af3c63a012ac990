package results

import (
	"math"
	"slices"

	"gonum.org/v1/gonum/stat"
	"gonum.org/v1/gonum/stat/distuv"
)

// Summary describes a sample of values, one per seed.
type Summary struct {
	N             int
	Mean, Median  float64
	Min, Max      float64
	CILow, CIHigh float64 // the 95 % confidence interval of the mean (Student's t)
	StdDev        float64
}

// Summarize returns the summary of xs, ignoring NaNs. An empty sample gives
// NaNs; a single value gives a zero-width interval.
func Summarize(xs []float64) Summary {
	v := make([]float64, 0, len(xs))
	for _, x := range xs {
		if !math.IsNaN(x) {
			v = append(v, x)
		}
	}
	nan := math.NaN()
	if len(v) == 0 {
		return Summary{Mean: nan, Median: nan, Min: nan, Max: nan, CILow: nan, CIHigh: nan, StdDev: nan}
	}
	slices.Sort(v)
	s := Summary{N: len(v), Min: v[0], Max: v[len(v)-1]}
	s.Median = stat.Quantile(0.5, stat.LinInterp, v, nil)
	if len(v) == 1 {
		s.Mean, s.CILow, s.CIHigh = v[0], v[0], v[0]
		return s
	}
	s.Mean, s.StdDev = stat.MeanStdDev(v, nil)
	t := distuv.StudentsT{Mu: 0, Sigma: 1, Nu: float64(len(v) - 1)}.Quantile(0.975)
	h := t * s.StdDev / math.Sqrt(float64(len(v)))
	s.CILow, s.CIHigh = s.Mean-h, s.Mean+h
	return s
}

// Quantile returns the q-quantile of xs (linear interpolation), NaN if empty.
func Quantile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	v := slices.Clone(xs)
	slices.Sort(v)
	return stat.Quantile(q, stat.LinInterp, v, nil)
}

// Median returns the median of xs.
func Median(xs []float64) float64 { return Quantile(xs, 0.5) }
