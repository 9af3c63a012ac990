// Package simload runs vnsnap's workload models inside the simulator: the
// NAS Parallel Benchmark kernels of workloads/npb as MPI-like ranks (one per
// VM) exchanging their messages over simulated TCP, and the BitTorrent swarm
// of workloads/bittorrent. Each application keeps its state small and
// explicit (which iteration, which communication step, how much compute is
// left) so that a VM's snapshot captures it, and each workload verifies its
// own result: every rank's messages arrive, every byte with the content its
// sender wrote; every piece verifies.
package simload
