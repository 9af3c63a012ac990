package xenbackend

import (
	"bytes"
	"encoding/binary"
	"io"
	"math/rand/v2"
	"os"
	"syscall"
	"testing"
	"time"
)

// benchStream is a stream shaped like a live save of a domain with pages
// MiB of memory with data: a first pass over every page (in PAGE_DATA
// records of 1024 pages, as libxc batches them) and a second pass over a
// quarter of them, each page's bytes distinct.
func benchStream(mib int) []byte {
	pages := mib << 20 / pageSize
	rng := rand.New(rand.NewPCG(1, 2))
	data := make([]byte, pageSize)
	var e enc
	e.xl(`{"c_info":{"type":"pvh","name":"bench"}}` + "\x00")
	e.libxl()
	e.libxcHeaders()
	e.record(0x10, nil) // STATIC_DATA_END
	batch := func(pfns []uint64) {
		var b enc
		b.le32(uint32(len(pfns)))
		b.le32(0)
		for _, p := range pfns {
			b.le64(p)
		}
		for range pfns {
			for i := 0; i < len(data); i += 8 {
				binary.LittleEndian.PutUint64(data[i:], rng.Uint64())
			}
			b.Write(data)
		}
		e.record(libxcPageData, b.Bytes())
	}
	for _, pass := range []struct{ n, step int }{{pages, 1}, {pages / 4, 4}} {
		var pfns []uint64
		for i := 0; i < pass.n; i++ {
			pfns = append(pfns, uint64(i*pass.step))
			if len(pfns) == 1024 {
				batch(pfns)
				pfns = pfns[:0]
			}
		}
		if len(pfns) > 0 {
			batch(pfns)
		}
	}
	e.record(0x09, make([]byte, 1000)) // HVM_CONTEXT
	e.record(libxcEnd, nil)
	e.record(libxlEnd, nil)
	return e.Bytes()
}

// BenchmarkReceivePageFile measures the live-save receiver's own cost: a
// 64 MiB domain's stream (80 MiB with its second pass) read from a pipe,
// parsed, each page handed to the pass detector's hook and written into a
// page file (ReceiveFile's path, WritePageFile) in tmpfs, against copying
// the same bytes from the same kind of pipe into a file (the least any
// receiver that stores the stream costs: what xl save's own writer does).
// The ratios "receive/copy-cpu" and "receive/copy-speed" are the
// receiver's overhead; they are measured in the same run.
//
//	go test ./xenbackend -run XXX -bench ReceivePageFile -benchtime 5x
func BenchmarkReceivePageFile(b *testing.B) {
	stream := benchStream(64)
	dir := b.TempDir()
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		dir = "/dev/shm"
	}
	run := func(consume func(r io.Reader, f *os.File) error) (wall, cpu time.Duration) {
		f, err := os.CreateTemp(dir, "vnsnap-bench-*")
		if err != nil {
			b.Fatal(err)
		}
		defer os.Remove(f.Name())
		defer f.Close()
		pr, pw, err := os.Pipe()
		if err != nil {
			b.Fatal(err)
		}
		done := make(chan error, 1)
		go func() {
			_, err := io.Copy(pw, bytes.NewReader(stream))
			pw.Close()
			done <- err
		}()
		c0, t0 := cpuTime(b), time.Now()
		if err := consume(pr, f); err != nil {
			b.Fatal(err)
		}
		wall, cpu = time.Since(t0), cpuTime(b)-c0
		pr.Close()
		if err := <-done; err != nil {
			b.Fatal(err)
		}
		return wall, cpu
	}
	var copyWall, copyCPU, recvWall, recvCPU time.Duration
	for b.Loop() {
		w, c := run(func(r io.Reader, f *os.File) error { _, err := io.Copy(f, r); return err })
		copyWall, copyCPU = copyWall+w, copyCPU+c
		var pass, last uint64
		w, c = run(func(r io.Reader, f *os.File) error {
			_, err := WritePageFile(r, f, func(pfn uint64, _ []byte) error {
				if pfn <= last {
					pass++
				}
				last = pfn
				return nil
			})
			return err
		})
		recvWall, recvCPU = recvWall+w, recvCPU+c
	}
	mb := float64(len(stream)) / 1e6 * float64(b.N)
	b.ReportMetric(mb/recvWall.Seconds(), "receive-MB/s")
	b.ReportMetric(mb/recvCPU.Seconds(), "receive-MB/cpu-s")
	b.ReportMetric(mb/copyWall.Seconds(), "copy-MB/s")
	b.ReportMetric(recvCPU.Seconds()/copyCPU.Seconds(), "receive/copy-cpu")
	b.ReportMetric(recvWall.Seconds()/copyWall.Seconds(), "receive/copy-time")
}

// cpuTime is the process's CPU time (user and system) so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
