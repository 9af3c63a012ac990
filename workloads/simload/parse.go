package simload

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/vnsnap/vnsnap/internal/units"
	sim "github.com/vnsnap/vnsnap/simbackend"
)

// Parse returns the workload a spec names:
//
//	npb-KERNEL-CLASS-RANKS[-xREPEAT]   e.g. npb-cg-A-16, npb-lu-B-64-x3
//	bittorrent-PEERS-FILESIZE[-SEEDS]  e.g. bittorrent-16-256MiB, bittorrent-32-1GiB-2
func Parse(spec string) (sim.Workload, error) {
	parts := strings.Split(spec, "-")
	bad := func(why string) error {
		return fmt.Errorf("workload %q: %s (want npb-KERNEL-CLASS-RANKS[-xREPEAT] or bittorrent-PEERS-FILESIZE[-SEEDS])", spec, why)
	}
	switch parts[0] {
	case "npb":
		if len(parts) < 4 || len(parts) > 5 {
			return nil, bad("wrong number of fields")
		}
		ranks, err := strconv.Atoi(parts[3])
		if err != nil {
			return nil, bad("ranks " + strconv.Quote(parts[3]) + " is not a number")
		}
		repeat := 1
		if len(parts) == 5 {
			if !strings.HasPrefix(parts[4], "x") {
				return nil, bad("repeat must look like x3")
			}
			if repeat, err = strconv.Atoi(parts[4][1:]); err != nil || repeat < 1 {
				return nil, bad("repeat " + strconv.Quote(parts[4]) + " is not a positive count")
			}
		}
		w, err := NPB(parts[1], parts[2], ranks, repeat)
		if err != nil {
			return nil, fmt.Errorf("workload %q: %w", spec, err)
		}
		return w, nil
	case "bittorrent":
		if len(parts) < 3 || len(parts) > 4 {
			return nil, bad("wrong number of fields")
		}
		peers, err := strconv.Atoi(parts[1])
		if err != nil {
			return nil, bad("peers " + strconv.Quote(parts[1]) + " is not a number")
		}
		size, err := units.ParseBytes(parts[2])
		if err != nil {
			return nil, bad(err.Error())
		}
		seeds := 1
		if len(parts) == 4 {
			if seeds, err = strconv.Atoi(parts[3]); err != nil {
				return nil, bad("seeds " + strconv.Quote(parts[3]) + " is not a number")
			}
		}
		w, err := BitTorrent(peers, seeds, size)
		if err != nil {
			return nil, fmt.Errorf("workload %q: %w", spec, err)
		}
		return w, nil
	}
	return nil, bad("unknown kind " + strconv.Quote(parts[0]))
}
