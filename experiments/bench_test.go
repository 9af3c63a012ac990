package experiments

import (
	"testing"
	"time"

	sim "github.com/vnsnap/vnsnap/simbackend"
)

// BenchmarkE8Scale1024 simulates E8's largest point: one VNsnap snapshot
// (memory sink) of 1,024 VMs on 256 hosts with ring TCP traffic and 64 MiB
// per VM. It reports the wall time of a run and simulated events per second.
//
//	go test ./experiments -run XXX -bench E8 -benchtime 1x
func BenchmarkE8Scale1024(b *testing.B) {
	e, _ := Lookup("e8")
	cfg := e.New(true).(*e8Config)
	cfg.VMs, cfg.Variants = []int{1024}, []string{"vnsnap/memory"}
	jobs, err := cfg.Plan(Seeds(1))
	if err != nil {
		b.Fatal(err)
	}
	var events uint64
	var wall time.Duration
	b.ResetTimer()
	for b.Loop() {
		t0 := time.Now()
		r, err := sim.Run(jobs[0].Sim)
		if err != nil {
			b.Fatal(err)
		}
		wall += time.Since(t0)
		events += r.Events
	}
	b.ReportMetric(wall.Seconds()/float64(b.N), "wall-s/run")
	b.ReportMetric(float64(events)/wall.Seconds(), "events/s")
	b.ReportMetric(float64(events)/float64(b.N), "events/run")
}
