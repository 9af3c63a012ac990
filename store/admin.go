package store

import (
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Info summarises one snapshot for listing. Sizes are in bytes; stored sizes
// are the sizes of chunk files (compressed, with an 8-byte header).
type Info struct {
	Name      string
	ID        string // the manifest checksum: identifies the snapshot's content
	Created   time.Time
	Algorithm string
	Epoch     uint64
	VMs       []string // sorted
	Streams   int      // streams of all VMs plus extras
	Images    int      // page images of all VMs
	Logical   int64    // sum of stream and image lengths
	ChunkRefs int      // chunk references, counting repeats
	Chunks    int      // distinct chunks referenced
	// Stored is the stored size of the distinct chunks, block objects and
	// index files: the snapshot on its own.
	Stored int64
	// Exclusive is the stored size of the chunks no other snapshot in the
	// store references: what Delete followed by GC would free of the chunk
	// pool (page images are not counted: that would read every index).
	Exclusive int64
	// Added is what the snapshot's writer added to the pool when it was
	// written (chunks, block objects and indexes not already present).
	Added Added
	// Err is set, and the fields after Name are zero, if the snapshot has a
	// manifest that cannot be read or verified.
	Err error
}

// DedupRatio returns Logical/Stored: how many bytes of streams each stored
// byte holds within this snapshot (compression included). It is 0 for an
// empty snapshot.
func (i Info) DedupRatio() float64 {
	if i.Stored == 0 {
		return 0
	}
	return float64(i.Logical) / float64(i.Stored)
}

// List returns the complete snapshots in the store at root, sorted by creation
// time and then name. Directories without a manifest (unfinished or crashed
// writes) are not snapshots and are skipped; a snapshot whose manifest fails
// verification is listed with Err set. List reads only manifests.
func List(root string) ([]Info, error) {
	if err := checkRoot(root); err != nil {
		return nil, err
	}
	names, err := snapshotNames(root)
	if err != nil {
		return nil, err
	}
	var infos []Info
	var ms []*Manifest
	refs := make(map[string]int) // chunk address -> number of snapshots referencing it
	for _, name := range names {
		m, err := readManifest(root, name)
		switch {
		case errors.Is(err, ErrNotFound):
			continue
		case err != nil:
			infos = append(infos, Info{Name: name, Err: err})
			continue
		}
		ms = append(ms, m)
		for addr := range m.chunkSet() {
			refs[addr]++
		}
	}
	for _, m := range ms {
		info := Info{Name: m.Name, ID: m.Checksum, Created: m.Created, Algorithm: m.Algorithm, Epoch: m.Epoch, Added: m.Added}
		for _, vm := range m.VMs {
			info.VMs = append(info.VMs, vm.Name)
		}
		m.eachStream(func(_ string, s *Stream) {
			info.Streams++
			info.Logical += s.Length
			info.ChunkRefs += len(s.Chunks)
		})
		m.eachImage(func(_ string, im *Image) {
			info.Images++
			info.Logical += im.Length
		})
		if m.Blocks != nil {
			info.Stored += m.Blocks.Stored
		}
		for addr, stored := range m.chunkSet() {
			info.Chunks++
			info.Stored += stored
			if refs[addr] == 1 {
				info.Exclusive += stored
			}
		}
		infos = append(infos, info)
	}
	slices.SortFunc(infos, func(a, b Info) int {
		return cmp.Or(a.Created.Compare(b.Created), cmp.Compare(a.Name, b.Name))
	})
	return infos, nil
}

// chunkSet returns the distinct chunks the manifest references and their
// stored sizes.
func (m *Manifest) chunkSet() map[string]int64 {
	set := make(map[string]int64)
	m.eachStream(func(_ string, s *Stream) {
		for _, c := range s.Chunks {
			set[c.Addr] = c.Stored
		}
	})
	return set
}

// snapshotNames returns the sorted names of the directories under
// <root>/snapshots that could be snapshots, complete or not.
func snapshotNames(root string) ([]string, error) {
	entries, err := os.ReadDir(filepath.Join(root, snapshotsDir))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("store: list %s: %w", root, err)
	}
	var names []string
	for _, e := range entries {
		if e.IsDir() && ValidName(e.Name()) == nil {
			names = append(names, e.Name())
		}
	}
	return names, nil // ReadDir sorts by name
}

// Delete removes the snapshot called name from the store at root. The
// snapshot disappears atomically (its directory is renamed away before it is
// removed); its chunks stay in the pool until GC, so a Snapshot already open
// keeps reading. A snapshot with a damaged manifest can be deleted. Delete
// fails with ErrNotFound for a name with no snapshot, including the directory
// of an unfinished write (GC removes that), and with ErrWriting while a writer
// holds the name.
func Delete(root, name string) error {
	if err := checkRoot(root); err != nil {
		return err
	}
	if err := checkName("snapshot name", name); err != nil {
		return err
	}
	parent := filepath.Join(root, snapshotsDir)
	dir := filepath.Join(parent, name)
	if !exists(dir) {
		return fmt.Errorf("store: delete snapshot %q: %w", name, ErrNotFound)
	}
	lock, err := lockRoot(root, false, true)
	if err != nil {
		return fmt.Errorf("store: delete snapshot %q: %w", name, err)
	}
	defer lock.unlock()
	nlock, err := lockName(root, name)
	if err != nil {
		return err
	}
	defer nlock.release()
	if !exists(dir) {
		return fmt.Errorf("store: delete snapshot %q: %w", name, ErrNotFound)
	}
	if !exists(filepath.Join(dir, manifestFile)) {
		return fmt.Errorf("store: delete snapshot %q: %w: only the directory of an unfinished write, which GC removes", name, ErrNotFound)
	}
	trash, err := os.MkdirTemp(parent, tmpPrefix+"deleted-*")
	if err != nil {
		return fmt.Errorf("store: delete snapshot %q: %w", name, err)
	}
	if err := os.Rename(dir, filepath.Join(trash, name)); err != nil {
		os.Remove(trash)
		return fmt.Errorf("store: delete snapshot %q: %w", name, err)
	}
	if err := syncDir(parent); err != nil {
		return fmt.Errorf("store: delete snapshot %q: %w", name, err)
	}
	if err := os.RemoveAll(trash); err != nil {
		return fmt.Errorf("store: delete snapshot %q: clean up %s (GC retries): %w", name, trash, err)
	}
	return nil
}

// GCOptions tunes GC.
type GCOptions struct {
	// Wait makes GC wait until no writer or reader holds the store, instead
	// of failing with ErrBusy.
	Wait bool
	// DryRun makes GC report what it would remove, and remove nothing.
	DryRun bool
}

// GCStats reports what GC did (or, with DryRun, would do).
type GCStats struct {
	Snapshots    int   // complete snapshots whose chunks were kept
	Kept         int   // chunk files, block objects and index files kept
	Removed      int   // unreferenced chunk files, block objects and index files removed
	RemovedBytes int64 // their total size
	// Debris counts the temporary files and directories, unfinished
	// snapshot directories and stale lock files removed.
	Debris int
}

// GC removes from the store at root every chunk file that no complete
// snapshot references, the directories of unfinished or crashed writes,
// temporary files and stale lock files. It needs the store to itself: it
// holds the store's lock exclusive, so no writer, Delete or open Snapshot
// exists while it runs, and fails with ErrBusy (naming the snapshots being
// written) if one does, unless opts.Wait. A crashed process holds nothing.
// It refuses, removing nothing, if any manifest cannot be verified, since the
// chunks it references cannot be known; Delete such a snapshot first. Files
// it does not recognise are left alone.
func GC(root string, opts GCOptions) (GCStats, error) {
	var st GCStats
	if err := checkRoot(root); err != nil {
		return st, err
	}
	lock, err := lockRoot(root, true, opts.Wait)
	if err != nil {
		return st, fmt.Errorf("store: gc: %w", err)
	}
	defer lock.unlock()

	live := make(map[string]bool)
	liveBlocks := make(map[string]bool)
	liveIndexes := make(map[string]bool)
	var debris []string
	names, err := snapshotNames(root)
	if err != nil {
		return st, err
	}
	for _, name := range names {
		m, err := readManifest(root, name)
		switch {
		case errors.Is(err, ErrNotFound):
			debris = append(debris, filepath.Join(root, snapshotsDir, name))
			continue
		case err != nil:
			return st, fmt.Errorf("store: gc: refusing to collect: %w", err)
		}
		st.Snapshots++
		for addr := range m.chunkSet() {
			live[addr] = true
		}
		if err := imageRefs(root, m, liveBlocks, liveIndexes); err != nil {
			return st, fmt.Errorf("store: gc: refusing to collect: %w", err)
		}
		tmps, err := filepath.Glob(filepath.Join(root, snapshotsDir, name, tmpPrefix+"*"))
		if err != nil {
			panic(err) // constant pattern
		}
		debris = append(debris, tmps...)
	}
	for _, pattern := range []string{tmpPrefix + "*", lockPrefix + "*"} {
		tmps, err := filepath.Glob(filepath.Join(root, snapshotsDir, pattern))
		if err != nil {
			panic(err) // constant pattern
		}
		debris = append(debris, tmps...)
	}

	var emptied []string
	for _, pool := range []struct {
		dir  string
		live map[string]bool
	}{{chunksDir, live}, {blocksDir, liveBlocks}, {imagesDir, liveIndexes}} {
		dirs, err := sweep(filepath.Join(root, pool.dir), pool.live, opts.DryRun, &st, &debris)
		if err != nil {
			return st, fmt.Errorf("store: gc: %w", err)
		}
		emptied = append(emptied, dirs...)
	}
	for _, d := range debris {
		if !opts.DryRun {
			if err := os.RemoveAll(d); err != nil {
				return st, fmt.Errorf("store: gc: %w", err)
			}
		}
		st.Debris++
	}
	if !opts.DryRun {
		for _, d := range emptied {
			os.Remove(d) // only if empty
		}
	}
	return st, nil
}

// sweep removes the content-addressed files under pool (pool/ab/abcd...)
// that live does not name, counting them in st; temporary files go to
// debris, files it does not recognise stay. It returns the shard
// directories, to be removed if they end up empty.
func sweep(pool string, live map[string]bool, dryRun bool, st *GCStats, debris *[]string) ([]string, error) {
	shards, err := os.ReadDir(pool)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if err := checkRealDir(pool); err != nil {
		return nil, err // a symlink would lead the removals outside the store
	}
	var dirs []string
	for _, sh := range shards {
		if !sh.IsDir() {
			continue
		}
		dir := filepath.Join(pool, sh.Name())
		dirs = append(dirs, dir)
		files, err := os.ReadDir(dir)
		if err != nil {
			return nil, err
		}
		for _, f := range files {
			path := filepath.Join(dir, f.Name())
			switch {
			case strings.HasPrefix(f.Name(), tmpPrefix):
				*debris = append(*debris, path)
			case !validAddr(f.Name()) || f.Name()[:2] != sh.Name() || live[f.Name()]:
				st.Kept++ // unknown files are not ours to remove
			default:
				fi, err := f.Info()
				if err == nil && !dryRun {
					err = os.Remove(path)
				}
				if err != nil && !errors.Is(err, fs.ErrNotExist) {
					return nil, err
				}
				st.Removed++
				if fi != nil {
					st.RemovedBytes += fi.Size()
				}
			}
		}
	}
	return dirs, nil
}
