package agent

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/vnsnap/vnsnap/vne"
)

// The state directory:
//
//	run/NAME.sock            switch port of VM NAME (QEMU connects to it)
//	run/NAME.console         its console
//	run/frames.log           the switch's frame log
//	snapshots/SNAP/          a snapshot taken here, while its lease lasts
//	snapshots/SNAP/NAME.img  VM NAME's image; NAME.img.part while written
//	snapshots/SNAP/COMPLETE  written by EndSnapshot(commit): the directory is whole
//	images/SNAP/NAME.img     an image received from another agent (PutImage);
//	                         NAME.img.part while it arrives (a transfer resumes it)
//
// Every name in it comes from a checked VNE or VM name, never straight from
// a request.
func runDir(state string) string       { return filepath.Join(state, "run") }
func snapshotsDir(state string) string { return filepath.Join(state, "snapshots") }
func imagesDir(state string) string    { return filepath.Join(state, "images") }

// completeMarker marks a committed snapshot directory.
const completeMarker = "COMPLETE"

const (
	imgExt  = ".img"
	partExt = ".img.part"
	sumExt  = ".img.sha256"
)

func (a *Agent) snapshotDir(snap string) string {
	return filepath.Join(snapshotsDir(a.cfg.State), snap)
}

// Cleanup removes, from an agent's state directory, every snapshot
// directory without a COMPLETE marker: a crashed agent's partial
// snapshots (their lease ended with the agent). It also removes stale
// runtime files. It returns the directories it removed.
func Cleanup(state string) ([]string, error) {
	ents, err := os.ReadDir(snapshotsDir(state))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("agent: %w", err)
	}
	var removed []string
	for _, e := range ents {
		p := filepath.Join(snapshotsDir(state), e.Name())
		if !e.IsDir() || vne.CheckVNEName(e.Name()) != nil {
			// Nothing the agent writes: leave it to the operator, but
			// never serve it.
			continue
		}
		if _, err := os.Lstat(filepath.Join(p, completeMarker)); err == nil {
			continue
		}
		if err := os.RemoveAll(p); err != nil {
			return removed, fmt.Errorf("agent: remove partial snapshot %s: %w", p, err)
		}
		removed = append(removed, p)
	}
	runEnts, _ := os.ReadDir(runDir(state))
	for _, e := range runEnts {
		if strings.HasSuffix(e.Name(), ".sock") {
			os.Remove(filepath.Join(runDir(state), e.Name()))
		}
	}
	return removed, nil
}
