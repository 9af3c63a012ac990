package simload

import (
	"testing"
	"time"

	"github.com/vnsnap/vnsnap/core"
	sim "github.com/vnsnap/vnsnap/simbackend"
)

func npbConfig(t *testing.T, kernel, class string, ranks, repeat int) sim.Config {
	t.Helper()
	w, err := NPB(kernel, class, ranks, repeat)
	if err != nil {
		t.Fatal(err)
	}
	cfg := sim.DefaultConfig()
	cfg.Workload = w
	cfg.Hosts = 4
	cfg.Warmup = 200 * time.Millisecond
	return cfg
}

// TestNPBRunsAndVerifies runs every kernel without a snapshot and with one
// (and a restore): every rank finishes and every message verifies.
func TestNPBRunsAndVerifies(t *testing.T) {
	for _, k := range []string{"EP", "IS", "CG", "MG", "FT", "LU", "BT", "SP"} {
		t.Run(k, func(t *testing.T) {
			cfg := npbConfig(t, k, "S", 4, 20)
			cfg.Snapshots = 0
			base, err := sim.Run(cfg)
			if err != nil {
				t.Fatal(err)
			}
			if !base.AppOK || base.AppDoneMS < 0 {
				t.Fatalf("no snapshot: app ok %t (%s), done at %.0f ms", base.AppOK, base.AppError, base.AppDoneMS)
			}
			for _, algo := range []core.Algorithm{core.VNsnap, core.VNsnapLog, core.StopCopy} {
				cfg := npbConfig(t, k, "S", 4, 20)
				cfg.Algorithm, cfg.Restore = algo, true
				cfg.Warmup = sim.Time(base.AppDoneMS/3) * time.Millisecond
				r, err := sim.Run(cfg)
				if err != nil {
					t.Fatal(err)
				}
				if !r.AppOK || r.Orphans != 0 || r.RestoreOK == nil || !*r.RestoreOK {
					t.Errorf("%s: app ok %t (%s), orphans %d, restore %v (%s)", algo, r.AppOK, r.AppError, r.Orphans, r.RestoreOK != nil && *r.RestoreOK, r.RestoreError)
				}
				if r.AppDoneMS < base.AppDoneMS {
					t.Errorf("%s: finished at %.0f ms with a snapshot, before the %.0f ms without", algo, r.AppDoneMS, base.AppDoneMS)
				}
				t.Logf("%s %s: baseline %.0f ms, with snapshot %.0f ms, restored run %.0f ms", k, algo, base.AppDoneMS, r.AppDoneMS, *r.RestoreAppDoneMS)
			}
		})
	}
}
