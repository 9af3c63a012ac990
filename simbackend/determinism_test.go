package sim

import (
	"runtime"
	"testing"

	"github.com/vnsnap/vnsnap/core"
)

// TestDeterminism runs the same seed twice, with different GOMAXPROCS, and
// compares trace hashes; a different seed must give a different hash.
func TestDeterminism(t *testing.T) {
	for _, algo := range core.Algorithms() {
		t.Run(algo.String(), func(t *testing.T) {
			cfg := randomConfig(7, algo)
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
		})
	}
}
