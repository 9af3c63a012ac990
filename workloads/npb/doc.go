// Package npb describes the eight NAS Parallel Benchmark kernels (EP, IS, CG,
// MG, FT, LU, BT, SP) as workload models for the simulator: pure data and pure
// functions, one MPI rank per VM. For a (kernel, class, ranks) triple, New
// returns a Profile with the per-rank memory footprint, the iteration count,
// the compute time per iteration per rank on a reference core, the dirtying
// profile (hot working set and write rate), and functions that list every
// message of one iteration and of the final verification as explicit
// (step, src, dst, bytes) tuples. Messages with the same Step may be in
// flight together; a rank starts step k+1 only after its step-k messages.
//
// # Where the numbers come from
//
// Problem sizes and iteration counts (facts, NPB 3.x; Bailey et al., "The NAS
// Parallel Benchmarks", RNR-91-002 and NAS-95-020, and the NPB 3.x
// npbparams/setparams tables):
//
//	EP  pairs 2^M:            S M=24, W 25, A 28, B 30, C 32
//	IS  keys / max key:       S 2^16/2^11, W 2^20/2^16, A 2^23/2^19, B 2^25/2^21, C 2^27/2^23; 10 iterations
//	CG  na, nonzer, niter:    S 1400,7,15  W 7000,8,15  A 14000,11,15  B 75000,13,75  C 150000,15,75; 25 inner CG steps
//	MG  grid, iterations:     S 32^3,4  W 128^3,4  A 256^3,4  B 256^3,20  C 512^3,20
//	FT  grid, iterations:     S 64^3,6  W 128x128x32,6  A 256x256x128,6  B 512x256x256,20  C 512^3,20
//	LU  grid, SSOR steps:     S 12^3,50  W 33^3,300  A 64^3,250  B 102^3,250  C 162^3,250
//	BT  grid, time steps:     S 12^3,60  W 24^3,200  A 64^3,200  B 102^3,200  C 162^3,200
//	SP  grid, time steps:     S 12^3,100 W 36^3,400  A 64^3,400  B 102^3,400  C 162^3,400
//
// Total operation counts (facts): the formulas each NPB 3.x benchmark uses to
// turn its run time into the Mop/s it reports (ep.f, is.c, cg.f, mg.f, ft.f,
// lu.f, bt.f, sp.f), reproduced in totalMop. For class A they give EP 537,
// IS 84, CG 1,496, MG 3,892, FT 7,136, LU 119,300, BT 168,300, SP 85,000 Mop,
// which match the published class-A operation counts.
//
// Compute time (ESTIMATE): totalMop / ranks / iterations / refMops, where
// refMops is the per-kernel Mop/s of the reference core: one core of a
// ~3 GHz x86-64 server (Skylake class) running the NPB 3.4 MPI code built
// with gfortran/gcc -O3 as a single rank. The refMops table is our estimate
// from typical serial class-A run times, not a measurement; it ignores
// parallel overhead, which the simulator adds by driving the messages.
//
// Footprints and dirtying (ESTIMATES): the per-rank footprint counts only the
// benchmark's main arrays (no OS, no MPI library, no ghost layers), from the
// array declarations in the NPB 3.x sources. The hot fraction is the share of
// those arrays that one iteration rewrites (read-only data such as CG's
// matrix or the forcing terms of LU/BT/SP is cold). The write rate spreads the
// hot bytes evenly over the compute time of one iteration.
//
// Communication patterns: the structure (who talks to whom, in what order)
// follows the NPB 3.x MPI codes; the message sizes are derived from the data
// each exchange moves and are marked as estimates where the code's exact
// buffer sizes differ (CG's row reduction, LU's and BT/SP's solver buffers).
// Collectives are expanded into point-to-point messages: allreduce as
// recursive doubling (power-of-two groups) or a binomial tree reduce+bcast,
// all-to-all as p(p-1) direct messages.
package npb
