package npb

import (
	"errors"
	"fmt"
	"math"
	"time"
)

// Kernel names one NPB kernel or pseudo-application.
type Kernel string

// The eight NPB kernels and pseudo-applications.
const (
	EP Kernel = "EP"
	IS Kernel = "IS"
	CG Kernel = "CG"
	MG Kernel = "MG"
	FT Kernel = "FT"
	LU Kernel = "LU"
	BT Kernel = "BT"
	SP Kernel = "SP"
)

// Kernels lists every kernel in a fixed order.
var Kernels = [...]Kernel{EP, IS, CG, MG, FT, LU, BT, SP}

// Class names an NPB problem class.
type Class string

// The NPB problem classes this package knows.
const (
	ClassS Class = "S"
	ClassW Class = "W"
	ClassA Class = "A"
	ClassB Class = "B"
	ClassC Class = "C"
)

// Classes lists every class in increasing size.
var Classes = [...]Class{ClassS, ClassW, ClassA, ClassB, ClassC}

// MinRanks and MaxRanks bound the rank (VM) counts New accepts.
const (
	MinRanks = 4
	MaxRanks = 64
)

// Errors New returns for caller mistakes; test with errors.Is.
var (
	ErrUnknownKernel = errors.New("npb: unknown kernel")
	ErrUnknownClass  = errors.New("npb: unknown class")
	ErrRankRange     = errors.New("npb: rank count out of range")
	ErrRankShape     = errors.New("npb: rank count not allowed for kernel")
	ErrTooSmall      = errors.New("npb: problem too small for rank count")
)

// Message is one point-to-point message. Messages with equal Step may be in
// flight together; a rank sends its step k+1 messages only after it has
// received its step k messages.
type Message struct {
	Step     int
	Src, Dst int
	Bytes    int64
}

// Profile is the workload model of one (kernel, class, ranks) run. It is a
// value; every method is a pure function of it.
type Profile struct {
	Kernel Kernel
	Class  Class
	Ranks  int

	// Iterations is the number of timed iterations (EP: batches of 2^16
	// pairs per rank; CG: outer iterations of 25 CG steps each).
	Iterations int
	// FootprintBytes is the per-rank memory of the benchmark's main arrays.
	FootprintBytes int64
	// TotalMop is the whole run's operation count (NPB's Mop/s formula).
	TotalMop float64
	// RefMops is the reference core's Mop/s for this kernel (estimate).
	RefMops float64
	// ComputePerIter is one rank's compute time for one iteration on the
	// reference core: TotalMop / Ranks / Iterations / RefMops.
	ComputePerIter time.Duration
	// HotFraction is the fraction of FootprintBytes written per iteration.
	HotFraction float64
	// WriteRate is bytes written per second of compute per rank:
	// HotFraction * FootprintBytes / ComputePerIter.
	WriteRate float64

	size size
	grid grid
}

// size holds the NPB problem-size parameters of one (kernel, class).
type size struct {
	nx, ny, nz int   // grid (MG, FT, LU, BT, SP)
	m          int   // EP: log2 pairs
	keys, maxK int64 // IS
	na, nonzer int   // CG
	iters      int   // NPB iteration count
}

// grid is the process layout derived from the rank count.
type grid struct {
	px, py, pz int // MG 3-D, LU/CG 2-D (pz=1), FT 2-D (py=1 for slabs)
	q          int // BT/SP: sqrt(ranks), cells per rank
}

var sizes = map[Kernel]map[Class]size{
	EP: {ClassS: {m: 24}, ClassW: {m: 25}, ClassA: {m: 28}, ClassB: {m: 30}, ClassC: {m: 32}},
	IS: {
		ClassS: {keys: 1 << 16, maxK: 1 << 11, iters: 10},
		ClassW: {keys: 1 << 20, maxK: 1 << 16, iters: 10},
		ClassA: {keys: 1 << 23, maxK: 1 << 19, iters: 10},
		ClassB: {keys: 1 << 25, maxK: 1 << 21, iters: 10},
		ClassC: {keys: 1 << 27, maxK: 1 << 23, iters: 10},
	},
	CG: {
		ClassS: {na: 1400, nonzer: 7, iters: 15},
		ClassW: {na: 7000, nonzer: 8, iters: 15},
		ClassA: {na: 14000, nonzer: 11, iters: 15},
		ClassB: {na: 75000, nonzer: 13, iters: 75},
		ClassC: {na: 150000, nonzer: 15, iters: 75},
	},
	MG: {
		ClassS: {nx: 32, ny: 32, nz: 32, iters: 4},
		ClassW: {nx: 128, ny: 128, nz: 128, iters: 4},
		ClassA: {nx: 256, ny: 256, nz: 256, iters: 4},
		ClassB: {nx: 256, ny: 256, nz: 256, iters: 20},
		ClassC: {nx: 512, ny: 512, nz: 512, iters: 20},
	},
	FT: {
		ClassS: {nx: 64, ny: 64, nz: 64, iters: 6},
		ClassW: {nx: 128, ny: 128, nz: 32, iters: 6},
		ClassA: {nx: 256, ny: 256, nz: 128, iters: 6},
		ClassB: {nx: 512, ny: 256, nz: 256, iters: 20},
		ClassC: {nx: 512, ny: 512, nz: 512, iters: 20},
	},
	LU: cube(12, 50, 33, 300, 250),
	BT: cube(12, 60, 24, 200, 200),
	SP: cube(12, 100, 36, 400, 400),
}

// cube builds the LU/BT/SP table: S and W sizes vary, A/B/C are 64, 102, 162.
func cube(sN, sIt, wN, wIt, abcIt int) map[Class]size {
	c := func(n, it int) size { return size{nx: n, ny: n, nz: n, iters: it} }
	return map[Class]size{
		ClassS: c(sN, sIt), ClassW: c(wN, wIt),
		ClassA: c(64, abcIt), ClassB: c(102, abcIt), ClassC: c(162, abcIt),
	}
}

// refMops is the reference core's Mop/s per kernel. ESTIMATE: derived from
// typical serial class-A times on a ~3 GHz Skylake-class core (EP ~15 s,
// IS ~0.8 s, CG ~1.5 s, MG ~2 s, FT ~4 s, LU ~60 s, BT ~80 s, SP ~60 s).
var refMops = map[Kernel]float64{
	EP: 36, IS: 100, CG: 1000, MG: 2000, FT: 1800, LU: 2000, BT: 2100, SP: 1400,
}

// epBatch is EP's batch of 2^MK pairs, MK=16 in ep.f.
const epBatchLog2 = 16

// New returns the profile of kernel k in class c on ranks ranks (one per VM).
// EP accepts any count in [MinRanks, MaxRanks]; IS, CG, MG, FT and LU need a
// power of two; BT and SP need a perfect square.
func New(k Kernel, c Class, ranks int) (Profile, error) {
	byClass, ok := sizes[k]
	if !ok {
		return Profile{}, fmt.Errorf("%w: %q", ErrUnknownKernel, k)
	}
	s, ok := byClass[c]
	if !ok {
		return Profile{}, fmt.Errorf("%w: %q", ErrUnknownClass, c)
	}
	if ranks < MinRanks || ranks > MaxRanks {
		return Profile{}, fmt.Errorf("%w: %s with %d ranks, want %d..%d", ErrRankRange, k, ranks, MinRanks, MaxRanks)
	}
	p := Profile{Kernel: k, Class: c, Ranks: ranks, size: s, RefMops: refMops[k]}
	switch k {
	case EP:
		// ep.f hands out 2^(M-16) batches round-robin; a rank runs ceil of its share.
		batches := 1 << (s.m - epBatchLog2)
		p.Iterations = (batches + ranks - 1) / ranks
	case IS, CG, MG, FT, LU:
		if ranks&(ranks-1) != 0 {
			return Profile{}, fmt.Errorf("%w: %s needs a power of two, got %d", ErrRankShape, k, ranks)
		}
		p.Iterations = s.iters
	case BT, SP:
		q := int(math.Round(math.Sqrt(float64(ranks))))
		if q*q != ranks {
			return Profile{}, fmt.Errorf("%w: %s needs a perfect square, got %d", ErrRankShape, k, ranks)
		}
		p.Iterations = s.iters
		p.grid.q = q
	}
	if err := p.layout(); err != nil {
		return Profile{}, err
	}
	p.TotalMop = totalMop(k, s)
	secs := p.TotalMop / float64(ranks) / float64(p.Iterations) / p.RefMops
	p.ComputePerIter = time.Duration(secs * float64(time.Second))
	foot, hot := p.memory()
	p.FootprintBytes = foot
	p.HotFraction = float64(hot) / float64(foot)
	p.WriteRate = float64(hot) / secs
	return p, nil
}

// log2 returns floor(log2(n)) for n >= 1.
func log2(n int) int {
	l := 0
	for n > 1 {
		n >>= 1
		l++
	}
	return l
}

// layout fills p.grid and rejects rank counts that leave a rank with too
// little of the grid. The minimum extents are our rule (the NPB codes have
// their own, stricter compile-time limits).
func (p *Profile) layout() error {
	s, r := p.size, p.Ranks
	tooSmall := func(what string) error {
		return fmt.Errorf("%w: %s class %s on %d ranks: %s", ErrTooSmall, p.Kernel, p.Class, r, what)
	}
	switch p.Kernel {
	case CG:
		// cg.f: npcols = 2^ceil(l/2), nprows = ranks/npcols.
		l := log2(r)
		p.grid.px = 1 << ((l + 1) / 2) // columns
		p.grid.py = r / p.grid.px      // rows
		p.grid.pz = 1
	case MG:
		// mg.f splits the grid by halving x, y, z in turn.
		g := [3]int{1, 1, 1}
		for i := 0; i < log2(r); i++ {
			g[i%3] *= 2
		}
		p.grid.px, p.grid.py, p.grid.pz = g[0], g[1], g[2]
		if s.nx/g[0] < 2 || s.ny/g[1] < 2 || s.nz/g[2] < 2 {
			return tooSmall("local grid below 2 points")
		}
	case FT:
		// ft.f: 1-D slabs when ranks <= nz, else a 2-D np1 x np2 layout.
		if r <= s.nz {
			p.grid.px, p.grid.py = r, 1
		} else {
			l := log2(r)
			p.grid.px = 1 << ((l + 1) / 2)
			p.grid.py = r / p.grid.px
		}
		p.grid.pz = 1
	case LU:
		// lu.f proc_grid: xdim = 2^(l/2), doubled if l is odd.
		l := log2(r)
		p.grid.px = 1 << (l / 2)
		if l%2 == 1 {
			p.grid.px *= 2
		}
		p.grid.py = r / p.grid.px
		p.grid.pz = 1
		if s.nx/p.grid.px < 3 || s.ny/p.grid.py < 3 {
			return tooSmall("local grid below 3x3 points")
		}
	case BT, SP:
		if s.nx/p.grid.q < 2 {
			return tooSmall("cells below 2 points per side")
		}
	}
	return nil
}

// totalMop is the NPB 3.x operation count of a whole run, from the formula
// each benchmark uses to print Mop/s.
func totalMop(k Kernel, s size) float64 {
	switch k {
	case EP:
		return math.Ldexp(1, s.m+1) / 1e6
	case IS:
		return float64(s.iters) * float64(s.keys) / 1e6
	case CG:
		nz := float64(s.nonzer * (s.nonzer + 1))
		return 2 * float64(s.iters) * float64(s.na) * (3 + nz + 25*(5+nz) + 3) / 1e6
	case MG:
		return 58 * float64(s.iters) * float64(s.nx*s.ny*s.nz) / 1e6
	case FT:
		n := float64(s.nx * s.ny * s.nz)
		ln := math.Log(n)
		return n * (14.8157 + 7.19641*ln + (5.23518+7.21113*ln)*float64(s.iters)) / 1e6
	case LU:
		n := float64(s.nx)
		return float64(s.iters) * (1984.77*n*n*n - 10923.3*n*n + 27770.9*n - 144010.0) / 1e6
	case BT:
		n := float64(s.nx)
		return float64(s.iters) * (3478.8*n*n*n - 17655.7*n*n + 28023.7*n) / 1e6
	case SP:
		n := float64(s.nx)
		return float64(s.iters) * (881.174*n*n*n - 4683.91*n*n + 11484.5*n - 19272.4) / 1e6
	}
	panic(fmt.Sprintf("npb: totalMop: unknown kernel %q", k))
}

// memory returns the per-rank footprint and the bytes rewritten per
// iteration. ESTIMATES from the main array declarations of the NPB 3.x MPI
// sources; ghost layers, MPI buffers and the OS are left out.
func (p *Profile) memory() (foot, hot int64) {
	s, r := p.size, int64(p.Ranks)
	const f8 = 8
	pts := func() int64 { return int64(s.nx) * int64(s.ny) * int64(s.nz) / r }
	switch p.Kernel {
	case EP:
		// x(2*2^16) doubles rewritten by every batch, plus q and sums.
		foot = 2 * (1 << epBatchLog2) * f8
		return foot + 4096, foot
	case IS:
		// key_array, key_buff1 (counts up to max key), key_buff2 (received
		// keys, sized 1.5x for imbalance); each iteration rewrites buff1/2.
		keys := s.keys / r * 4
		buf2 := keys * 3 / 2
		buf1 := s.maxK / r * 4
		return keys + buf1 + buf2, buf1 + buf2 + 8
	case CG:
		// Matrix a(nz) doubles + colidx(nz) ints, nz = na*(nonzer+1)^2 / ranks
		// (read-only after setup); vectors x,z,p,q,r,w plus two buffers of
		// length na/nprows, rewritten every iteration.
		nz := int64(s.na) * int64(s.nonzer+1) * int64(s.nonzer+1) / r
		vec := 8 * int64(s.na) / int64(p.grid.py) * f8
		return nz*12 + vec, vec
	case MG:
		// u and r on all levels (8/7 of the finest) plus v; u and r hot.
		n := pts()
		ur := 2 * n * 8 / 7 * f8
		return ur + n*f8, ur
	case FT:
		// u0, u1, u2 complex (16 B) and twiddle (8 B); the complex arrays are hot.
		n := pts()
		return n * (3*16 + f8), n * 3 * 16
	case LU:
		// u, rsd, frct, flux (5 each) per point; a, b, c, d 5x5 Jacobians on
		// one plane. frct is read-only after setup.
		n := pts()
		plane := int64(s.nx/p.grid.px) * int64(s.ny/p.grid.py)
		jac := 4 * 25 * plane * f8
		return n*20*f8 + jac, n*15*f8 + jac
	case BT:
		// u, rhs, forcing (5 each), six auxiliaries, 5x5x3 lhs blocks per
		// point; forcing is read-only after setup.
		n := pts()
		return n * (15 + 6 + 75) * f8, n * (10 + 6 + 75) * f8
	case SP:
		// u, rhs, forcing (5 each), 15 lhs bands, eight auxiliaries.
		n := pts()
		return n * (15 + 15 + 8) * f8, n * (10 + 15 + 8) * f8
	}
	panic(fmt.Sprintf("npb: memory: unknown kernel %q", p.Kernel))
}

// Grid returns the process grid (px, py, pz): CG columns x rows, MG 3-D,
// FT np1 x np2, LU xdim x ydim, BT/SP q x q with q cells per rank; EP and IS
// report (ranks, 1, 1).
func (p Profile) Grid() (px, py, pz int) {
	switch p.Kernel {
	case EP, IS:
		return p.Ranks, 1, 1
	case BT, SP:
		return p.grid.q, p.grid.q, 1
	}
	return p.grid.px, p.grid.py, p.grid.pz
}

// HotBytes is the number of bytes one rank writes per iteration.
func (p Profile) HotBytes() int64 {
	return int64(math.Round(p.HotFraction * float64(p.FootprintBytes)))
}
