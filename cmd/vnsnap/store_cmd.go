package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/vnsnap/vnsnap/store"
)

// The store commands read and tidy the store directly, without a supervisor:
// verify, ls, rm and gc. A damaged store makes each of them exit non-zero
// with a message naming the snapshot and file.

func runVerify(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	root := fs.String("store", defaultStore, "snapshot store directory")
	fs.Usage = func() { fmt.Fprintln(stderr, "usage: vnsnap verify [--store DIR] NAME"); fs.PrintDefaults() }
	name, err := oneArg(fs, args, "snapshot name")
	if err != nil {
		return err
	}
	s, err := store.Open(*root, name)
	if err != nil {
		return err
	}
	defer s.Close()
	probs, err := s.Verify(context.Background())
	if err != nil {
		return err
	}
	for _, p := range probs {
		fmt.Fprintln(stdout, p)
	}
	if len(probs) > 0 {
		return fmt.Errorf("snapshot %s is damaged: %d problem(s)", name, len(probs))
	}
	m := s.Manifest()
	fmt.Fprintf(stdout, "snapshot %s ok: %d VMs, %d extras, id %s\n", name, len(m.VMs), len(m.Extras), m.Checksum)
	return nil
}

func runLs(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("ls", flag.ContinueOnError)
	fs.SetOutput(stderr)
	root := fs.String("store", defaultStore, "snapshot store directory")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: vnsnap ls [--store DIR]\n\nLists the stored snapshots; exits non-zero if any is damaged.")
		fs.PrintDefaults()
	}
	if err := noArgs(fs, args); err != nil {
		return err
	}
	infos, err := store.List(*root)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	// SIZE is the logical size of the snapshot's streams and page images,
	// STORED what its distinct chunks, blocks and indexes take, NEW what its
	// writer added to the pool (the rest
	// was already stored), DEDUP SIZE/STORED (compression included).
	fmt.Fprintln(tw, "NAME\tCREATED\tALGORITHM\tEPOCH\tVMS\tSIZE\tSTORED\tNEW\tDEDUP")
	var damaged []string
	for _, in := range infos {
		if in.Err != nil {
			fmt.Fprintf(tw, "%s\tDAMAGED\t-\t-\t-\t-\t-\t-\t-\n", in.Name)
			fmt.Fprintf(stderr, "vnsnap ls: %v\n", in.Err)
			damaged = append(damaged, in.Name)
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%.1fMiB\t%.1fMiB\t%.1fMiB\t%.1fx\n", in.Name, in.Created.Local().Format(time.DateTime),
			in.Algorithm, in.Epoch, strings.Join(in.VMs, ","), mib(in.Logical), mib(in.Stored), mib(in.Added.Bytes()), in.DedupRatio())
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(damaged) > 0 {
		return fmt.Errorf("%d of %d snapshots damaged (%s); `vnsnap rm NAME` removes one", len(damaged), len(infos), strings.Join(damaged, ", "))
	}
	return nil
}

func runRm(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("rm", flag.ContinueOnError)
	fs.SetOutput(stderr)
	root := fs.String("store", defaultStore, "snapshot store directory")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: vnsnap rm [--store DIR] NAME...\n\nRemoves snapshots (damaged ones too); `vnsnap gc` then frees their chunks.")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		fmt.Fprintln(stderr, "vnsnap rm: want one or more snapshot names")
		fs.Usage()
		return errUsage
	}
	var errs []error
	removed := 0
	for _, name := range fs.Args() {
		err := store.Delete(*root, name)
		switch {
		case errors.Is(err, store.ErrNotFound):
			errs = append(errs, fmt.Errorf("no snapshot %q in %s (`vnsnap ls --store %s` lists them): %w", name, *root, *root, err))
		case err != nil:
			errs = append(errs, err)
		default:
			removed++
			fmt.Fprintf(stdout, "removed snapshot %s\n", name)
		}
	}
	if removed > 0 {
		fmt.Fprintln(stdout, "run `vnsnap gc` to free the chunks no other snapshot uses")
	}
	return errors.Join(errs...)
}

func runGc(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("gc", flag.ContinueOnError)
	fs.SetOutput(stderr)
	root := fs.String("store", defaultStore, "snapshot store directory")
	wait := fs.Bool("wait", false, "wait for running writers and readers instead of failing")
	dry := fs.Bool("n", false, "dry run: report what would be removed, remove nothing")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: vnsnap gc [--store DIR] [--wait] [-n]\n\n"+
			"Removes chunk files no complete snapshot references, unfinished snapshots left by\n"+
			"writers that died, and temporary files. It needs the store to itself: while a\n"+
			"snapshot is being written or read it fails, or with --wait waits.")
		fs.PrintDefaults()
	}
	if err := noArgs(fs, args); err != nil {
		return err
	}
	st, err := store.GC(*root, store.GCOptions{Wait: *wait, DryRun: *dry})
	switch {
	case errors.Is(err, store.ErrBusy):
		return fmt.Errorf("%w; retry when it is done, or use --wait", err)
	case errors.Is(err, store.ErrCorrupt) || errors.Is(err, store.ErrSchema):
		return fmt.Errorf("%w; `vnsnap rm` the snapshot first (its chunks cannot be known)", err)
	}
	if err != nil {
		return err
	}
	verb := "removed"
	if *dry {
		verb = "would remove"
	}
	fmt.Fprintf(stdout, "gc: %d snapshots keep %d chunk files; %s %d unreferenced chunk files (%.1fMiB) and %d temporary, unfinished or stale entries\n",
		st.Snapshots, st.Kept, verb, st.Removed, mib(st.RemovedBytes), st.Debris)
	return nil
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }
