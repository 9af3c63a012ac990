// Command framecheck is a static test binary TestXenVNE runs in dom0: it
// reads the frame logs of a VNE's switches and checks the cut of a snapshot
// epoch, printing one line for the test to read on the console:
//
//	framecheck EPOCH VMS LOG...
//	VNSNAP-T-CUT epoch=1 sent=N orphans=N intransit=N recovered=N replayed=N lost=N missing=N
package main

import (
	"fmt"
	"io"
	"os"
	"strconv"

	"github.com/vnsnap/vnsnap/core"
	"github.com/vnsnap/vnsnap/core/cut"
	"github.com/vnsnap/vnsnap/vnet"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Println("VNSNAP-XEN-FAIL framecheck:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) < 3 {
		return fmt.Errorf("usage: framecheck EPOCH VMS LOG...")
	}
	epoch, err := strconv.Atoi(args[0])
	if err != nil {
		return err
	}
	vms, err := strconv.Atoi(args[1])
	if err != nil {
		return err
	}
	var rs []io.Reader
	for _, p := range args[2:] {
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		rs = append(rs, f)
	}
	recs, err := vnet.ReadLogs(rs...)
	if err != nil {
		return err
	}
	ch := cut.NewChecker(core.Epoch(epoch), vms)
	for _, r := range recs {
		if err := ch.Observe(r); err != nil {
			return err
		}
	}
	res := ch.Result()
	fmt.Printf("VNSNAP-T-CUT epoch=%d sent=%d orphans=%d intransit=%d recovered=%d replayed=%d lost=%d missing=%d\n",
		epoch, res.Sent, res.Orphans, res.InTransit, res.RecoveredByTCP, res.Replayed, res.Lost, len(res.MissingCuts))
	return nil
}
