package sim

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/vnsnap/vnsnap/core"
)

var (
	flagSeeds = flag.Int("seeds", 0, "number of random seeds for the property tests (default 200 with -short, 1000 without)")
	flagSeed  = flag.Uint64("seed", 0, "run the property tests on this one seed only")
)

// randomConfig draws a random VNE from seed: 2-64 VMs on 1-8 hosts, a
// random traffic pattern, link loss and dirty rate.
func randomConfig(seed uint64, algo core.Algorithm) Config {
	r := rand.New(rand.NewPCG(seed, 0xc0ffee))
	cfg := DefaultConfig()
	cfg.Seed = seed
	cfg.Algorithm = algo
	cfg.VMs = 2 + r.IntN(63)
	cfg.Hosts = 1 + r.IntN(8)
	cfg.MemBytes = int64(4+r.IntN(29)) << 20
	cfg.DirtyRate = float64(r.IntN(40)) * (1 << 20)
	cfg.Sink = core.Sink(r.IntN(2))
	cfg.Traffic = []string{"all-to-all", "ring", "pairs"}[r.IntN(3)]
	flows := 1
	if cfg.Traffic == "all-to-all" {
		flows = cfg.VMs - 1
	}
	cfg.FlowRate = float64(128<<10+r.IntN(1<<20)) / float64(flows)
	cfg.UDP = r.IntN(2) == 0
	cfg.Host.Link.Loss = []float64{0, 0, 0.001, 0.01}[r.IntN(4)]
	cfg.Host.DiskBandwidth = float64(50+r.IntN(450)) * 1e6
	cfg.Warmup = 300 * time.Millisecond
	cfg.RunOn = 300 * time.Millisecond
	cfg.Restore = true
	return cfg
}

func propertySeeds(t *testing.T) []uint64 {
	if *flagSeed != 0 {
		return []uint64{*flagSeed}
	}
	n := *flagSeeds
	if n == 0 {
		n = 1000
		if testing.Short() {
			n = 200
		}
	}
	seeds := make([]uint64, n)
	for i := range seeds {
		seeds[i] = uint64(i + 1)
	}
	return seeds
}

// rerun returns the command that reruns one seed of a (sub)test.
func rerun(name string, seed uint64) string {
	parts := strings.Split(name, "/")
	for i, p := range parts {
		parts[i] = "^" + p + "$"
	}
	return fmt.Sprintf("go test ./simbackend -run '%s' -seed %d -v", strings.Join(parts, "/"), seed)
}

// TestPropertyConsistent checks that every consistent algorithm produces
// zero orphans on every random VNE, and that the snapshot commits.
func TestPropertyConsistent(t *testing.T) {
	seeds := propertySeeds(t)
	for _, algo := range core.Algorithms() {
		if !algo.Consistent() {
			continue
		}
		t.Run(algo.String(), func(t *testing.T) {
			t.Parallel()
			for _, seed := range seeds {
				cfg := randomConfig(seed, algo)
				res, err := Run(cfg)
				if err != nil {
					t.Fatalf("seed %d: %v\nrerun: %s", seed, err, rerun("TestPropertyConsistent/"+algo.String(), seed))
				}
				var problems []string
				if res.State != "committed" {
					problems = append(problems, "state "+res.State+", want committed")
				}
				if res.Orphans != 0 {
					problems = append(problems, fmt.Sprintf("%d orphans, want 0", res.Orphans))
				}
				if !res.StreamsOK {
					problems = append(problems, "streams incomplete in the original run")
				}
				if res.RestoreOK == nil || !*res.RestoreOK {
					problems = append(problems, "restore failed: "+res.RestoreError)
				}
				if algo == core.VNsnapLog {
					// Every in-transit frame that reached its receiver's
					// switch is in the log.
					if res.Replayed+res.NetDropped != res.InTransit {
						problems = append(problems, fmt.Sprintf("%d of %d in-transit frames replayed (%d dropped by the network), want all the others",
							res.Replayed, res.InTransit, res.NetDropped))
					}
					// Without drops of any kind, nothing sent before a
					// snapshot point may need retransmitting after restore.
					lossless := res.Dropped+res.DroppedQueue+res.DroppedLoss == 0
					if lossless && res.RestoreRetx != nil && *res.RestoreRetx != 0 {
						problems = append(problems, fmt.Sprintf("%d bytes retransmitted after restore on a lossless run, want 0", *res.RestoreRetx))
					}
				}
				if res.Replayed != 0 && algo != core.VNsnapLog {
					problems = append(problems, fmt.Sprintf("%d frames replayed without a log", res.Replayed))
				}
				if len(problems) > 0 {
					t.Errorf("seed %d (%d VMs on %d hosts, %s traffic, %s sink, loss %g): %s\nrerun: %s",
						seed, cfg.VMs, cfg.Hosts, cfg.Traffic, cfg.Sink, cfg.Host.Link.Loss, strings.Join(problems, "; "),
						rerun("TestPropertyConsistent/"+algo.String(), seed))
				}
			}
		})
	}
}

// TestPropertyUncoordinatedHasOrphans checks that the checker bites: live
// snapshots without colouring produce orphans on most random VNEs.
func TestPropertyUncoordinatedHasOrphans(t *testing.T) {
	seeds := propertySeeds(t)
	with := 0
	for _, seed := range seeds {
		res, err := Run(randomConfig(seed, core.Uncoordinated))
		if err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		if res.Orphans > 0 {
			with++
		}
	}
	if len(seeds) > 1 && with*2 <= len(seeds) {
		t.Errorf("orphans found on %d of %d seeds, want most", with, len(seeds))
	}
	t.Logf("uncoordinated: orphans on %d of %d seeds", with, len(seeds))
}
