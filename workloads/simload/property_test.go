package simload

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/vnsnap/vnsnap/core"
	sim "github.com/vnsnap/vnsnap/simbackend"
)

var (
	flagSeeds = flag.Int("seeds", 0, "random workload runs (default 40 with -short, 200 without)")
	flagSeed  = flag.Uint64("seed", 0, "run only this seed")
)

// randomWorkloadConfig draws a random workload run: an NPB kernel (class S
// or W, 4 to 16 ranks) or a small swarm, a consistent algorithm, a sink,
// one or two snapshots at random points, and a restore.
func randomWorkloadConfig(t *testing.T, seed uint64) (sim.Config, string) {
	r := rand.New(rand.NewPCG(seed, 0xbeef))
	var spec string
	if r.IntN(3) == 0 {
		spec = fmt.Sprintf("bittorrent-%d-%dMiB", 3+r.IntN(10), 8+r.IntN(56))
	} else {
		k := []string{"ep", "is", "cg", "mg", "ft", "lu", "bt", "sp"}[r.IntN(8)]
		ranks := []int{4, 8, 16}[r.IntN(3)]
		if k == "bt" || k == "sp" {
			ranks = []int{4, 9, 16}[r.IntN(3)]
		}
		spec = fmt.Sprintf("npb-%s-%s-%d-x%d", k, []string{"S", "W"}[r.IntN(2)], ranks, 1+r.IntN(4))
	}
	w, err := Parse(spec)
	if err != nil {
		t.Fatalf("seed %d: %s: %v", seed, spec, err)
	}
	cfg := sim.DefaultConfig()
	cfg.Seed = seed
	cfg.Workload = w
	cfg.Hosts = 1 + r.IntN(4)
	var consistent []core.Algorithm
	for _, a := range core.Algorithms() {
		if a.Consistent() {
			consistent = append(consistent, a)
		}
	}
	cfg.Algorithm = consistent[r.IntN(len(consistent))]
	cfg.Sink = core.Sink(r.IntN(2))
	cfg.Warmup = time.Duration(r.IntN(800)) * time.Millisecond
	cfg.Snapshots = 1 + r.IntN(2)
	cfg.Interval = 500 * time.Millisecond
	cfg.Host.Link.Loss = []float64{0, 0, 0.001}[r.IntN(3)]
	cfg.Restore = true
	return cfg, spec
}

// TestPropertyWorkloads checks that every consistent algorithm leaves
// workloads correct: zero orphans, the run and its restore both finish and
// verify.
func TestPropertyWorkloads(t *testing.T) {
	n := *flagSeeds
	if n == 0 {
		n = 200
		if testing.Short() {
			n = 40
		}
	}
	first, last := uint64(1), uint64(n)
	if *flagSeed != 0 {
		first, last = *flagSeed, *flagSeed
	}
	for seed := first; seed <= last; seed++ {
		cfg, spec := randomWorkloadConfig(t, seed)
		res, err := sim.Run(cfg)
		if err != nil {
			t.Fatalf("seed %d (%s): %v", seed, spec, err)
		}
		var bad []string
		for _, s := range res.Snaps {
			if s.Orphans != 0 {
				bad = append(bad, fmt.Sprintf("snapshot %d: %d orphans", s.Epoch, s.Orphans))
			}
		}
		if !res.AppOK {
			bad = append(bad, "workload failed: "+res.AppError)
		}
		if res.State == "committed" && (res.RestoreOK == nil || !*res.RestoreOK) {
			bad = append(bad, "restore failed: "+res.RestoreError)
		}
		if len(bad) > 0 {
			t.Errorf("seed %d (%s, %s, %s sink, %d snapshots): %v\nrerun: go test ./workloads/simload -run TestPropertyWorkloads -seed %d -v",
				seed, spec, cfg.Algorithm, cfg.Sink, cfg.Snapshots, bad, seed)
		}
	}
}
