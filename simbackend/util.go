package sim

import "fmt"

func sprintf(format string, a ...any) string { return fmt.Sprintf(format, a...) }

// forever is a virtual time no run reaches: a duration computed from a rate
// (bytes over a bandwidth, work over a CPU share) saturates at it, so a huge
// memory on a slow disk is a copy that never ends, not an int64 overflow that
// schedules an event in the past. Runs stop at horizon < forever, and every
// time the engine reaches stays below horizon + MaxDuration, so now+forever
// fits an int64.
const forever Time = 1 << 61

// horizon bounds the virtual time of a snapshot run.
const horizon Time = 1 << 60

// nanos converts a float count of nanoseconds to a Time, truncating as a
// conversion does, and saturating at forever (NaN too: it only arises from
// an infinite quotient).
func nanos(ns float64) Time {
	if !(ns < float64(forever)) {
		return forever
	}
	if ns <= 0 {
		return 0
	}
	return Time(ns)
}

// addSat returns a+d, saturating at forever (a and d not negative).
func addSat(a, d Time) Time {
	if d >= forever-a {
		return forever
	}
	return a + d
}
