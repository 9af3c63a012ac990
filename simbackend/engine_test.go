package sim

import (
	"math/rand/v2"
	"sort"
	"testing"
	"time"
)

type recorder struct {
	eng *Engine
	got []int64
}

func (r *recorder) Handle(_ Kind, arg int64) { r.got = append(r.got, arg) }

// TestEngineOrder checks the heap against a naive sort: events fire in
// (time, scheduling order).
func TestEngineOrder(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	eng := NewEngine(1)
	r := &recorder{eng: eng}
	type ev struct {
		at  Time
		seq int64
	}
	var want []ev
	for i := int64(0); i < 5000; i++ {
		at := Time(rng.IntN(100)) * time.Millisecond
		eng.At(at, r, 0, i)
		want = append(want, ev{at, i})
	}
	sort.SliceStable(want, func(i, j int) bool { return want[i].at < want[j].at })
	for eng.Step() {
	}
	if len(r.got) != len(want) {
		t.Fatalf("fired %d events, want %d", len(r.got), len(want))
	}
	for i := range want {
		if r.got[i] != want[i].seq {
			t.Fatalf("event %d: got seq %d, want %d", i, r.got[i], want[i].seq)
		}
	}
}

func TestEngineRejectsPast(t *testing.T) {
	eng := NewEngine(1)
	r := &recorder{}
	eng.At(time.Second, r, 0, 0)
	eng.Step()
	defer func() {
		if recover() == nil {
			t.Errorf("scheduling in the past: got no panic, want one")
		}
	}()
	eng.At(time.Millisecond, r, 0, 0)
}

// chain reschedules itself: a steady state of pending events.
type chain struct {
	eng *Engine
	rng uint64
}

func (c *chain) Handle(_ Kind, arg int64) {
	c.rng = c.rng*6364136223846793005 + 1442695040888963407
	c.eng.After(Time(c.rng>>44)+1, c, 0, arg)
}

// BenchmarkEngine reports the engine's events per second with 1,000 pending
// events, each rescheduling itself (the goal is at least 5 million per
// second on one core).
func BenchmarkEngine(b *testing.B) {
	eng := NewEngine(1)
	c := &chain{eng: eng, rng: 1}
	for i := 0; i < 1000; i++ {
		eng.After(Time(i), c, 0, int64(i))
	}
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		eng.Step()
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
}

// BenchmarkSnapshot64 simulates a whole 64-VM VNE snapshot on 8 hosts end to
// end (vnsnap, memory sink, ring traffic) and reports simulated events per
// second of wall time.
func BenchmarkSnapshot64(b *testing.B) {
	cfg := DefaultConfig()
	cfg.VMs, cfg.Hosts, cfg.Sink, cfg.Traffic = 64, 8, 1, "ring"
	cfg.MemBytes = 256 << 20
	var events uint64
	start := time.Now()
	for i := 0; i < b.N; i++ {
		cfg.Seed = uint64(i + 1)
		r, err := Run(cfg)
		if err != nil {
			b.Fatal(err)
		}
		events += r.Events
	}
	b.ReportMetric(float64(events)/time.Since(start).Seconds(), "events/s")
}

// BenchmarkTCPOptions simulates a 16-VM VNE on 4 hosts (all-to-all
// traffic, so every downlink is shared) twice per iteration, with Linux's
// TCP options (SACK, delayed ACKs) and with neither (ACK every segment,
// NewReno), and reports both runs' events per second and their ratio: the
// options must not make an event dearer.
//
//	go test ./simbackend -run XXX -bench TCPOptions -benchtime 3x
func BenchmarkTCPOptions(b *testing.B) {
	cfg := DefaultConfig()
	cfg.VMs, cfg.Hosts, cfg.Sink = 16, 4, 1
	cfg.MemBytes = 64 << 20
	plain := cfg
	plain.TCP = TCPConfig{}
	var evLinux, evPlain uint64
	var wallLinux, wallPlain time.Duration
	for i := 0; i < b.N; i++ {
		for _, c := range []*Config{&cfg, &plain} {
			c.Seed = uint64(i + 1)
			t0 := time.Now()
			r, err := Run(*c)
			if err != nil {
				b.Fatal(err)
			}
			if c == &cfg {
				evLinux, wallLinux = evLinux+r.Events, wallLinux+time.Since(t0)
			} else {
				evPlain, wallPlain = evPlain+r.Events, wallPlain+time.Since(t0)
			}
		}
	}
	linux := float64(evLinux) / wallLinux.Seconds()
	plainRate := float64(evPlain) / wallPlain.Seconds()
	b.ReportMetric(linux, "linux-events/s")
	b.ReportMetric(plainRate, "plain-events/s")
	b.ReportMetric(linux/plainRate, "linux/plain")
	b.ReportMetric(float64(evLinux)/float64(evPlain), "events-linux/plain")
}
