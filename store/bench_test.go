package store

import (
	"bytes"
	"flag"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/vnsnap/vnsnap/internal/testutil"
	"github.com/vnsnap/vnsnap/store/pages"
)

const benchSize = 64 << 20

var benchKinds = []struct {
	name string
	gen  func(seed uint64, n int) []byte
}{
	{"incompressible", randomData},
	{"pagelike", pageData},
}

func benchWrite(b *testing.B, root, name string, data []byte) {
	w, err := Create(root, name, testMeta())
	if err != nil {
		b.Fatal(err)
	}
	sw, err := w.Stream("a", "memory")
	if err != nil {
		b.Fatal(err)
	}
	if _, err := io.Copy(sw, bytes.NewReader(data)); err != nil {
		b.Fatal(err)
	}
	if err := sw.Close(); err != nil {
		b.Fatal(err)
	}
	if err := w.Commit(); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkWrite measures first writes of one 64 MiB stream into an empty
// store, fsyncs included.
func BenchmarkWrite(b *testing.B) {
	for _, k := range benchKinds {
		data := k.gen(1, benchSize)
		b.Run(k.name, func(b *testing.B) {
			b.SetBytes(benchSize)
			for b.Loop() {
				b.StopTimer()
				root := b.TempDir()
				b.StartTimer()
				benchWrite(b, root, "s", data)
				b.StopTimer()
				os.RemoveAll(root)
				b.StartTimer()
			}
		})
	}
}

// BenchmarkDedupWrite writes a stream into an empty store, then the same
// stream again and a copy with 16 dirtied pages as further snapshots, and
// reports each write's throughput and its time relative to the first write
// of the same run.
func BenchmarkDedupWrite(b *testing.B) {
	for _, k := range benchKinds {
		data := k.gen(1, benchSize)
		edited := bytes.Clone(data)
		for i := range 16 {
			off := (i*benchSize/16 + 12345) &^ (pageSize - 1)
			copy(edited[off:off+pageSize], randomData(uint64(i), pageSize))
		}
		b.Run(k.name, func(b *testing.B) {
			var first, same, dirty time.Duration
			var added, chunks int
			var firstChunks int
			for b.Loop() {
				root := b.TempDir()
				t0 := time.Now()
				benchWrite(b, root, "s1", data)
				t1 := time.Now()
				benchWrite(b, root, "s2", data)
				t2 := time.Now()
				benchWrite(b, root, "s3", edited)
				t3 := time.Now()
				first, same, dirty = first+t1.Sub(t0), same+t2.Sub(t1), dirty+t3.Sub(t2)
				firstChunks += len(chunkFiles(b, root))
				s := mustOpen(b, root, "s3")
				added += s.Manifest().Added.Chunks
				chunks += len(s.Manifest().VMs[0].Streams[0].Chunks)
				s.Close()
				os.RemoveAll(root)
			}
			mbps := func(d time.Duration) float64 { return float64(b.N) * benchSize / 1e6 / d.Seconds() }
			b.ReportMetric(mbps(first), "first-MB/s")
			b.ReportMetric(mbps(same), "same-MB/s")
			b.ReportMetric(mbps(dirty), "dirty-MB/s")
			b.ReportMetric(same.Seconds()/first.Seconds(), "same/first")
			b.ReportMetric(dirty.Seconds()/first.Seconds(), "dirty/first")
			b.ReportMetric(float64(added)/float64(chunks), "dirty-new-chunk-frac")
			b.ReportMetric(float64(b.N)*benchSize/float64(firstChunks)/1024, "KiB/chunk")
		})
	}
}

// BenchmarkRead measures verified reads of one 64 MiB stream.
func BenchmarkRead(b *testing.B) {
	for _, k := range benchKinds {
		data := k.gen(1, benchSize)
		b.Run(k.name, func(b *testing.B) {
			root := b.TempDir()
			benchWrite(b, root, "s", data)
			s := mustOpen(b, root, "s")
			b.SetBytes(benchSize)
			for b.Loop() {
				r, err := s.Reader("a", "memory")
				if err != nil {
					b.Fatal(err)
				}
				if _, err := io.Copy(io.Discard, r); err != nil {
					b.Fatal(err)
				}
				r.Close()
			}
		})
	}
}

var flagSkipHash = flag.Bool("store.skiphash", false, "BenchmarkRestoreImage: check CRCs only, not hashes")

// BenchmarkRestoreImage: a 256 MiB page-like image written back from the
// store into a file in tmpfs (what a restore does before QEMU loads it),
// against copying the same raw image from a tmpfs file into another.
func BenchmarkRestoreImage(b *testing.B) {
	const size = 256 << 20
	data := pageData(1, size)
	root := b.TempDir()
	w, err := Create(root, "s", testMeta())
	if err != nil {
		b.Fatal(err)
	}
	if _, err := w.ImageAt("a", "memory", bytes.NewReader(data), size); err != nil {
		b.Fatal(err)
	}
	if err := w.Commit(); err != nil {
		b.Fatal(err)
	}
	s, err := Open(root, "s")
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	dir := testutil.ShmDir(b)
	raw := filepath.Join(dir, "raw")
	if err := os.WriteFile(raw, data, 0o644); err != nil {
		b.Fatal(err)
	}
	out := filepath.Join(dir, "out")
	var tr, tc, cr time.Duration
	for b.Loop() {
		t0, c0 := time.Now(), cpuTime()
		if _, err := s.RestoreImage("a", "memory", out, pages.RestoreOptions{SkipHash: *flagSkipHash}); err != nil {
			b.Fatal(err)
		}
		tr += time.Since(t0)
		cr += cpuTime() - c0
		os.Remove(out)
		t0 = time.Now()
		in, err := os.ReadFile(raw)
		if err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(out, in, 0o644); err != nil {
			b.Fatal(err)
		}
		tc += time.Since(t0)
		os.Remove(out)
	}
	n := float64(b.N)
	b.ReportMetric(tr.Seconds()*1e3/n, "restore-ms/op")
	b.ReportMetric(cr.Seconds()*1e3/n, "restore-cpu-ms/op")
	b.ReportMetric(tc.Seconds()*1e3/n, "copy-ms/op")
	b.ReportMetric(tr.Seconds()/tc.Seconds(), "restore/copy")
}

// cpuTime is the process's CPU time (user and system) so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		panic(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
