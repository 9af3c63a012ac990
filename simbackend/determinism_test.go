package sim

import (
	"runtime"
	"testing"

	"github.com/vnsnap/vnsnap/core"
)

// TestDeterminism runs the same seed twice, with different GOMAXPROCS, and
// compares trace hashes, for every algorithm in every mode (observed QEMU,
// observed Xen, driven); a different seed must give a different hash.
func TestDeterminism(t *testing.T) {
	for _, algo := range core.Algorithms() {
		for m := range simModes {
			t.Run(algo.String()+"/"+simMode(m).String(), func(t *testing.T) {
				determinism(t, algo, simMode(m))
			})
		}
	}
}

// determinism runs one random VNE twice on its seed and once on the next,
// in mode m.
func determinism(t *testing.T, algo core.Algorithm, m simMode) {
	cfg := randomConfig(7, algo)
	m.apply(&cfg)
	cfg.VMs, cfg.Hosts = 12, 3
	prev := runtime.GOMAXPROCS(1)
	a, err := Run(cfg)
	runtime.GOMAXPROCS(prev)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Run(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if a.TraceHash != b.TraceHash || a.Events != b.Events {
		t.Errorf("same seed: hashes %s and %s, events %d and %d; want equal", a.TraceHash, b.TraceHash, a.Events, b.Events)
	}
	cfg.Seed++
	c, err := Run(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if c.TraceHash == a.TraceHash {
		t.Errorf("seeds %d and %d: both hash %s, want different", cfg.Seed-1, cfg.Seed, a.TraceHash)
	}
}
