package sim

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vnsnap/vnsnap/core"
	"github.com/vnsnap/vnsnap/core/cut"
)

// Why the colour rule's decisions and the checker's orphans can be compared
// across two runs.
//
// VNsnap and Uncoordinated differ in one thing only: at a switch, a frame
// tagged with a later epoch than its receiver's port (the sender had passed
// its snapshot point when it sent it, the receiver has not) is dropped by
// VNsnap (held by VNsnap-log) and delivered by Uncoordinated. Everything that
// decides the snapshot points is blind to the network: the core's pre-copy
// rounds are paced by the hosts' disks and memory buses and by each VM's
// dirtying, which depends on its CPU speed (pauses, throttling) and not on
// frames. So for one seed both algorithms pause every VM at the same instants,
// and the two runs are identical, frame for frame (ids included, since ids
// are given in send order), up to the first frame the rule drops; from then
// on a TCP receiver answers differently and the runs part.
//
// Take any frame whose Send is in the common prefix of the two runs' sends.
// Its arrival at the receiver's switch is fixed at send time by the link's
// state, which only earlier sends (all common) shaped; so are a queue drop
// and, with loss, the loss draw (the network's random stream is consumed once
// per send). The receiver's snapshot point is the same in both runs and the
// receiver runs until it (only the snapshot pauses it). Hence, for exactly
// such frames: VNsnap's rule drops it  <=>  its tag is later than the
// receiver's epoch at arrival  <=>  in the Uncoordinated run it is received
// before the receiver's cut although it was sent after the sender's cut
// (an orphan, which the checker judges from the order of Send, Cut and
// Receive records, not from tags). The equality "orphans found by core/cut
// in the Uncoordinated run among the prefix frames = frames the rule dropped
// (VNsnap) or held (VNsnap-log) among the prefix frames" holds frame by frame
// and in the same order, and fails if either the rule or the checker is
// wrong (TestRulePropertyCatchesMutants shows both).
//
// Over TCP traffic the common prefix ends soon after the first drop, so the
// comparison covers the first crossings only. Over open-loop traffic (UDP
// datagrams at a fixed rate, no TCP), nothing a VM sends depends on what it
// receives, so the runs stay identical to the end and the comparison covers
// every frame of the window; the test checks that the prefix is indeed the
// whole run there.

// sendKey is what a Send record says about a frame, id aside.
type sendKey struct {
	vm      core.VMID
	epoch   core.Epoch
	proto   cut.Proto
	flow    uint32
	seq     uint64
	len     uint32
	ack     uint64
	revFlow uint32
}

func keyOf(r cut.Record) sendKey {
	return sendKey{r.VM, r.Epoch, r.Proto, r.Flow, r.Seq, r.Len, r.Ack, r.RevFlow}
}

// ruleTrace is what a run of a colouring algorithm sent, and the frames its
// colour rule dropped or held, in arrival order.
type ruleTrace struct {
	sends []sendKey // frame id i+1 at index i
	acted []uint64
	err   string
}

// ruleMutant changes the rule's action on a frame (nil: none).
type ruleMutant func(f *Frame, dst core.Epoch, act core.Action) core.Action

// runRule runs cfg under algo (VNsnap or VNsnapLog), recording its sends and
// the frames its rule dropped (VNsnap) or held (VNsnap-log; a hold refused by
// a full hold queue counts too: the rule said hold).
func runRule(cfg Config, algo core.Algorithm, mutate ruleMutant) (*Result, *ruleTrace, error) {
	rt := &ruleTrace{}
	cfg.Algorithm = algo
	prev := cfg.Trace
	cfg.Trace = func(r cut.Record) {
		if r.Kind == cut.Send {
			if r.Frame != uint64(len(rt.sends))+1 && rt.err == "" {
				rt.err = fmt.Sprintf("frame ids not in send order: frame %d after %d sends", r.Frame, len(rt.sends))
			}
			rt.sends = append(rt.sends, keyOf(r))
		}
		if prev != nil {
			prev(r)
		}
	}
	cfg.admit = func(f *Frame, dst core.Epoch, act core.Action) core.Action {
		if mutate != nil {
			act = mutate(f, dst, act)
		}
		if act == core.Drop || act == core.Hold || act == core.DropFull {
			rt.acted = append(rt.acted, f.ID)
		}
		return act
	}
	res, err := Run(cfg)
	return res, rt, err
}

// prefixCheck feeds a fresh checker, online, the records of an Uncoordinated
// run that concern frames sent in the common prefix with one rule run.
type prefixCheck struct {
	rule     *ruleTrace
	ck       *cut.Checker
	diverged bool
	prefix   uint64 // frames 1..prefix are common (valid once diverged, or at the end)
	sent     uint64
	err      error
}

// checkerMutant stands between a trace and a checker: it passes records on
// with feed, or holds them back, or drops them (a broken checker).
type checkerMutant func(r cut.Record, feed func(cut.Record))

func (p *prefixCheck) feed(r cut.Record) {
	if err := p.ck.Observe(r); err != nil && p.err == nil {
		p.err = err
	}
}

func (p *prefixCheck) observe(r cut.Record, mutate checkerMutant) {
	if r.Kind == cut.Send {
		p.sent = r.Frame
		if !p.diverged {
			if r.Frame > uint64(len(p.rule.sends)) || p.rule.sends[r.Frame-1] != keyOf(r) {
				p.diverged, p.prefix = true, r.Frame-1
			}
		}
	}
	if r.Kind != cut.Cut && p.diverged && r.Frame > p.prefix {
		return
	}
	if mutate != nil {
		mutate(r, p.feed)
		return
	}
	p.feed(r)
}

// end returns the number of common frames.
func (p *prefixCheck) end() uint64 {
	if p.diverged {
		return p.prefix
	}
	return min(p.sent, uint64(len(p.rule.sends)))
}

// comparison is the outcome of comparing one rule run with the
// Uncoordinated run of the same seed.
type comparison struct {
	prefix, sent, ruleSent uint64
	orphans, acted         int
	problem                string
}

// runUncoordinated runs cfg under Uncoordinated and compares, for each rule
// run, the checker's orphans among the common frames with the frames the
// rule acted on. checkerMutant, if set, may drop records before they reach
// the test's checkers (a broken checker).
func runUncoordinated(cfg Config, rules []*ruleTrace, newMutant func(vms int) checkerMutant) (*Result, []comparison, error) {
	cfg.Algorithm = core.Uncoordinated
	pcs := make([]*prefixCheck, len(rules))
	for i, rt := range rules {
		pcs[i] = &prefixCheck{rule: rt, ck: cut.NewChecker(1, cfg.VMs)}
	}
	muts := make([]checkerMutant, len(rules))
	for i := range muts {
		if newMutant != nil {
			muts[i] = newMutant(cfg.VMs)
		}
	}
	cfg.Trace = func(r cut.Record) {
		for i, p := range pcs {
			p.observe(r, muts[i])
		}
	}
	res, err := Run(cfg)
	if err != nil {
		return nil, nil, err
	}
	out := make([]comparison, len(rules))
	for i, p := range pcs {
		n := p.end()
		cr := p.ck.Result()
		c := comparison{prefix: n, sent: p.sent, ruleSent: uint64(len(p.rule.sends)), orphans: cr.Orphans}
		var acted []uint64
		for _, id := range p.rule.acted {
			if id <= n {
				acted = append(acted, id)
			}
		}
		c.acted = len(acted)
		switch {
		case p.rule.err != "":
			c.problem = p.rule.err
		case p.err != nil:
			c.problem = "checker: " + p.err.Error()
		case len(cr.MissingCuts) > 0:
			c.problem = fmt.Sprintf("no cut for VMs %v", cr.MissingCuts)
		case cr.Orphans != len(acted):
			c.problem = fmt.Sprintf("among the first %d frames the checker found %d orphans (first %v), the rule acted on %d (first %v)",
				n, cr.Orphans, cr.OrphanFrames, len(acted), acted[:min(len(acted), len(cr.OrphanFrames)+1)])
		case !slices.Equal(cr.OrphanFrames, acted[:len(cr.OrphanFrames)]):
			c.problem = fmt.Sprintf("the checker's first orphans %v differ from the rule's first frames %v",
				cr.OrphanFrames, acted[:len(cr.OrphanFrames)])
		}
		out[i] = c
	}
	return res, out, nil
}

// openLoopConfig draws a random VNE whose only traffic is UDP datagrams
// around a ring every 0.5-1 ms: what a VM sends never depends on what it
// receives, so runs of different algorithms stay identical. Its other
// parameters are drawn like randomConfig's, so that the VMs' snapshot points
// spread wider than their downtimes and datagrams cross the cut; the sink is
// the disk, as with the memory sink's fast copies a few VMs' points often
// fall within one another's downtimes and, with no TCP flows, no datagram
// crosses (the TCP variant covers the memory sink).
func openLoopConfig(seed uint64) Config {
	r := rand.New(rand.NewPCG(seed, 0x0be11))
	cfg := DefaultConfig()
	cfg.Seed = seed
	// Few VMs, or one host, and the copies run in lockstep: their points
	// fall within one another's downtimes.
	cfg.VMs = 6 + r.IntN(27)
	cfg.Hosts = 2 + r.IntN(min(7, cfg.VMs/2-1))
	cfg.MemBytes = int64(8+r.IntN(33)) << 20
	cfg.DirtyRate = float64(8+r.IntN(33)) * (1 << 20)
	cfg.DirtySpread = 0.9
	cfg.Sink = core.DiskSink
	cfg.Traffic = "none"
	cfg.UDP = true
	cfg.UDPInterval = Time(2+r.IntN(3)) * 250 * time.Microsecond
	cfg.Host.Link.Loss = []float64{0, 0, 0.001, 0.01}[r.IntN(4)]
	cfg.Host.DiskBandwidth = float64(50+r.IntN(450)) * 1e6
	cfg.Warmup = 100 * time.Millisecond
	cfg.RunOn = 100 * time.Millisecond
	// As in randomConfig: QEMU's loop with a short downtime limit, and
	// each mode in turn.
	cfg.QEMU.DowntimeLimit = Time(1+r.IntN(30)) * time.Millisecond
	simMode(seed % uint64(len(simModes))).apply(&cfg)
	return cfg
}

// dirtiedDuringCopy reports whether some VM's memory was written while it
// was being copied: a pre-copy VM that needed more than one round.
func dirtiedDuringCopy(res *Result) bool {
	for _, v := range res.VMs {
		if v.Rounds > 1 {
			return true
		}
	}
	return false
}

// TestPropertyColourRuleIsChecker checks, on random VNEs, that for the same
// seed the orphans the checker finds in an Uncoordinated run are exactly the
// frames VNsnap's colour rule drops and VNsnap-log's holds (see the comment
// at the top of this file for which frames and why), and that something was
// at stake on every seed: frames crossing from a post-snapshot sender to a
// pre-snapshot receiver, and memory dirtied during the copy.
//
// Each seed runs two VNEs: an open-loop one (UDP only: the runs stay
// identical, the comparison covers the whole window) and the random TCP VNE
// of TestPropertyConsistent (the comparison covers the common prefix, up to
// where a TCP receiver first answers differently). With -short and no
// -seeds or -seed, the TCP VNEs, three big runs each, take the first half of
// the seeds (TestPropertyConsistent checks what is at stake on all of them).
func TestPropertyColourRuleIsChecker(t *testing.T) {
	seeds := propertySeeds(t)
	for _, kind := range []string{"open-loop", "tcp"} {
		seeds := seeds
		if kind == "tcp" && testing.Short() && *flagSeeds == 0 && *flagSeed == 0 {
			seeds = seeds[:len(seeds)/2]
		}
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			var compared, dropped, redrawn int
			for _, seed := range seeds {
				for attempt := 0; attempt < maxDraws; attempt++ {
					cfg := openLoopConfig(draw(seed, attempt))
					if kind == "tcp" {
						// The window is what is compared: no restore, and
						// applications stop when the snapshot ends.
						cfg = randomConfig(draw(seed, attempt), core.Uncoordinated)
						cfg.Restore, cfg.RunOn = false, 0
					}
					problems, st := checkRuleIsChecker(cfg, kind == "open-loop", nil, nil)
					if onlyStake(problems) && attempt < maxDraws-1 {
						redrawn++
						continue
					}
					compared, dropped = compared+st.compared, dropped+st.dropped
					if len(problems) > 0 {
						t.Errorf("seed %d draw %d (%d VMs on %d hosts, %s traffic, udp %t every %v, %s sink, loss %g): %s\nrerun: %s",
							seed, attempt, cfg.VMs, cfg.Hosts, cfg.Traffic, cfg.UDP, cfg.UDPInterval, cfg.Sink, cfg.Host.Link.Loss,
							strings.Join(problems, "; "), rerun("TestPropertyColourRuleIsChecker/"+kind, seed))
					}
					break
				}
			}
			t.Logf("%s: %d seeds (%d redrawn because nothing was at stake), %d of vnsnap's %d drops among the frames common with uncoordinated, each an orphan there",
				kind, len(seeds), redrawn, compared, dropped)
		})
	}
}

// checkRuleIsChecker runs cfg under VNsnap, VNsnap-log and Uncoordinated
// and returns what is wrong, and the orphans of the Uncoordinated run.
// whole says the traffic is open-loop: the runs must then be identical to
// the end. The mutants, if set, break the rule or the checker.
func checkRuleIsChecker(cfg Config, whole bool, rm ruleMutant, cm func(vms int) checkerMutant) ([]string, ruleStats) {
	var problems []string
	var rules []*ruleTrace
	for _, algo := range []core.Algorithm{core.VNsnap, core.VNsnapLog} {
		res, rt, err := runRule(cfg, algo, rm)
		if err != nil {
			return []string{fmt.Sprintf("%s: %v", algo, err)}, ruleStats{}
		}
		rules = append(rules, rt)
		if why := atStake(algo, res); why != "" {
			problems = append(problems, fmt.Sprintf("%s: %s", algo, why))
		}
		if algo == core.VNsnap && res.Dropped != len(rt.acted) {
			problems = append(problems, fmt.Sprintf("%s: the result counts %d dropped, the rule dropped %d", algo, res.Dropped, len(rt.acted)))
		}
	}
	res, cmps, err := runUncoordinated(cfg, rules, cm)
	if err != nil {
		return append(problems, fmt.Sprintf("uncoordinated: %v", err)), ruleStats{}
	}
	for i, c := range cmps {
		algo := []core.Algorithm{core.VNsnap, core.VNsnapLog}[i]
		if c.problem != "" {
			problems = append(problems, fmt.Sprintf("%s vs uncoordinated: %s", algo, c.problem))
		}
		if whole && (c.prefix != c.sent || c.sent != c.ruleSent) {
			problems = append(problems, fmt.Sprintf("%s vs uncoordinated: open-loop runs parted after %d of %d and %d frames",
				algo, c.prefix, c.sent, c.ruleSent))
		}
		if c.acted == 0 {
			problems = append(problems, fmt.Sprintf("%s vs uncoordinated: nothing at stake: no crossing frame in the %d common frames", algo, c.prefix))
		}
	}
	if res.Orphans == 0 {
		problems = append(problems, "uncoordinated: nothing at stake: the checker found no orphan")
	}
	if whole && res.Orphans != cmps[0].orphans {
		// The run's own checker joins at the snapshot's start; over a
		// whole open-loop run it must agree with the test's.
		problems = append(problems, fmt.Sprintf("result has %d orphans, the test's checker %d", res.Orphans, cmps[0].orphans))
	}
	return problems, ruleStats{orphans: res.Orphans, compared: cmps[0].acted, dropped: len(rules[0].acted)}
}

// ruleStats is what one seed of the comparison covered: the Uncoordinated
// run's orphans, and of VNsnap's drops those among the common frames.
type ruleStats struct{ orphans, compared, dropped int }

// TestRulePropertyCatchesMutants shows that TestPropertyColourRuleIsChecker
// has teeth: a colour rule that lets half the crossing frames through, one
// that also drops frames between two post-snapshot VMs, a checker that takes
// a VM's cut one frame late (after the first frame it sent after its
// snapshot point) and one that cuts every VM at the first snapshot point each
// make it fail on every seed tried, while the real rule and checker pass on
// the same seeds.
func TestRulePropertyCatchesMutants(t *testing.T) {
	mutants := []struct {
		name string
		rule ruleMutant
		ck   func(vms int) checkerMutant
	}{
		{name: "rule lets even frames through", rule: func(f *Frame, _ core.Epoch, act core.Action) core.Action {
			if act == core.Drop && f.ID%2 == 0 {
				return core.Deliver
			}
			return act
		}},
		{name: "rule drops same-epoch datagrams after the cut", rule: func(f *Frame, dst core.Epoch, act core.Action) core.Action {
			if act == core.Deliver && f.Epoch == dst && dst > 0 && f.Proto == cut.UDP {
				return core.Drop
			}
			return act
		}},
		{name: "checker takes a VM's cut after its first frame sent after it", ck: func(int) checkerMutant {
			late := map[core.VMID]cut.Record{}
			return func(r cut.Record, feed func(cut.Record)) {
				if r.Kind == cut.Cut {
					late[r.VM] = r
					return
				}
				feed(r)
				if c, ok := late[r.VM]; ok && r.Kind == cut.Send {
					delete(late, r.VM)
					feed(c)
				}
			}
		}},
		{name: "checker cuts every VM at the first snapshot point", ck: func(n int) checkerMutant {
			done := false
			return func(r cut.Record, feed func(cut.Record)) {
				if r.Kind != cut.Cut {
					feed(r)
					return
				}
				if !done {
					done = true
					for vm := range n {
						feed(cut.Record{Kind: cut.Cut, VM: core.VMID(vm), Epoch: r.Epoch})
					}
				}
			}
		}},
	}
	for _, seed := range []uint64{1, 2, 3} {
		cfg := openLoopConfig(seed)
		if problems, _ := checkRuleIsChecker(cfg, true, nil, nil); len(problems) > 0 {
			t.Fatalf("seed %d: the real rule and checker fail: %s", seed, strings.Join(problems, "; "))
		}
		for _, m := range mutants {
			problems, _ := checkRuleIsChecker(cfg, true, m.rule, m.ck)
			// The comparison itself must see it, not only a side check.
			if !strings.Contains(strings.Join(problems, "; "), "vs uncoordinated: among the first") {
				t.Errorf("seed %d: mutant %q: the comparison found nothing wrong (%q)", seed, m.name, problems)
			}
			t.Logf("seed %d: mutant %q: %s", seed, m.name, strings.Join(problems, "; "))
		}
	}
}
