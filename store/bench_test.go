package store

import (
	"bytes"
	"io"
	"os"
	"testing"
	"time"
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
