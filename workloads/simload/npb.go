package simload

import (
	"fmt"
	"sort"
	"strings"

	"github.com/vnsnap/vnsnap/core"
	sim "github.com/vnsnap/vnsnap/simbackend"
	"github.com/vnsnap/vnsnap/workloads/npb"
)

// osBytes is the guest OS's share of a VM's memory beyond the benchmark's
// arrays; it is rarely written.
const osBytes = 128 << 20

// NPBWorkload runs one NAS Parallel Benchmark kernel, one rank per VM,
// Repeat times in a row (long-running jobs such as the paper's).
type NPBWorkload struct {
	Profile npb.Profile
	Repeat  int
}

// NPB returns the workload of kernel (EP, IS, CG, MG, FT, LU, BT, SP) in
// class (S, W, A, B, C) on ranks VMs.
func NPB(kernel, class string, ranks, repeat int) (*NPBWorkload, error) {
	p, err := npb.New(npb.Kernel(strings.ToUpper(kernel)), npb.Class(strings.ToUpper(class)), ranks)
	if err != nil {
		return nil, err
	}
	if repeat < 1 {
		repeat = 1
	}
	return &NPBWorkload{Profile: p, Repeat: repeat}, nil
}

// Name implements sim.Workload.
func (w *NPBWorkload) Name() string {
	return fmt.Sprintf("npb-%s-%s-%d", strings.ToLower(string(w.Profile.Kernel)), w.Profile.Class, w.Profile.Ranks)
}

// Configure sizes the VNE for the benchmark: one VM per rank with the
// rank's footprint plus the guest OS.
func (w *NPBWorkload) Configure(cfg *sim.Config) error {
	if cfg.VMs != w.Profile.Ranks {
		cfg.VMs = w.Profile.Ranks
	}
	mem := w.Profile.FootprintBytes + osBytes
	mem = (mem + core.PageSize - 1) / core.PageSize * core.PageSize
	cfg.MemBytes = mem
	cfg.HotBytes = max(w.Profile.HotBytes(), core.PageSize)
	cfg.HotFrac = 1
	cfg.DirtyRate = 0 // the ranks set their own rate by phase
	cfg.DirtySpread = 0
	return nil
}

// step is one communication step of one rank.
type step struct {
	sends []npb.Message
	recvs []int // peers this step receives from
}

// rankPlan is what one rank does per iteration and at the end, with the
// cumulative bytes it expects from each peer after each step.
type rankPlan struct {
	iter, final []step
	perIterFrom map[int]int64   // bytes received from a peer per iteration
	cumIter     []map[int]int64 // after step s of an iteration: bytes from each peer
	cumFinal    []map[int]int64
}

func plan(rank int, iter, final []npb.Message) rankPlan {
	rp := rankPlan{perIterFrom: map[int]int64{}}
	rp.iter, rp.cumIter = steps(rank, iter)
	for _, m := range iter {
		if m.Dst == rank {
			rp.perIterFrom[m.Src] += m.Bytes
		}
	}
	rp.final, rp.cumFinal = steps(rank, final)
	return rp
}

// steps groups a message list into this rank's steps; cum[s][peer] is the
// bytes expected from peer by the end of step s within the phase.
func steps(rank int, msgs []npb.Message) ([]step, []map[int]int64) {
	n := 0
	for _, m := range msgs {
		n = max(n, m.Step+1)
	}
	out := make([]step, n)
	cum := make([]map[int]int64, n)
	run := map[int]int64{}
	for s := 0; s < n; s++ {
		peers := map[int]bool{}
		for _, m := range msgs {
			if m.Step != s {
				continue
			}
			if m.Src == rank && m.Dst != rank {
				out[s].sends = append(out[s].sends, m)
			}
			if m.Dst == rank && m.Src != rank {
				run[m.Src] += m.Bytes
				peers[m.Src] = true
			}
		}
		for p := range peers {
			out[s].recvs = append(out[s].recvs, p)
		}
		sort.Ints(out[s].recvs)
		c := make(map[int]int64, len(run))
		for k, v := range run {
			c[k] = v
		}
		cum[s] = c
	}
	return out, cum
}

// Build implements sim.Workload: a TCP connection per communicating pair of
// ranks and a rank application per VM.
func (w *NPBWorkload) Build(world *sim.World) (sim.Instance, error) {
	p := w.Profile
	iter, final := p.IterationMessages(), p.FinalMessages()
	inst := &npbInstance{w: w, world: world}
	n := p.Ranks
	for r := 0; r < n; r++ {
		inst.ranks = append(inst.ranks, &rank{
			inst: inst, id: r, vm: world.VMs[r], plan: plan(r, iter, final),
			out: map[int]*sim.Conn{}, in: map[int]*sim.Conn{},
		})
	}
	// One connection per unordered pair that exchanges anything, made in a
	// fixed order.
	pairs := map[[2]int]bool{}
	for _, m := range append(append([]npb.Message(nil), iter...), final...) {
		a, b := min(m.Src, m.Dst), max(m.Src, m.Dst)
		if a != b {
			pairs[[2]int{a, b}] = true
		}
	}
	keys := make([][2]int, 0, len(pairs))
	for k := range pairs {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		return keys[i][0] < keys[j][0] || keys[i][0] == keys[j][0] && keys[i][1] < keys[j][1]
	})
	for _, k := range keys {
		a, b := k[0], k[1]
		ca, cb := world.Connect(core.VMID(a), core.VMID(b))
		ra, rb := inst.ranks[a], inst.ranks[b]
		ra.out[b], rb.in[a] = ca, cb
		rb.out[a], ra.in[b] = cb, ca
		ra.conns = append(ra.conns, ca)
		rb.conns = append(rb.conns, cb)
		inst.pairs = append(inst.pairs, [2]*sim.Conn{ca, cb})
	}
	for _, r := range inst.ranks {
		for _, c := range r.conns {
			c.OnDeliver = r.onDeliver
		}
		world.SetApp(core.VMID(r.id), r)
	}
	return inst, nil
}

type npbInstance struct {
	w     *NPBWorkload
	world *sim.World
	ranks []*rank
	pairs [][2]*sim.Conn
}

// Finished implements sim.Instance.
func (in *npbInstance) Finished() (sim.Time, bool) {
	var last sim.Time
	for _, r := range in.ranks {
		if !r.st.Done {
			return 0, false
		}
		last = max(last, r.doneAt)
	}
	return last, true
}

// Verify implements sim.Instance: every rank finished, and every byte each
// rank sent arrived once, in order, with the content its sender wrote.
func (in *npbInstance) Verify() error {
	for _, r := range in.ranks {
		if !r.st.Done {
			return fmt.Errorf("rank %d stopped in repetition %d iteration %d step %d", r.id, r.st.Rep, r.st.Iter, r.st.Step)
		}
	}
	for _, p := range in.pairs {
		for _, dir := range [][2]*sim.Conn{{p[0], p[1]}, {p[1], p[0]}} {
			if msg := sim.VerifyStream(dir[0], dir[1]); msg != "" {
				return fmt.Errorf("messages %v: %s", dir[0], msg)
			}
		}
	}
	return nil
}

// Report implements sim.Instance.
func (in *npbInstance) Report(res *sim.Result) {}

// rankState is a rank's whole application state: what its VM's image holds.
type rankState struct {
	Rep, Iter, Step int
	Final           bool
	Waiting         bool // the current step's messages are sent; waiting to receive
	Computing       bool
	ComputeLeft     sim.Time
	Done            bool
}

type rank struct {
	inst   *npbInstance
	id     int
	vm     *sim.VM
	plan   rankPlan
	out    map[int]*sim.Conn // to peer
	in     map[int]*sim.Conn // from peer
	conns  []*sim.Conn
	st     rankState
	doneAt sim.Time
}

const evComputed sim.Kind = 1

// Start implements sim.App: begin, or resume from a restored state.
func (r *rank) Start() {
	switch {
	case r.st.Done:
	case r.st.Computing:
		r.compute(r.st.ComputeLeft)
	case r.st.Waiting:
		r.check()
	default:
		r.next()
	}
}

// Capture implements sim.App.
func (r *rank) Capture() any {
	st := r.st
	if st.Computing {
		st.ComputeLeft = r.vm.ComputeLeft()
	}
	return st
}

// Restore implements sim.App. A rank that had finished before its snapshot
// point counts as finished at the restore.
func (r *rank) Restore(s any) {
	r.st = s.(rankState)
	if r.st.Done {
		r.doneAt = r.inst.world.Now()
	}
}

// next starts the current iteration's compute, or the final phase.
func (r *rank) next() {
	p := r.inst.w.Profile
	if r.st.Iter == p.Iterations && !r.st.Final {
		r.st.Final, r.st.Step = true, 0
		r.send()
		return
	}
	r.compute(p.ComputePerIter)
}

func (r *rank) compute(d sim.Time) {
	r.st.Computing, r.st.ComputeLeft = true, d
	r.vm.Mem.SetRate(r.inst.world.Now(), r.inst.w.Profile.WriteRate/core.PageSize)
	r.vm.Compute(d, r, evComputed, 0)
}

// Handle implements sim.Handler: the iteration's compute is done.
func (r *rank) Handle(sim.Kind, int64) {
	r.st.Computing, r.st.ComputeLeft = false, 0
	r.vm.Mem.SetRate(r.inst.world.Now(), 0)
	r.st.Step = 0
	r.send()
}

func (r *rank) steps() ([]step, []map[int]int64) {
	if r.st.Final {
		return r.plan.final, r.plan.cumFinal
	}
	return r.plan.iter, r.plan.cumIter
}

// send writes the current step's messages, then waits for its receipts.
func (r *rank) send() {
	st, _ := r.steps()
	if r.st.Step >= len(st) {
		r.endPhase()
		return
	}
	for _, m := range st[r.st.Step].sends {
		r.out[m.Dst].Write(uint64(m.Bytes))
	}
	r.st.Waiting = true
	r.check()
}

// expected returns the bytes this rank must have received from peer by the
// end of the current step.
func (r *rank) expected(peer int) uint64 {
	p := r.inst.w.Profile
	its := int64(r.st.Rep*p.Iterations + r.st.Iter)
	if r.st.Final {
		its = int64((r.st.Rep + 1) * p.Iterations)
	}
	base := its * r.plan.perIterFrom[peer]
	// Earlier repetitions' final phases.
	for k := 0; k < r.st.Rep; k++ {
		if len(r.plan.cumFinal) > 0 {
			base += r.plan.cumFinal[len(r.plan.cumFinal)-1][peer]
		}
	}
	_, cum := r.steps()
	return uint64(base + cum[r.st.Step][peer])
}

func (r *rank) onDeliver(uint64) {
	if r.st.Waiting {
		r.check()
	}
}

// check moves on while the current step's messages have all arrived.
func (r *rank) check() {
	for r.st.Waiting {
		st, _ := r.steps()
		for _, peer := range st[r.st.Step].recvs {
			if r.in[peer].Received() < r.expected(peer) {
				return
			}
		}
		r.st.Waiting = false
		r.st.Step++
		if r.st.Step < len(st) {
			for _, m := range st[r.st.Step].sends {
				r.out[m.Dst].Write(uint64(m.Bytes))
			}
			r.st.Waiting = true
			continue
		}
		r.endPhase()
	}
}

// endPhase ends an iteration or the final phase.
func (r *rank) endPhase() {
	r.st.Waiting = false
	if !r.st.Final {
		r.st.Iter++
		r.next()
		return
	}
	r.st.Rep++
	if r.st.Rep == r.inst.w.Repeat {
		r.st.Done = true
		r.doneAt = r.inst.world.Now()
		return
	}
	r.st.Iter, r.st.Final, r.st.Step = 0, false, 0
	r.next()
}
