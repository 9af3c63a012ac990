package npb

import "fmt"

// IterationMessages lists every message of one iteration, ordered by Step,
// then Src, then Dst. Every iteration of a kernel has the same pattern.
func (p Profile) IterationMessages() []Message {
	var b builder
	switch p.Kernel {
	case EP:
		// Batches are independent: no messages until the final reduction.
	case IS:
		p.isIteration(&b)
	case CG:
		p.cgIteration(&b)
	case MG:
		p.mgIteration(&b)
	case FT:
		p.ftIteration(&b)
	case LU:
		p.luIteration(&b)
	case BT, SP:
		p.multiPartitionIteration(&b)
	default:
		panic(fmt.Sprintf("npb: IterationMessages: unknown kernel %q", p.Kernel))
	}
	sortMessages(b.msgs)
	return b.msgs
}

// FinalMessages lists the messages of the verification after the last
// iteration: a global reduction of the checksums (IS: also the boundary key
// check between neighbouring ranks).
func (p Profile) FinalMessages() []Message {
	var b builder
	all := ranksRange(p.Ranks)
	switch p.Kernel {
	case EP:
		b.treeAllreduce(all, 12*8) // sx, sy and q(0:9)
	case IS:
		for r := 0; r+1 < p.Ranks; r++ {
			b.add(r, r+1, 4) // last key to the next rank
		}
		b.next()
		b.treeAllreduce(all, 4) // count of correctly sorted keys
	case CG, MG, FT:
		b.treeAllreduce(all, 16) // zeta / rnm2 / checksum
	case LU, BT, SP:
		b.treeAllreduce(all, 5*8*2) // residual and error norms, 5 each
	default:
		panic(fmt.Sprintf("npb: FinalMessages: unknown kernel %q", p.Kernel))
	}
	sortMessages(b.msgs)
	return b.msgs
}

// builder accumulates messages step by step.
type builder struct {
	msgs []Message
	step int
	used bool // a message was added in the current step
}

func (b *builder) add(src, dst int, bytes int64) {
	if src == dst {
		return // a local copy, not a message
	}
	if bytes < 1 {
		bytes = 1
	}
	b.msgs = append(b.msgs, Message{Step: b.step, Src: src, Dst: dst, Bytes: bytes})
	b.used = true
}

// next closes the current step if it holds any message.
func (b *builder) next() {
	if b.used {
		b.step++
		b.used = false
	}
}

func ranksRange(n int) []int {
	r := make([]int, n)
	for i := range r {
		r[i] = i
	}
	return r
}

// recursiveDoubling is an allreduce inside a power-of-two group: log2(n)
// steps in which every member exchanges bytes with its partner.
func (b *builder) recursiveDoubling(group []int, bytes int64) {
	for d := 1; d < len(group); d *= 2 {
		for i, r := range group {
			b.add(r, group[i^d], bytes)
		}
		b.next()
	}
}

// treeAllreduce is a binomial-tree reduce to group[0] followed by a binomial
// broadcast: 2(n-1) messages for any group size.
func (b *builder) treeAllreduce(group []int, bytes int64) {
	n := len(group)
	top := 1
	for top < n {
		top *= 2
	}
	for d := 1; d < n; d *= 2 {
		for i := 0; i+d < n; i += 2 * d {
			b.add(group[i+d], group[i], bytes)
		}
		b.next()
	}
	for d := top / 2; d >= 1; d /= 2 {
		for i := 0; i+d < n; i += 2 * d {
			b.add(group[i], group[i+d], bytes)
		}
		b.next()
	}
}

// allToAll sends bytes from every member to every other member in one step.
func (b *builder) allToAll(group []int, bytes int64) {
	for _, s := range group {
		for _, d := range group {
			b.add(s, d, bytes)
		}
	}
	b.next()
}

// isIteration follows is.c rank(): allreduce of the 1024 bucket sizes, an
// all-to-all of send counts, then the all-to-all key exchange. Keys are
// treated as evenly spread over ranks (estimate; NPB's keys are close to it).
func (p Profile) isIteration(b *builder) {
	all := ranksRange(p.Ranks)
	r := int64(p.Ranks)
	b.recursiveDoubling(all, 1024*4)
	b.allToAll(all, 4)
	b.allToAll(all, p.size.keys/r/r*4)
}

// cgIteration is one outer CG iteration: 25 CG steps and one residual
// matvec. Each matvec sums partial products across the processor row
// (recursive halving over log2(npcols) steps) and swaps the result with the
// transpose partner; each dot product is a recursive-doubling allreduce of
// one double across the row. The halving sizes are an estimate of cg.f's
// reduce_send_lengths.
func (p Profile) cgIteration(b *builder) {
	const cgSteps = 25
	for i := 0; i < cgSteps; i++ {
		p.cgMatvec(b)
		p.cgDot(b) // p.q
		p.cgDot(b) // r.r
	}
	p.cgMatvec(b) // r = x - A.z
	p.cgDot(b)    // ||r||
	p.cgDot(b)    // outer norms x.z, z.z (two doubles, counted as one message each way)
}

// cgRank maps (row, col) to a rank: ranks fill a row first.
func (p Profile) cgRank(row, col int) int { return row*p.grid.px + col }

func (p Profile) cgMatvec(b *builder) {
	cols, rows := p.grid.px, p.grid.py
	seg := int64(p.size.na) / int64(rows) * 8
	for d := cols / 2; d >= 1; d /= 2 {
		seg /= 2
		for row := 0; row < rows; row++ {
			for col := 0; col < cols; col++ {
				b.add(p.cgRank(row, col), p.cgRank(row, col^d), seg)
			}
		}
		b.next()
	}
	// Transpose partner: (r,c) <-> (c,r) on a square grid; with cols=2*rows,
	// (r,c) <-> (c/2, 2r+c%2). Both are involutions.
	vec := int64(p.size.na) / int64(p.Ranks) * 8
	for row := 0; row < rows; row++ {
		for col := 0; col < cols; col++ {
			pr, pc := col, row
			if cols != rows {
				pr, pc = col/2, 2*row+col%2
			}
			b.add(p.cgRank(row, col), p.cgRank(pr, pc), vec)
		}
	}
	b.next()
}

func (p Profile) cgDot(b *builder) {
	cols, rows := p.grid.px, p.grid.py
	for d := 1; d < cols; d *= 2 {
		for row := 0; row < rows; row++ {
			for col := 0; col < cols; col++ {
				b.add(p.cgRank(row, col), p.cgRank(row, col^d), 8)
			}
		}
		b.next()
	}
}

// mgIteration is one V-cycle of mg.f: a halo exchange (comm3) after the
// restriction to each coarser level, one on the coarsest level, two per
// level on the way up (interpolation+residual, smoother) and one for the
// final residual on the finest level. Each exchange sends one face in both
// directions along x, then y, then z (periodic). Levels whose local grid
// would fall below one point keep one point per rank (estimate; mg.f idles
// ranks there instead).
func (p Profile) mgIteration(b *builder) {
	lt := log2(p.size.nx) // levels; level lt is the finest
	for l := lt - 1; l >= 1; l-- {
		p.mgHalo(b, l)
	}
	p.mgHalo(b, 1)
	for l := 2; l <= lt; l++ {
		p.mgHalo(b, l)
		p.mgHalo(b, l)
	}
	p.mgHalo(b, lt)
}

// mgLocal is the local extent of a level-l grid along a dimension of n
// points split over pd ranks.
func mgLocal(n, lt, l, pd int) int64 {
	e := int64(n>>(lt-l)) / int64(pd)
	if e < 1 {
		e = 1
	}
	return e
}

// MGLevelFace returns the x-face bytes (one layer of doubles) a rank sends
// on level l (1 = coarsest); useful to check sizes shrink 4x per level.
func (p Profile) MGLevelFace(l int) int64 {
	lt := log2(p.size.nx)
	return mgLocal(p.size.ny, lt, l, p.grid.py) * mgLocal(p.size.nz, lt, l, p.grid.pz) * 8
}

func (p Profile) mgHalo(b *builder, l int) {
	lt := log2(p.size.nx)
	g := [3]int{p.grid.px, p.grid.py, p.grid.pz}
	ext := [3]int64{
		mgLocal(p.size.nx, lt, l, g[0]),
		mgLocal(p.size.ny, lt, l, g[1]),
		mgLocal(p.size.nz, lt, l, g[2]),
	}
	rank := func(c [3]int) int { return c[0] + g[0]*(c[1]+g[1]*c[2]) }
	for axis := 0; axis < 3; axis++ {
		if g[axis] == 1 {
			continue
		}
		face := int64(8)
		for a := 0; a < 3; a++ {
			if a != axis {
				face *= ext[a]
			}
		}
		for r := 0; r < p.Ranks; r++ {
			c := [3]int{r % g[0], (r / g[0]) % g[1], r / (g[0] * g[1])}
			for _, dir := range [2]int{-1, 1} {
				n := c
				n[axis] = (c[axis] + dir + g[axis]) % g[axis]
				b.add(r, rank(n), face)
			}
		}
		b.next()
	}
}

// ftIteration is one iteration of ft.f: evolve, an inverse 3-D FFT whose
// global transpose is an all-to-all of the complex array (two, within rows
// then columns, on the 2-D layout), and a checksum reduced to rank 0.
func (p Profile) ftIteration(b *builder) {
	total := int64(p.size.nx) * int64(p.size.ny) * int64(p.size.nz) * 16
	local := total / int64(p.Ranks)
	np1, np2 := p.grid.px, p.grid.py
	if np2 == 1 {
		b.allToAll(ranksRange(p.Ranks), local/int64(p.Ranks))
	} else {
		for row := 0; row < np2; row++ {
			g := make([]int, np1)
			for i := range g {
				g[i] = row*np1 + i
			}
			b.allToAllNoNext(g, local/int64(np1))
		}
		b.next()
		for col := 0; col < np1; col++ {
			g := make([]int, np2)
			for i := range g {
				g[i] = i*np1 + col
			}
			b.allToAllNoNext(g, local/int64(np2))
		}
		b.next()
	}
	// Checksum: MPI_Reduce of one complex to rank 0 (binomial tree).
	n := p.Ranks
	for d := 1; d < n; d *= 2 {
		for i := 0; i+d < n; i += 2 * d {
			b.add(i+d, i, 16)
		}
		b.next()
	}
}

func (b *builder) allToAllNoNext(group []int, bytes int64) {
	for _, s := range group {
		for _, d := range group {
			b.add(s, d, bytes)
		}
	}
}

// luIteration is one SSOR step of lu.f on the xdim x ydim grid: a face
// exchange for the right-hand side (exchange_3), then the lower-triangular
// wavefront (blts: per k-plane, receive from north and west, send south and
// east: 5 doubles per edge point) and the upper-triangular one (buts, the
// reverse). The wavefront step is k + i + j so that a plane's messages
// follow the diagonal through the grid.
func (p Profile) luIteration(b *builder) {
	px, py := p.grid.px, p.grid.py
	lx := int64(p.size.nx / px)
	ly := int64(p.size.ny / py)
	nz := int64(p.size.nz)
	rank := func(i, j int) int { return j*px + i }
	// exchange_3: full faces (5 variables, 1 layer, all k) both ways.
	for j := 0; j < py; j++ {
		for i := 0; i < px; i++ {
			if i+1 < px {
				b.add(rank(i, j), rank(i+1, j), 5*8*ly*nz)
				b.add(rank(i+1, j), rank(i, j), 5*8*ly*nz)
			}
			if j+1 < py {
				b.add(rank(i, j), rank(i, j+1), 5*8*lx*nz)
				b.add(rank(i, j+1), rank(i, j), 5*8*lx*nz)
			}
		}
	}
	b.next()
	planes := p.size.nz - 2
	diag := px + py - 2
	base := b.step
	for k := 0; k < planes; k++ {
		for j := 0; j < py; j++ {
			for i := 0; i < px; i++ {
				st := base + k + i + j
				if i+1 < px {
					b.msgs = append(b.msgs, Message{st, rank(i, j), rank(i+1, j), 5 * 8 * ly})
				}
				if j+1 < py {
					b.msgs = append(b.msgs, Message{st, rank(i, j), rank(i, j+1), 5 * 8 * lx})
				}
			}
		}
	}
	base += planes + diag
	for k := 0; k < planes; k++ {
		for j := py - 1; j >= 0; j-- {
			for i := px - 1; i >= 0; i-- {
				st := base + k + (px - 1 - i) + (py - 1 - j)
				if i > 0 {
					b.msgs = append(b.msgs, Message{st, rank(i, j), rank(i-1, j), 5 * 8 * ly})
				}
				if j > 0 {
					b.msgs = append(b.msgs, Message{st, rank(i, j), rank(i, j-1), 5 * 8 * lx})
				}
			}
		}
	}
	b.step = base + planes + diag
	b.used = false
}

// Solver buffer sizes in doubles per face point (ESTIMATES after the
// x_solve/back-substitution buffers of bt.f and sp.f): BT forward sends a
// 5x5 block and 5 right-hand sides, back-substitution 5 values; SP forward
// sends two rows of 3 lhs bands and 5 right-hand sides each (22 counting
// the pentadiagonal extras), backward two layers of 5.
var solverDoubles = map[Kernel][2]int64{BT: {30, 5}, SP: {22, 10}}

// multiPartitionIteration is one time step of BT/SP on q x q ranks with q
// cells each. Rank (i,j) owns cell c at block ((i+c)%q, (j+c)%q, c), so its
// successors are (i+1,j) in x, (i,j+1) in y and (i-1,j-1) in z.
// copy_faces sends two ghost layers of 5 variables for the q-1 cells that
// have a neighbour in each of the six directions; each solve sweeps forward
// through q cells (q-1 hand-offs to the successor) and back (q-1 to the
// predecessor).
func (p Profile) multiPartitionIteration(b *builder) {
	q := p.grid.q
	cell := int64((p.size.nx + q - 1) / q)
	face := cell * cell
	rank := func(i, j int) int { return ((i+q)%q)*q + (j+q)%q }
	succ := [3][2]int{{1, 0}, {0, 1}, {-1, -1}}
	for i := 0; i < q; i++ {
		for j := 0; j < q; j++ {
			for _, d := range succ {
				bytes := int64(q-1) * face * 2 * 5 * 8
				b.add(rank(i, j), rank(i+d[0], j+d[1]), bytes)
				b.add(rank(i, j), rank(i-d[0], j-d[1]), bytes)
			}
		}
	}
	b.next()
	buf := solverDoubles[p.Kernel]
	for _, d := range succ {
		for stage := 0; stage < q-1; stage++ {
			for i := 0; i < q; i++ {
				for j := 0; j < q; j++ {
					b.add(rank(i, j), rank(i+d[0], j+d[1]), buf[0]*face*8)
				}
			}
			b.next()
		}
		for stage := 0; stage < q-1; stage++ {
			for i := 0; i < q; i++ {
				for j := 0; j < q; j++ {
					b.add(rank(i, j), rank(i-d[0], j-d[1]), buf[1]*face*8)
				}
			}
			b.next()
		}
	}
}
