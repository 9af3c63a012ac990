package agent

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/vnsnap/vnsnap/internal/regfile"
	"github.com/vnsnap/vnsnap/vne"
)

// The state directory:
//
//	run/NAME.sock            switch port of VM NAME (QEMU connects to it)
//	run/NAME.console         its console
//	run/frames.log           the switch's frame log
//	snapshots/SNAP/          a snapshot taken here, while its lease lasts
//	snapshots/SNAP/AGENT     written by BeginSnapshot first: the agent made the directory
//	snapshots/SNAP/NAME.img  VM NAME's image; NAME.img.part while written
//	snapshots/SNAP/COMPLETE  written by EndSnapshot(commit): the directory is whole
//	images/SNAP/NAME.img     an image received from another agent (PutImage);
//	                         NAME.img.part while it arrives (a transfer resumes it)
//
// Every name in it comes from a checked VNE or VM name, never straight from
// a request. Every rename and every directory the agent makes is followed by
// an fsync of the directory holding it (durable.SyncDir), so what a reply reported
// done survives a crash of the host.
func runDir(state string) string       { return filepath.Join(state, "run") }
func snapshotsDir(state string) string { return filepath.Join(state, "snapshots") }
func imagesDir(state string) string    { return filepath.Join(state, "images") }

// completeMarker marks a committed snapshot directory.
const completeMarker = "COMPLETE"

// ownerMarker marks a snapshot directory the agent made; it holds
// ownerLine of the directory's name.
const ownerMarker = "AGENT"

// ownerLine is the content of snapshot snap's ownerMarker.
func ownerLine(snap string) string { return "vnsnap agent snapshot " + snap + "\n" }

const (
	imgExt  = ".img"
	partExt = ".img.part"
	sumExt  = ".img.sha256"
)

func (a *Agent) snapshotDir(snap string) string {
	return filepath.Join(snapshotsDir(a.cfg.State), snap)
}

// snapState is what a snapshot directory provably is.
type snapState int

const (
	snapAbsent   snapState = iota // no such directory
	snapPartial                   // the agent's, never committed: the agent may remove it
	snapComplete                  // committed
	snapForeign                   // not provably the agent's: left alone, never served
)

// statSnapshot tells what directory dir of snapshot snap is. It is
// partial (the agent's, uncommitted) only if COMPLETE does not exist in it
// and either its ownerMarker holds ownerLine(snap), or it holds nothing but
// what a crash between BeginSnapshot's Mkdir and the end of markSnapshotDir
// leaves: nothing at all, or a marker with a beginning of that line. Anything else is foreign. An error that
// leaves the question open (anything but "does not exist") is returned.
func statSnapshot(dir, snap string) (snapState, error) {
	fi, err := os.Lstat(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return snapAbsent, nil
	case err != nil:
		return 0, err
	case !fi.IsDir():
		return snapForeign, nil
	}
	if _, err := os.Lstat(filepath.Join(dir, completeMarker)); err == nil {
		return snapComplete, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return 0, err
	}
	want := ownerLine(snap)
	marker := filepath.Join(dir, ownerMarker)
	mi, err := os.Lstat(marker)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return holdsOnly(dir, 0) // partial if made, the crash came before the marker
	case err != nil:
		return 0, err
	case !mi.Mode().IsRegular() || mi.Size() > int64(len(want)):
		return snapForeign, nil
	}
	b, err := regfile.ReadFile(marker, int64(len(want)))
	if err != nil {
		return 0, err
	}
	if string(b) == want {
		return snapPartial, nil
	}
	if !strings.HasPrefix(want, string(b)) {
		return snapForeign, nil
	}
	return holdsOnly(dir, 1) // partial if the crash came while the marker was written
}

// holdsOnly tells whether dir holds n entries and nothing else (what a
// crash inside markSnapshotDir leaves: partial) or more (foreign).
func holdsOnly(dir string, n int) (snapState, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	if len(ents) == n {
		return snapPartial, nil
	}
	return snapForeign, nil
}

// Cleanup removes, from an agent's state directory, every snapshot
// directory the agent provably made and never committed (statSnapshot): a
// crashed agent's partial snapshots (their lease ended with the agent).
// Anything else is left to the operator and never served. It also removes
// stale runtime files. It returns the directories it removed; a directory
// whose state cannot be read (an I/O or permission error) is kept and
// named in the error.
func Cleanup(state string) ([]string, error) {
	ents, err := os.ReadDir(snapshotsDir(state))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("agent: %w", err)
	}
	var removed []string
	var errs []error
	for _, e := range ents {
		p := filepath.Join(snapshotsDir(state), e.Name())
		if !e.IsDir() || vne.CheckVNEName(e.Name()) != nil {
			continue // nothing the agent writes
		}
		st, err := statSnapshot(p, e.Name())
		if err != nil {
			errs = append(errs, fmt.Errorf("agent: snapshot directory %s kept: cannot tell whether it is a partial snapshot: %w", p, err))
			continue
		}
		if st != snapPartial {
			continue
		}
		if err := os.RemoveAll(p); err != nil {
			errs = append(errs, fmt.Errorf("agent: remove partial snapshot %s: %w", p, err))
			continue
		}
		removed = append(removed, p)
	}
	runEnts, _ := os.ReadDir(runDir(state))
	for _, e := range runEnts {
		if strings.HasSuffix(e.Name(), ".sock") {
			os.Remove(filepath.Join(runDir(state), e.Name()))
		}
	}
	return removed, errors.Join(errs...)
}
