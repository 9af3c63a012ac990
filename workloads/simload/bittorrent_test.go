package simload

import (
	"testing"
	"time"

	"github.com/vnsnap/vnsnap/core"
	sim "github.com/vnsnap/vnsnap/simbackend"
)

func btConfig(t *testing.T, peers int, file int64) sim.Config {
	t.Helper()
	w, err := BitTorrent(peers, 1, file)
	if err != nil {
		t.Fatal(err)
	}
	cfg := sim.DefaultConfig()
	cfg.Workload = w
	cfg.Hosts = 4
	return cfg
}

// TestBitTorrentSwarm runs a swarm with no snapshot and with one (and a
// restore): every peer completes with every piece verified.
func TestBitTorrentSwarm(t *testing.T) {
	cfg := btConfig(t, 8, 64<<20)
	cfg.Snapshots = 0
	base, err := sim.Run(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !base.AppOK || base.AppDoneMS < 0 || len(base.PeerDoneMS) != 7 {
		t.Fatalf("no snapshot: ok %t (%s), done %.0f ms, %d peer times", base.AppOK, base.AppError, base.AppDoneMS, len(base.PeerDoneMS))
	}
	t.Logf("baseline: swarm done at %.0f ms, peers %v", base.AppDoneMS, base.PeerDoneMS)
	for _, algo := range []core.Algorithm{core.VNsnap, core.VNsnapLog, core.COW} {
		cfg := btConfig(t, 8, 64<<20)
		cfg.Algorithm, cfg.Restore, cfg.Sink = algo, true, core.MemorySink
		cfg.Warmup = sim.Time(base.AppDoneMS/3) * time.Millisecond
		r, err := sim.Run(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if !r.AppOK || r.Orphans != 0 || r.RestoreOK == nil || !*r.RestoreOK {
			t.Errorf("%s: ok %t (%s), orphans %d, restore ok %v (%s)", algo, r.AppOK, r.AppError, r.Orphans, r.RestoreOK != nil && *r.RestoreOK, r.RestoreError)
			continue
		}
		t.Logf("%s: done at %.0f ms, restored swarm done %.0f ms after restore", algo, r.AppDoneMS, *r.RestoreAppDoneMS)
	}
}
