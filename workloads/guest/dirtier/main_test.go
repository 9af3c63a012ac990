package main

import "testing"

func TestStepDetectsCorruption(t *testing.T) {
	m := newMem(8)
	var fails []int
	fail := func(p int, _ uint32, _ int, _, _ uint64) { fails = append(fails, p) }
	if m.step(8, fail) != true || len(fails) != 0 {
		t.Fatalf("clean sweep: wrapped/fails = %v, want wrap and no fails", fails)
	}
	m.words[3*pageWords+17] ^= 1
	m.step(8, fail)
	if len(fails) != 1 || fails[0] != 3 {
		t.Fatalf("got fails %v, want [3]", fails)
	}
	// A stale page (previous generation) is caught too.
	old := make([]uint64, pageWords)
	copy(old, m.words[5*pageWords:6*pageWords])
	m.step(8, fail)
	copy(m.words[5*pageWords:6*pageWords], old)
	fails = nil
	m.step(8, fail)
	if len(fails) != 1 || fails[0] != 5 {
		t.Fatalf("got fails %v, want [5]", fails)
	}
}
