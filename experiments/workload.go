package experiments

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	sim "github.com/vnsnap/vnsnap/simbackend"
	"github.com/vnsnap/vnsnap/workloads/simload"
)

// applyWorkload sets up a workload by name on a config whose VMs field is
// the VNE size:
//   - "all-to-all", "ring", "pairs": the simulator's simple traffic
//     generator (TCP flows writing Env.FlowMiBps each);
//   - "npb:KERNEL.CLASS" or "npb:KERNEL.CLASS.xREPEAT" (npb:cg.A.x20): a NAS
//     Parallel Benchmark kernel, one rank per VM, run REPEAT times in a row;
//   - "bittorrent" or "bittorrent:MIB": a swarm of every VM sharing a file
//     of MIB MiB (128 by default) from one seeder.
//
// The workload models size the VMs' memory and dirtying themselves.
func applyWorkload(c *sim.Config, spec string) error {
	if slices.Contains(sim.Patterns, spec) {
		c.Traffic = spec
		return nil
	}
	kind, arg, _ := strings.Cut(spec, ":")
	switch kind {
	case "npb":
		parts := strings.Split(arg, ".")
		if len(parts) < 2 || len(parts) > 3 {
			return fmt.Errorf("workload %q: want npb:KERNEL.CLASS[.xREPEAT]", spec)
		}
		repeat := 1
		if len(parts) == 3 {
			n, err := strconv.Atoi(strings.TrimPrefix(parts[2], "x"))
			if err != nil || n < 1 {
				return fmt.Errorf("workload %q: bad repeat %q", spec, parts[2])
			}
			repeat = n
		}
		w, err := simload.NPB(parts[0], parts[1], c.VMs, repeat)
		if err != nil {
			return fmt.Errorf("workload %q: %w", spec, err)
		}
		c.Workload = w
		return nil
	case "bittorrent":
		size := int64(128)
		if arg != "" {
			n, err := strconv.ParseInt(arg, 10, 64)
			if err != nil || n < 1 {
				return fmt.Errorf("workload %q: bad file size %q (MiB)", spec, arg)
			}
			size = n
		}
		w, err := simload.BitTorrent(c.VMs, 1, size*mib)
		if err != nil {
			return fmt.Errorf("workload %q: %w", spec, err)
		}
		c.Workload = w
		return nil
	}
	return fmt.Errorf("unknown workload %q (want all-to-all, ring, pairs, npb:KERNEL.CLASS[.xREPEAT] or bittorrent[:MIB])", spec)
}
