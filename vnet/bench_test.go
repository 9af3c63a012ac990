package vnet

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vnsnap/vnsnap/core"
)

// BenchmarkPortToPort measures frames/s from one QEMU-style unix socket
// through a switch to another, with the frame log on.
func BenchmarkPortToPort(b *testing.B) {
	for _, size := range []int{64, 1500} {
		b.Run(fmt.Sprintf("size=%d", size), func(b *testing.B) {
			bd := newBedLog(b, 1, core.VNsnap, discardLog)
			benchPair(b, bd, 0, 0, size)
		})
	}
}

// BenchmarkTunnel measures frames/s from a port on one switch through a UDP
// tunnel on loopback to a port on another.
func BenchmarkTunnel(b *testing.B) {
	for _, size := range []int{64, 1500} {
		b.Run(fmt.Sprintf("size=%d", size), func(b *testing.B) {
			bd := newBedLog(b, 2, core.VNsnap, discardLog)
			benchPair(b, bd, 0, 1, size)
		})
	}
}

func discardLog(*bed) io.Writer { return io.Discard }

// benchPair sends b.N frames from VM 0 (on switch i) to VM 1 (on switch j)
// with at most window frames outstanding, so that queues do not overflow;
// frames lost anyway (UDP) are written off after a stall and reported.
func benchPair(b *testing.B, bd *bed, i, j, size int) {
	const window = 128
	src, dst := bd.vm(i, 0), bd.vm(j, 1)
	dst.sendTo(src.mac, "learn")
	src.expect("learn")
	src.sendTo(dst.mac, "learn")
	dst.expect("learn")
	// Take the raw connections over from the fake VMs' readers.
	rawSrc, rawDst := rawConn(b, bd, i, 0), rawConn(b, bd, j, 1)
	defer rawSrc.Close()
	defer rawDst.Close()

	frame := make([]byte, 4+size)
	binary.BigEndian.PutUint32(frame, uint32(size))
	copy(frame[4:], ethFrame(dst.mac, src.mac, ""))
	const batch = 16
	burst := make([]byte, 0, batch*len(frame))
	for range batch {
		burst = append(burst, frame...)
	}

	var got atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		br := bufio.NewReaderSize(rawDst, 256<<10)
		buf := make([]byte, 4+MaxFrame)
		for {
			if _, err := io.ReadFull(br, buf[:4]); err != nil {
				return
			}
			n := binary.BigEndian.Uint32(buf)
			if _, err := io.ReadFull(br, buf[4:4+n]); err != nil {
				return
			}
			got.Add(1)
		}
	}()

	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	var sent, lost int64
	for sent < int64(b.N) {
		stalled := time.Now()
		for sent-got.Load()-lost > window-batch {
			if time.Since(stalled) > 50*time.Millisecond {
				lost = sent - got.Load()
				break
			}
			time.Sleep(10 * time.Microsecond)
		}
		k := min(batch, int64(b.N)-sent)
		if _, err := rawSrc.Write(burst[:k*int64(len(frame))]); err != nil {
			b.Fatal(err)
		}
		sent += k
	}
	deadline := time.Now().Add(time.Second)
	for got.Load()+lost < sent && time.Now().Before(deadline) {
		time.Sleep(50 * time.Microsecond)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	n := got.Load()
	b.ReportMetric(float64(n)/elapsed.Seconds(), "frames/s")
	b.ReportMetric(float64(sent-n)/float64(sent), "lost/frame")
	rawDst.Close()
	<-done
}

// rawConn closes the fake VM's connection to vm's port and returns a fresh
// one that the benchmark drives itself.
func rawConn(b *testing.B, bd *bed, i int, vm core.VMID) net.Conn {
	b.Helper()
	before, _ := bd.sw[i].Counters().Port(vm)
	c, err := net.Dial("unix", filepath.Clean(bd.path[vm]))
	if err != nil {
		b.Fatal(err)
	}
	mustWait(b, bd.sw[i], vm, func(p PortCounters) bool { return p.Connects > before.Connects })
	return c
}
