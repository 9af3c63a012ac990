package sim

import (
	"encoding/json"
	"testing"

	"github.com/vnsnap/vnsnap/core"
)

func TestSmoke(t *testing.T) {
	for _, a := range core.Algorithms() {
		for _, sink := range []core.Sink{core.DiskSink, core.MemorySink} {
			cfg := DefaultConfig()
			cfg.Algorithm = a
			cfg.Sink = sink
			cfg.Restore = true
			cfg.MemBytes = 64 << 20
			r, err := Run(cfg)
			if err != nil {
				t.Fatal(err)
			}
			r.VMs = r.VMs[:1]
			b, _ := json.Marshal(r)
			t.Logf("%s", b)
		}
	}
}
