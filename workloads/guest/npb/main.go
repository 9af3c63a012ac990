// Command npb runs one rank of an NAS Parallel Benchmark kernel's
// communication and memory skeleton inside a VM: the messages of package
// workloads/npb (the same kernels, classes and patterns the simulator uses),
// exchanged over TCP between the VMs of a VNE, and between them a compute
// phase that rewrites the rank's hot working set.
//
// It is not the numerical kernel: it moves the kernel's messages, step by
// step and with their sizes, and it dirties memory at the profile's rate,
// which is what a snapshot sees of the kernel. Its result is verified as
// thoroughly as a snapshot can break it: every message's content is fixed
// by (iteration, step, source, destination, index) and checked byte for byte
// by its receiver; every page of the working set is checked against its
// generation before it is rewritten (as workloads/guest/dirtier does); and
// the final verification messages carry each rank's running checksum of all
// it received, which the receiving rank compares with the value it computes
// itself for that rank.
//
// Output lines on stdout (the serial console):
//
//	NPB START kernel=<k> class=<c> ranks=<n> rank=<r> iterations=<i> messages=<m>
//	NPB ITER <i>/<n> rx=<bytes> tx=<bytes>
//	NPB FAIL <reason>
//	NPB VERIFIED kernel=<k> class=<c> ranks=<n> rank=<r> iterations=<i> messages=<m> bytes=<b>
//
// Dialling retries until the peer listens and TCP keep-alive is off, so a
// pause of any length only delays the run.
package main

import (
	"bufio"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"hash/crc64"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vnsnap/vnsnap/workloads/guest/internal/mesh"
	"github.com/vnsnap/vnsnap/workloads/npb"
)

const (
	magic  = 0x4e504231 // "NPB1"
	hdrLen = 24         // magic, iteration, step uint32; src, dst uint16; length uint64
	// maxMessage bounds a message's length as read from the network.
	maxMessage = 1 << 30
)

var crcTable = crc64.MakeTable(crc64.ECMA)

// key identifies a message's content.
type key struct {
	iter, step uint32
	src, dst   uint16
	n          uint32 // index among equal (iter, step, src, dst) messages
}

func mix(z uint64) uint64 {
	z += 0x9E3779B97F4A7C15
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
	z = (z ^ (z >> 27)) * 0x94D049BB133111EB
	return z ^ (z >> 31)
}

// fill writes the content of message k at byte offset off (a multiple of 8)
// into b.
func fill(b []byte, k key, off uint64) {
	seed := mix(uint64(k.iter)<<32|uint64(k.step)) ^ mix(uint64(k.src)<<48|uint64(k.dst)<<32|uint64(k.n))
	var t [8]byte
	for i := 0; i < len(b); i += 8 {
		binary.LittleEndian.PutUint64(t[:], mix(seed^(off+uint64(i))/8))
		copy(b[i:], t[:])
	}
}

// checksum is the CRC-64 of message k's n bytes of content, extending crc.
// Every rank computes it for every message of the plan that it does not
// receive itself (the whole run's bytes once per rank: cheap for the classes
// a VM test runs).
func checksum(crc uint64, k key, n uint64) uint64 {
	buf := make([]byte, 32<<10)
	for off := uint64(0); off < n; off += uint64(len(buf)) {
		b := buf[:min(uint64(len(buf)), n-off)]
		fill(b, k, off)
		crc = crc64.Update(crc, crcTable, b)
	}
	return crc
}

// msg is one message of the run, with its content key.
type msg struct {
	key
	bytes uint64
}

// plan lists the run's messages in order: iterations, then the final
// verification (iteration == iterations).
func plan(p npb.Profile, iterations int) [][]msg {
	var out [][]msg
	add := func(iter int, ms []npb.Message) {
		seen := map[key]uint32{}
		var l []msg
		for _, m := range ms {
			k := key{iter: uint32(iter), step: uint32(m.Step), src: uint16(m.Src), dst: uint16(m.Dst)}
			k.n = seen[k]
			seen[k]++
			l = append(l, msg{key: k, bytes: uint64(m.Bytes)})
		}
		out = append(out, l)
	}
	it := p.IterationMessages()
	for i := range iterations {
		add(i, it)
	}
	add(iterations, p.FinalMessages())
	return out
}

// rank is this VM's part of the run.
type rank struct {
	self int
	out  []*bufio.Writer // by destination rank, nil for self
	in   []*bufio.Reader // by source rank
	mem  *hot
	rx   atomic.Uint64
	tx   atomic.Uint64
	// sums[r] is the running checksum of everything rank r received.
	sums []uint64
}

func (r *rank) send(m msg) error {
	w := r.out[m.dst]
	var h [hdrLen]byte
	binary.BigEndian.PutUint32(h[0:], magic)
	binary.BigEndian.PutUint32(h[4:], m.iter)
	binary.BigEndian.PutUint32(h[8:], m.step)
	binary.BigEndian.PutUint16(h[12:], m.src)
	binary.BigEndian.PutUint16(h[14:], m.dst)
	binary.BigEndian.PutUint64(h[16:], m.bytes)
	if _, err := w.Write(h[:]); err != nil {
		return err
	}
	buf := make([]byte, 32<<10)
	for off := uint64(0); off < m.bytes; off += uint64(len(buf)) {
		b := buf[:min(uint64(len(buf)), m.bytes-off)]
		fill(b, m.key, off)
		if _, err := w.Write(b); err != nil {
			return err
		}
		r.tx.Add(uint64(len(b)))
	}
	return w.Flush()
}

// receive reads message m from its source and checks its header and every
// byte of it; it returns the CRC-64 of the bytes received.
func (r *rank) receive(m msg) (uint64, error) {
	br := r.in[m.src]
	var h [hdrLen]byte
	if _, err := io.ReadFull(br, h[:]); err != nil {
		return 0, fmt.Errorf("header of %+v: %w", m.key, err)
	}
	got := key{
		iter: binary.BigEndian.Uint32(h[4:]), step: binary.BigEndian.Uint32(h[8:]),
		src: binary.BigEndian.Uint16(h[12:]), dst: binary.BigEndian.Uint16(h[14:]), n: m.n,
	}
	n := binary.BigEndian.Uint64(h[16:])
	if mg := binary.BigEndian.Uint32(h[0:]); mg != magic || got != m.key || n != m.bytes || n > maxMessage {
		return 0, fmt.Errorf("got message magic=%#x %+v bytes=%d, want %+v bytes=%d", mg, got, n, m.key, m.bytes)
	}
	crc := uint64(0)
	g, w := make([]byte, 32<<10), make([]byte, 32<<10)
	for off := uint64(0); off < n; off += uint64(len(g)) {
		gb, wb := g[:min(uint64(len(g)), n-off)], w[:min(uint64(len(w)), n-off)]
		if _, err := io.ReadFull(br, gb); err != nil {
			return 0, fmt.Errorf("%+v at offset %d: %w", m.key, off, err)
		}
		fill(wb, m.key, off)
		if string(gb) != string(wb) {
			return 0, fmt.Errorf("%+v: content differs at offset %d", m.key, off)
		}
		crc = crc64.Update(crc, crcTable, gb)
		r.rx.Add(uint64(len(gb)))
	}
	return crc, nil
}

// step sends this rank's messages of one step and receives its messages,
// each source and destination on its own goroutine. It returns the CRC-64 of
// each message received.
func (r *rank) step(ms []msg) (map[key]uint64, error) {
	var wg sync.WaitGroup
	var mu sync.Mutex
	crcs := map[key]uint64{}
	errs := make(chan error, 2*len(r.out))
	bySrc, byDst := map[uint16][]msg{}, map[uint16][]msg{}
	for _, m := range ms {
		if int(m.src) == r.self {
			byDst[m.dst] = append(byDst[m.dst], m)
		}
		if int(m.dst) == r.self {
			bySrc[m.src] = append(bySrc[m.src], m)
		}
	}
	for _, l := range byDst {
		wg.Go(func() {
			for _, m := range l {
				if err := r.send(m); err != nil {
					errs <- fmt.Errorf("send to rank %d: %w", m.dst, err)
					return
				}
			}
		})
	}
	for _, l := range bySrc {
		wg.Go(func() {
			for _, m := range l {
				c, err := r.receive(m)
				if err != nil {
					errs <- fmt.Errorf("from rank %d: %w", m.src, err)
					return
				}
				mu.Lock()
				crcs[m.key] = c
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	close(errs)
	return crcs, errors.Join(slicesOf(errs)...)
}

func slicesOf(c chan error) []error {
	var l []error
	for e := range c {
		l = append(l, e)
	}
	return l
}

// hot is the rank's hot working set: page p of generation g holds words fixed
// by (p, g), checked before the page is rewritten.
type hot struct {
	words []uint64
	gen   []uint32
	next  int
}

const pageWords = 512

func newHot(bytes int64) *hot {
	pages := max(1, int(bytes/8/pageWords))
	h := &hot{words: make([]uint64, pages*pageWords), gen: make([]uint32, pages)}
	for p := range pages {
		h.fill(p)
	}
	return h
}

func (h *hot) fill(p int) {
	b := mix(uint64(p)<<32 | uint64(h.gen[p]))
	w := h.words[p*pageWords : (p+1)*pageWords]
	for i := range w {
		w[i] = b + uint64(i)
	}
}

// compute rewrites pages of the working set for d (at least one page) and
// returns an error naming the first page found damaged.
func (h *hot) compute(d time.Duration) error {
	end := time.Now().Add(d)
	for {
		for range 64 {
			p := h.next
			b := mix(uint64(p)<<32 | uint64(h.gen[p]))
			w := h.words[p*pageWords : (p+1)*pageWords]
			for i := range w {
				if w[i] != b+uint64(i) {
					return fmt.Errorf("working set page %d generation %d word %d: %#x, want %#x", p, h.gen[p], i, w[i], b+uint64(i))
				}
			}
			h.gen[p]++
			h.fill(p)
			h.next = (h.next + 1) % len(h.gen)
		}
		if !time.Now().Before(end) {
			return nil
		}
	}
}

// run executes the plan; it returns the messages and bytes received.
func (r *rank) run(p npb.Profile, steps [][]msg, compute time.Duration, progress func(string)) (int, error) {
	iterations := len(steps) - 1
	received := 0
	for i, ms := range steps {
		if i < iterations {
			if err := r.mem.compute(compute); err != nil {
				return received, err
			}
		}
		// Messages are ordered by step: run each step's group in turn.
		for lo := 0; lo < len(ms); {
			hi := lo
			for hi < len(ms) && ms[hi].step == ms[lo].step {
				hi++
			}
			crcs, err := r.step(ms[lo:hi])
			if err != nil {
				return received, fmt.Errorf("iteration %d step %d: %w", i, ms[lo].step, err)
			}
			// sums[self] folds what this rank received; the others what
			// their ranks should have received, from the plan.
			for _, m := range ms[lo:hi] {
				c, ok := crcs[m.key]
				if int(m.dst) != r.self {
					c = checksum(0, m.key, m.bytes)
				} else if ok {
					received++
				}
				r.sums[m.dst] = mix(r.sums[m.dst] ^ c)
			}
			lo = hi
		}
		if i < iterations {
			progress(fmt.Sprintf("NPB ITER %d/%d rx=%d tx=%d\n", i+1, iterations, r.rx.Load(), r.tx.Load()))
		}
	}
	// The final exchange: every rank sends its peers the checksum of what it
	// received; each compares with the sum it computed for that rank from
	// the plan, which every rank knows.
	for j := range r.out {
		if j == r.self {
			continue
		}
		var b [8]byte
		binary.BigEndian.PutUint64(b[:], r.sums[r.self])
		if _, err := r.out[j].Write(b[:]); err != nil {
			return received, err
		}
		if err := r.out[j].Flush(); err != nil {
			return received, err
		}
	}
	for j := range r.in {
		if j == r.self {
			continue
		}
		var b [8]byte
		if _, err := io.ReadFull(r.in[j], b[:]); err != nil {
			return received, fmt.Errorf("checksum of rank %d: %w", j, err)
		}
		if got := binary.BigEndian.Uint64(b[:]); got != r.sums[j] {
			return received, fmt.Errorf("rank %d received data with checksum %#x, want %#x", j, got, r.sums[j])
		}
	}
	return received, nil
}

// connect dials every other rank (writes) and accepts every other rank
// (reads); a connection starts with the dialler's rank.
func connect(ln net.Listener, self int, peers []string) (*rank, error) {
	n := len(peers)
	r := &rank{self: self, out: make([]*bufio.Writer, n), in: make([]*bufio.Reader, n), sums: make([]uint64, n)}
	var wg sync.WaitGroup
	for j, p := range peers {
		if j == self {
			continue
		}
		wg.Go(func() {
			r.out[j] = bufio.NewWriterSize(mesh.DialHello(p, self, 200*time.Millisecond), 64<<10)
		})
	}
	for range n - 1 {
		c, src, err := mesh.AcceptHello(ln)
		if err != nil {
			return nil, err
		}
		if src >= n || src == self || r.in[src] != nil {
			return nil, fmt.Errorf("hello from %s: rank %d unexpected", c.RemoteAddr(), src)
		}
		r.in[src] = bufio.NewReaderSize(c, 64<<10)
	}
	wg.Wait()
	return r, nil
}

func main() {
	kernel := flag.String("kernel", "CG", "NPB kernel: EP IS CG MG FT LU BT SP")
	class := flag.String("class", "S", "NPB class: S W A B C")
	peersFlag := flag.String("peers", "", "comma-separated IPs of all ranks' VMs, in rank order, this one included")
	selfFlag := flag.String("self", "", "this VM's IP (one of -peers)")
	port := flag.Int("port", 7100, "TCP port")
	iterations := flag.Int("iterations", 0, "iterations to run (0: the kernel's own count)")
	scale := flag.Float64("compute-scale", 1, "factor on the profile's compute time per iteration")
	hotMax := flag.Int64("hot-max", 16<<20, "cap on the hot working set in bytes")
	flag.Parse()

	fail := func(format string, a ...any) {
		fmt.Printf("NPB FAIL "+format+"\n", a...)
		os.Exit(1)
	}
	peers, self, err := mesh.Peers(*peersFlag, *selfFlag, *port)
	if err != nil {
		fail("%v", err)
	}
	p, err := npb.New(npb.Kernel(*kernel), npb.Class(*class), len(peers))
	if err != nil {
		fail("%v", err)
	}
	iters := p.Iterations
	if *iterations > 0 {
		iters = *iterations
	}
	steps := plan(p, iters)
	count := 0
	for _, ms := range steps {
		for _, m := range ms {
			if int(m.dst) == self {
				count++
			}
		}
	}
	fmt.Printf("NPB START kernel=%s class=%s ranks=%d rank=%d iterations=%d messages=%d\n", p.Kernel, p.Class, p.Ranks, self, iters, count)

	ln, err := mesh.Listen(peers[self])
	if err != nil {
		fail("listen: %v", err)
	}
	r, err := connect(ln, self, peers)
	if err != nil {
		fail("connect: %v", err)
	}
	r.mem = newHot(min(p.HotBytes(), *hotMax))
	compute := time.Duration(float64(p.ComputePerIter) * *scale)
	var mu sync.Mutex
	got, err := r.run(p, steps, compute, func(s string) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Print(s)
	})
	if err != nil {
		fail("rank %d: %v", self, err)
	}
	if got != count {
		fail("rank %d: received %d messages, want %d", self, got, count)
	}
	fmt.Printf("NPB VERIFIED kernel=%s class=%s ranks=%d rank=%d iterations=%d messages=%d bytes=%d\n",
		p.Kernel, p.Class, p.Ranks, self, iters, count, r.rx.Load())
}
