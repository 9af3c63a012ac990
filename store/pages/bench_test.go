package pages_test

import (
	"bytes"
	"crypto/sha256"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/vnsnap/vnsnap/store"
	"github.com/vnsnap/vnsnap/store/pages"
	"github.com/zeebo/blake3"
)

// Benchmarks report ratios measured in one run, since the machine is shared:
//
//	go test ./store/pages -run XXX -bench . -benchtime 2x
//
// -pages.mib sets the size of one guest (default 64 MiB; 8 guests are held
// in memory at once).
var flagMiB = flag.Int("pages.mib", 64, "MiB of memory per generated guest in benchmarks")

// cost is wall time and the process's CPU time (user+system) of a phase.
// On a shared machine the wall time depends on the other load, so rates are
// also given per CPU-second the benchmark itself used.
type cost struct{ wall, cpu time.Duration }

func (c *cost) add(d cost) { c.wall += d.wall; c.cpu += d.cpu }

func cpuNow() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		panic(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func measure(f func()) cost {
	c0, t0 := cpuNow(), time.Now()
	f()
	return cost{time.Since(t0), cpuNow() - c0}
}

// report records a phase's MB/s per core (wall time, over GOMAXPROCS) and
// per CPU-second.
func report(b *testing.B, name string, bytes int, c cost) {
	b.ReportMetric(perCore(bytes, c.wall), name+"-MB/s/core")
	b.ReportMetric(float64(bytes)/1e6/c.cpu.Seconds(), name+"-MB/cpu-s")
}

func guestPages() int { return *flagMiB << 20 / pages.PageSize }

// parallel runs f on GOMAXPROCS goroutines over equal page-aligned parts of
// n bytes and returns the wall time.
func parallel(n int, f func(lo, hi int)) time.Duration {
	w := runtime.GOMAXPROCS(0)
	part := (n/w + pages.PageSize - 1) &^ (pages.PageSize - 1)
	t0 := time.Now()
	var wg sync.WaitGroup
	for lo := 0; lo < n; lo += part {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f(lo, min(lo+part, n))
		}()
	}
	wg.Wait()
	return time.Since(t0)
}

func memcpyCost(img, dst []byte) cost {
	return measure(func() { parallel(len(img), func(lo, hi int) { copy(dst[lo:hi], img[lo:hi]) }) })
}

func shaCost(img []byte) cost {
	return measure(func() {
		parallel(len(img), func(lo, hi int) {
			for p := lo; p < hi; p += 64 << 10 {
				sha256.Sum256(img[p:min(p+64<<10, hi)])
			}
		})
	})
}

func blake3Cost(img []byte) cost {
	return measure(func() {
		parallel(len(img), func(lo, hi int) {
			for p := lo; p < hi; p += 64 << 10 {
				blake3.Sum256(img[p:min(p+64<<10, hi)])
			}
		})
	})
}

func storeMeta() store.Meta {
	return store.Meta{Created: time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC), Algorithm: "bench"}
}

// cdcWrite writes images (vm name -> bytes) as one snapshot of the current
// store, each stream from its own goroutine, and returns the wall time and
// the bytes of chunk files the snapshot added.
func cdcWrite(b *testing.B, root, name string, imgs map[string][]byte) (cost, int64) {
	c0, t0 := cpuNow(), time.Now()
	w, err := store.Create(root, name, storeMeta())
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	for vm, img := range imgs {
		sw, err := w.Stream(vm, "memory")
		if err != nil {
			b.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := io.Copy(sw, bytes.NewReader(img)); err != nil {
				b.Error(err)
			}
			if err := sw.Close(); err != nil {
				b.Error(err)
			}
		}()
	}
	wg.Wait()
	if err := w.Commit(); err != nil {
		b.Fatal(err)
	}
	d := cost{time.Since(t0), cpuNow() - c0}
	s, err := store.Open(root, name)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	return d, s.Manifest().Added.Stored
}

// ingestAll ingests images concurrently through g and returns the wall
// time, the new bytes (objects plus encoded indexes) and the indexes.
func ingestAll(b *testing.B, g *pages.Ingester, prefix string, imgs [][]byte) (cost, int64, []*pages.Index) {
	c0, t0 := cpuNow(), time.Now()
	idx := make([]*pages.Index, len(imgs))
	sts := make([]pages.Stats, len(imgs))
	var wg sync.WaitGroup
	for i, img := range imgs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			x, st, err := g.IngestBytes(fmt.Sprintf("%s/vm%d/memory", prefix, i), img)
			if err != nil {
				b.Error(err)
				return
			}
			idx[i], sts[i] = x, st
		}()
	}
	wg.Wait()
	d := cost{time.Since(t0), cpuNow() - c0}
	var stored int64
	for i, st := range sts {
		stored += st.NewBytes
		if idx[i] != nil {
			enc, _ := idx[i].MarshalBinary()
			stored += int64(len(enc))
		}
	}
	return d, stored, idx
}

func perCore(bytes int, d time.Duration) float64 {
	return float64(bytes) / 1e6 / d.Seconds() / float64(runtime.GOMAXPROCS(0))
}

// writeFile writes data to a new file at path and fsyncs it: the disk's
// plain sequential write, the baseline for a flush.
func writeFile(b *testing.B, path string, data []byte) {
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := f.Write(data); err != nil {
		b.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		b.Fatal(err)
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkIngest: one guest's memory through the page ingester on every
// core, into memory (at the default options, blocks stored raw, and again
// with CodecS2), into a file sink and into a pack sink (fsync
// included), then its idle second snapshot into the same pack sink (mostly
// deduplicated), against a
// parallel memcpy, a parallel SHA-256 and a parallel BLAKE3 (the block
// hash) of the same bytes, in 64 KiB pieces, a plain
// sequential write of them to a file (fsync included) and the current
// store's content-defined chunking, all in the same iteration. Rates are
// MB/s per core (total over GOMAXPROCS) and MB per CPU-second; the ratios
// X/memcpy and X/sha256 are the baseline's time over the ingest's, by wall
// time (-speed) and by CPU time (-cpu), so 1 means as fast as the
// baseline.
func BenchmarkIngest(b *testing.B) {
	img := newFamily(1).guest(1, guestPages())
	second := idle(img, 77)
	dst := make([]byte, len(img))
	var tc, ts, tb, tm, ts2, tf, tp, tcdc, t2, tw cost
	for b.Loop() {
		tc.add(memcpyCost(img, dst))
		ts.add(shaCost(img))
		tb.add(blake3Cost(img))
		tw.add(measure(func() { writeFile(b, filepath.Join(b.TempDir(), "raw"), img) }))
		g, _ := pages.NewIngester(pages.NewMemSink(), pages.Options{})
		d, _, _ := ingestAll(b, g, "mem", [][]byte{img})
		g.Close()
		tm.add(d)
		g, _ = pages.NewIngester(pages.NewMemSink(), pages.Options{Codec: pages.CodecS2})
		d, _, _ = ingestAll(b, g, "mem-s2", [][]byte{img})
		g.Close()
		ts2.add(d)
		dir := b.TempDir()
		fs, _ := pages.NewFileSink(dir)
		g, _ = pages.NewIngester(fs, pages.Options{})
		d, _, _ = ingestAll(b, g, "file", [][]byte{img})
		tf.add(d)
		g.Close()
		pdir := b.TempDir()
		ps, err := pages.OpenPackSink(pdir)
		if err != nil {
			b.Fatal(err)
		}
		g, _ = pages.NewIngester(ps, pages.Options{})
		d, _, _ = ingestAll(b, g, "pack", [][]byte{img})
		tp.add(d)
		d, _, _ = ingestAll(b, g, "pack2", [][]byte{second})
		t2.add(d)
		g.Close()
		ps.Close()
		os.RemoveAll(pdir)
		root := b.TempDir()
		d, _ = cdcWrite(b, root, "s", map[string][]byte{"vm0": img})
		tcdc.add(d)
		os.RemoveAll(dir)
		os.RemoveAll(root)
	}
	n := len(img) * b.N
	report(b, "memcpy", n, tc)
	report(b, "sha256", n, ts)
	report(b, "blake3", n, tb)
	report(b, "ingest-mem", n, tm)
	report(b, "ingest-mem-s2", n, ts2)
	report(b, "ingest-file", n, tf)
	report(b, "cdc", n, tcdc)
	report(b, "ingest-pack", n, tp)
	report(b, "ingest-pack-second", n, t2)
	report(b, "diskwrite", n, tw)
	b.ReportMetric(tp.wall.Seconds()/tw.wall.Seconds(), "ingest-pack/diskwrite-time")
	b.ReportMetric(tcdc.wall.Seconds()/tp.wall.Seconds(), "ingest-pack/cdc-speed")
	for _, r := range []struct {
		name string
		c    cost
	}{{"ingest-mem", tm}, {"ingest-mem-s2", ts2}} {
		b.ReportMetric(ts.cpu.Seconds()/r.c.cpu.Seconds(), r.name+"/sha256-cpu")
		b.ReportMetric(ts.wall.Seconds()/r.c.wall.Seconds(), r.name+"/sha256-speed")
		b.ReportMetric(tc.cpu.Seconds()/r.c.cpu.Seconds(), r.name+"/memcpy-cpu")
		b.ReportMetric(tc.wall.Seconds()/r.c.wall.Seconds(), r.name+"/memcpy-speed")
	}
}

// BenchmarkBlockSize: the dedup/throughput trade-off. Per block size, 8
// like guests ingested at once into a memory sink (stored bytes include the
// indexes) and an idle guest's second snapshot; "cdc" is the current store
// on the same bytes.
func BenchmarkBlockSize(b *testing.B) {
	f := newFamily(1)
	guests := make([][]byte, 8)
	raw := 0
	for i := range guests {
		guests[i] = f.guest(uint64(i+1), guestPages())
		raw += len(guests[i])
	}
	second := idle(guests[0], 77)
	for _, bs := range []int{4 << 10, 16 << 10, 64 << 10, 256 << 10} {
		b.Run(fmt.Sprintf("block=%dKiB", bs>>10), func(b *testing.B) {
			var t, tf cost
			var stored, inc int64
			var objects int
			for b.Loop() {
				sink := pages.NewMemSink()
				g, _ := pages.NewIngester(sink, pages.Options{BlockSize: bs})
				d, s, _ := ingestAll(b, g, "s1", guests)
				_, i2, _ := ingestAll(b, g, "s2", [][]byte{second})
				g.Close()
				t.add(d)
				stored, inc = s, i2
				objects, _ = sink.Len()
				dir := b.TempDir()
				fs, _ := pages.NewFileSink(dir)
				g, _ = pages.NewIngester(fs, pages.Options{BlockSize: bs})
				d, _, _ = ingestAll(b, g, "s1", guests)
				g.Close()
				tf.add(d)
				os.RemoveAll(dir)
			}
			report(b, "ingest", raw*b.N, t)
			report(b, "ingest-file", raw*b.N, tf)
			b.ReportMetric(100*float64(stored)/float64(raw), "stored-%-of-8")
			b.ReportMetric(100*float64(inc)/float64(len(second)), "idle-new-%")
			b.ReportMetric(float64(objects)/(float64(raw)/(1<<30)), "objects/GiB")
		})
	}
	b.Run("cdc", func(b *testing.B) {
		var t cost
		var stored, inc int64
		for b.Loop() {
			root := b.TempDir()
			m := make(map[string][]byte)
			for i, g := range guests {
				m[fmt.Sprint("vm", i)] = g
			}
			var d cost
			d, stored = cdcWrite(b, root, "s1", m)
			_, inc = cdcWrite(b, root, "s2", map[string][]byte{"vm0": second})
			t.add(d)
			os.RemoveAll(root)
		}
		report(b, "ingest", raw*b.N, t)
		b.ReportMetric(100*float64(stored)/float64(raw), "stored-%-of-8")
		b.ReportMetric(100*float64(inc)/float64(len(second)), "idle-new-%")
	})
}

// BenchmarkLevel: codec and zstd level against ingest rate and stored size
// of one guest (every block new).
func BenchmarkLevel(b *testing.B) {
	img := newFamily(1).guest(1, guestPages())
	for _, c := range []struct {
		name string
		opt  pages.Options
	}{
		{"zstd-fastest", pages.Options{Codec: pages.CodecZstd, Level: zstd.SpeedFastest}},
		{"zstd-default", pages.Options{Codec: pages.CodecZstd, Level: zstd.SpeedDefault}},
		{"zstd-better", pages.Options{Codec: pages.CodecZstd, Level: zstd.SpeedBetterCompression}},
		{"s2", pages.Options{Codec: pages.CodecS2}},
		{"raw", pages.Options{Codec: pages.CodecRaw}},
	} {
		b.Run(c.name, func(b *testing.B) {
			var t cost
			var stored int64
			for b.Loop() {
				g, _ := pages.NewIngester(pages.NewMemSink(), c.opt)
				d, s, _ := ingestAll(b, g, "s", [][]byte{img})
				g.Close()
				t.add(d)
				stored = s
			}
			report(b, "ingest", len(img)*b.N, t)
			b.ReportMetric(100*float64(stored)/float64(len(img)), "stored-%")
		})
	}
}

// BenchmarkGuests is the brief's target at the default settings, into a
// pack sink: 8 like guests at once (stored bytes as % of raw, objects and
// indexes), then an idle guest's second snapshot (new bytes as % of its
// raw memory), against the current store on the same bytes.
func BenchmarkGuests(b *testing.B) {
	f := newFamily(1)
	guests := make([][]byte, 8)
	m := make(map[string][]byte)
	raw := 0
	for i := range guests {
		guests[i] = f.guest(uint64(i+1), guestPages())
		m[fmt.Sprint("vm", i)] = guests[i]
		raw += len(guests[i])
	}
	second := idle(guests[0], 77)
	var tp, tcdc cost
	var stored, inc, cdcStored, cdcInc int64
	for b.Loop() {
		dir := b.TempDir()
		ps, err := pages.OpenPackSink(dir)
		if err != nil {
			b.Fatal(err)
		}
		g, _ := pages.NewIngester(ps, pages.Options{})
		var d cost
		d, stored, _ = ingestAll(b, g, "s1", guests)
		_, inc, _ = ingestAll(b, g, "s2", [][]byte{second})
		g.Close()
		ps.Close()
		tp.add(d)
		root := b.TempDir()
		d, cdcStored = cdcWrite(b, root, "s1", m)
		_, cdcInc = cdcWrite(b, root, "s2", map[string][]byte{"vm0": second})
		tcdc.add(d)
		os.RemoveAll(dir)
		os.RemoveAll(root)
	}
	b.ReportMetric(100*float64(stored)/float64(raw), "pages-stored-%")
	b.ReportMetric(100*float64(inc)/float64(len(second)), "pages-idle-new-%")
	b.ReportMetric(100*float64(cdcStored)/float64(raw), "cdc-stored-%")
	b.ReportMetric(100*float64(cdcInc)/float64(len(second)), "cdc-idle-new-%")
	report(b, "pages", raw*b.N, tp)
	report(b, "cdc", raw*b.N, tcdc)
	b.ReportMetric(tcdc.wall.Seconds()/tp.wall.Seconds(), "pages/cdc-wall-speed")
}

// BenchmarkRestore: one guest restored from a pack sink on every core into
// memory (with and without the SHA-256 check) and into a sparse file
// (fsync included), against a parallel
// memcpy, a plain sequential read of the raw image from a file (what a
// hypervisor's file restore reads), and the current store's verified read.
// The objects are in the page cache (written just before).
func BenchmarkRestore(b *testing.B) {
	img := newFamily(1).guest(1, guestPages())
	dir := b.TempDir()
	fs, err := pages.OpenPackSink(dir)
	if err != nil {
		b.Fatal(err)
	}
	defer fs.Close()
	g, _ := pages.NewIngester(fs, pages.Options{})
	_, _, idx := ingestAll(b, g, "s", [][]byte{img})
	g.Close()
	x := idx[0]
	rawFile := filepath.Join(dir, "raw")
	if err := os.WriteFile(rawFile, img, 0o644); err != nil {
		b.Fatal(err)
	}
	root := b.TempDir()
	cdcWrite(b, root, "s", map[string][]byte{"vm0": img})
	snap, err := store.Open(root, "s")
	if err != nil {
		b.Fatal(err)
	}
	defer snap.Close()
	dst := make([]byte, len(img))
	var tc, tm, tq, tf, traw, tcdc cost
	for b.Loop() {
		tc.add(memcpyCost(img, dst))
		clear(dst)
		tq.add(measure(func() {
			if _, err := pages.Restore(x, fs, memImage(dst), pages.RestoreOptions{SkipHash: true}); err != nil {
				b.Fatal(err)
			}
		}))
		clear(dst)
		tm.add(measure(func() {
			if _, err := pages.Restore(x, fs, memImage(dst), pages.RestoreOptions{}); err != nil {
				b.Fatal(err)
			}
		}))
		if !bytes.Equal(dst, img) {
			b.Fatal("restore differs")
		}
		tf.add(measure(func() {
			if _, err := pages.RestoreFile(x, fs, filepath.Join(dir, "restored"), pages.RestoreOptions{}); err != nil {
				b.Fatal(err)
			}
		}))
		traw.add(measure(func() {
			rf, err := os.Open(rawFile)
			if err != nil {
				b.Fatal(err)
			}
			defer rf.Close()
			if _, err := io.ReadFull(rf, dst); err != nil {
				b.Fatal(err)
			}
		}))
		tcdc.add(measure(func() {
			r, err := snap.Reader("vm0", "memory")
			if err != nil {
				b.Fatal(err)
			}
			defer r.Close()
			if _, err := io.ReadFull(r, dst); err != nil {
				b.Fatal(err)
			}
		}))
	}
	n := len(img) * b.N
	mbs := func(c cost) float64 { return float64(n) / 1e6 / c.wall.Seconds() }
	b.ReportMetric(mbs(tc), "memcpy-MB/s")
	b.ReportMetric(mbs(tm), "restore-mem-MB/s")
	b.ReportMetric(mbs(tq), "restore-mem-skiphash-MB/s")
	b.ReportMetric(float64(n)/1e6/tq.cpu.Seconds(), "restore-mem-skiphash-MB/cpu-s")
	b.ReportMetric(mbs(tf), "restore-file-MB/s")
	b.ReportMetric(mbs(traw), "rawfile-read-MB/s")
	b.ReportMetric(mbs(tcdc), "cdc-read-MB/s")
	b.ReportMetric(tm.wall.Seconds()/traw.wall.Seconds(), "restore-mem/rawfile-time")
	b.ReportMetric(float64(n)/1e6/tm.cpu.Seconds(), "restore-mem-MB/cpu-s")
}
