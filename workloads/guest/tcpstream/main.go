// Command tcpstream makes every VM of a VNE stream data to every other VM over
// TCP and verifies every byte it receives.
//
// The byte at offset o of the stream from sender s is fixed by (s, o), so the
// receiver regenerates and compares all of it; a trailer carries the CRC-64 of
// the whole stream as a second check. A stream starts with a header (magic,
// sender index, length). Dialling retries until the peer listens, and TCP
// keep-alive is off, so a pause of any length (a snapshot, a restore, TCP
// backoff while frames are dropped) only delays the transfer. With -rate, each
// stream is paced to at most that many bytes a second (averaged from its
// start), so that a transfer lasts a known time however fast the machine is,
// and dirties few pages while a live snapshot copies them. With
// -unpace-after, a paced stream stops pacing once the VM's wall clock has run
// ahead of its monotonic clock by more than that: the guest kernel slept
// (a Xen domain restored from a snapshot is resumed from a suspend, and
// Linux adds the time it was away to the wall clock only), so that a VM
// restored from a snapshot finishes its transfer at full speed.
//
// Output lines on stdout (the serial console):
//
//	TCPSTREAM PROGRESS rx=<bytes> tx=<bytes>
//	TCPSTREAM UNPACED peer=<addr> slept=<duration>
//	TCPSTREAM SENT peer=<addr> bytes=<n>
//	TCPSTREAM OK peer=<addr> from=<index> bytes=<n>
//	TCPSTREAM FAIL peer=<addr> ... reason
//	TCPSTREAM DONE ok=<n> fail=<n>
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
)

const (
	magic    = 0x564e534e // "VNSN"
	hdrLen   = 16         // magic uint32, sender uint32, length uint64
	blockLen = 32 << 10
)

var crcTable = crc64.MakeTable(crc64.ECMA)

// fill writes the stream content of sender s at byte offset off into b.
// off must be a multiple of 8.
func fill(b []byte, s uint32, off uint64) {
	for i := 0; i+8 <= len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], word(s, (off+uint64(i))/8))
	}
	if r := len(b) % 8; r != 0 {
		var t [8]byte
		binary.LittleEndian.PutUint64(t[:], word(s, (off+uint64(len(b)-r))/8))
		copy(b[len(b)-r:], t[:r])
	}
}

func word(s uint32, w uint64) uint64 {
	z := uint64(s)<<48 ^ w + 0x9E3779B97F4A7C15
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
	z = (z ^ (z >> 27)) * 0x94D049BB133111EB
	return z ^ (z >> 31)
}

// pacer holds a stream to rate bytes a second on average since its first
// byte; rate 0 is unpaced. now and sleep are the clock (the real one in the
// program, a fake in tests). If after is set, slept says how far the wall
// clock has run ahead of the monotonic one since the pacer was made, and
// once that exceeds after the stream is unpaced from then on (onUnpace, if
// set, is told the amount once).
type pacer struct {
	rate     uint64
	now      func() time.Time
	sleep    func(time.Duration)
	start    time.Time
	after    time.Duration
	slept    func() time.Duration
	onUnpace func(time.Duration)
}

// realPacer paces at rate with the real clock, unpacing after a sleep of
// more than after (0: never).
func realPacer(rate uint64, after time.Duration, onUnpace func(time.Duration)) *pacer {
	t0 := time.Now()
	return &pacer{rate: rate, now: time.Now, sleep: time.Sleep, after: after, onUnpace: onUnpace,
		slept: func() time.Duration { n := time.Now(); return n.Round(0).Sub(t0.Round(0)) - n.Sub(t0) }}
}

// paceSlack is how far a paced stream may fall behind its schedule and then
// catch up at full speed: after a longer stop (the VM paused for a
// stop-and-copy snapshot, or restored, while its clock ran on) the schedule
// restarts rather than bursting the whole gap.
const paceSlack = time.Second

// wait blocks until sent bytes are due: sent/rate seconds after the first
// call, less any lag beyond paceSlack.
func (p *pacer) wait(sent uint64) {
	if p.rate == 0 {
		return
	}
	if p.after > 0 && p.slept != nil {
		if s := p.slept(); s > p.after {
			p.rate = 0
			if p.onUnpace != nil {
				p.onUnpace(s)
			}
			return
		}
	}
	now := p.now()
	if p.start.IsZero() {
		p.start = now
	}
	due := p.start.Add(time.Duration(float64(sent) / float64(p.rate) * float64(time.Second)))
	if lag := now.Sub(due); lag > paceSlack {
		p.start = p.start.Add(lag - paceSlack)
	} else if lag < 0 {
		p.sleep(-lag)
	}
}

// send writes the stream of sender s, n bytes long, to w, counting into tx,
// pacing its blocks with pace.
func send(w io.Writer, s uint32, n uint64, tx *atomic.Uint64, pace *pacer) error {
	bw := bufio.NewWriterSize(w, blockLen)
	var hdr [hdrLen]byte
	binary.BigEndian.PutUint32(hdr[0:], magic)
	binary.BigEndian.PutUint32(hdr[4:], s)
	binary.BigEndian.PutUint64(hdr[8:], n)
	if _, err := bw.Write(hdr[:]); err != nil {
		return err
	}
	crc := uint64(0)
	buf := make([]byte, blockLen)
	for off := uint64(0); off < n; off += blockLen {
		b := buf[:min(uint64(blockLen), n-off)]
		pace.wait(off)
		fill(b, s, off)
		crc = crc64.Update(crc, crcTable, b)
		if _, err := bw.Write(b); err != nil {
			return err
		}
		tx.Add(uint64(len(b)))
	}
	var tr [8]byte
	binary.BigEndian.PutUint64(tr[:], crc)
	if _, err := bw.Write(tr[:]); err != nil {
		return err
	}
	return bw.Flush()
}

// errNoStream is receive's error for a connection closed before its first
// byte.
var errNoStream = errors.New("connection closed before a stream began")

// receive reads and verifies one stream from r, counting into rx. It returns
// the sender index and the stream length.
func receive(r io.Reader, rx *atomic.Uint64) (uint32, uint64, error) {
	br := bufio.NewReaderSize(r, blockLen)
	var hdr [hdrLen]byte
	if n, err := io.ReadFull(br, hdr[:]); err != nil {
		if n == 0 && errors.Is(err, io.EOF) {
			return 0, 0, errNoStream
		}
		return 0, 0, fmt.Errorf("header: %w", err)
	}
	if m := binary.BigEndian.Uint32(hdr[0:]); m != magic {
		return 0, 0, fmt.Errorf("bad magic %#x", m)
	}
	s := binary.BigEndian.Uint32(hdr[4:])
	n := binary.BigEndian.Uint64(hdr[8:])
	crc := uint64(0)
	got := make([]byte, blockLen)
	want := make([]byte, blockLen)
	for off := uint64(0); off < n; off += blockLen {
		g, w := got[:min(uint64(blockLen), n-off)], want[:min(uint64(blockLen), n-off)]
		if _, err := io.ReadFull(br, g); err != nil {
			return s, n, fmt.Errorf("offset %d: %w", off, err)
		}
		fill(w, s, off)
		for i := range g {
			if g[i] != w[i] {
				return s, n, fmt.Errorf("byte mismatch at offset %d: got %#x want %#x", off+uint64(i), g[i], w[i])
			}
		}
		crc = crc64.Update(crc, crcTable, g)
		rx.Add(uint64(len(g)))
	}
	var tr [8]byte
	if _, err := io.ReadFull(br, tr[:]); err != nil {
		return s, n, fmt.Errorf("trailer: %w", err)
	}
	if c := binary.BigEndian.Uint64(tr[:]); c != crc {
		return s, n, fmt.Errorf("checksum mismatch: got %#x want %#x", c, crc)
	}
	return s, n, nil
}

type result struct {
	line string
	ok   bool
}

// pace is each stream's -rate and -unpace-after.
type pace struct {
	rate  uint64
	after time.Duration
}

// run streams n bytes to each peer other than self and verifies the streams
// of all of them, printing to out. It returns the number of failed streams.
func run(ln net.Listener, self int, peers []string, n uint64, pc pace, out io.Writer, progress time.Duration) int {
	var mu sync.Mutex
	printf := func(format string, a ...any) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(out, format, a...) // Fprintf issues one write per line
	}
	var rx, tx atomic.Uint64
	results := make(chan result, 2*len(peers))
	expect := 0
	for i, p := range peers {
		if i == self {
			continue
		}
		expect += 2
		go func(p string) {
			c := mesh.Dial(p, 200*time.Millisecond)
			defer c.Close()
			unpaced := func(d time.Duration) { printf("TCPSTREAM UNPACED peer=%s slept=%v\n", p, d.Round(time.Millisecond)) }
			if err := send(c, uint32(self), n, &tx, realPacer(pc.rate, pc.after, unpaced)); err != nil {
				results <- result{fmt.Sprintf("TCPSTREAM FAIL peer=%s send: %v\n", p, err), false}
				return
			}
			// Wait for the receiver to close: its data has all arrived.
			_, _ = io.Copy(io.Discard, c)
			results <- result{fmt.Sprintf("TCPSTREAM SENT peer=%s bytes=%d\n", p, n), true}
		}(p)
	}
	// Accept until the listener closes: a connection that ends before its
	// first byte is a dialler that gave up (its dial timed out on a loaded
	// host after the SYN got through) and dials again; it is not a stream.
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				if !errors.Is(err, net.ErrClosed) {
					results <- result{fmt.Sprintf("TCPSTREAM FAIL accept: %v\n", err), false}
				}
				return
			}
			if tc, ok := c.(*net.TCPConn); ok {
				_ = tc.SetKeepAlive(false)
			}
			go func(c net.Conn) {
				defer c.Close()
				s, m, err := receive(c, &rx)
				if errors.Is(err, errNoStream) {
					return
				}
				if err != nil {
					results <- result{fmt.Sprintf("TCPSTREAM FAIL peer=%s from=%d: %v\n", c.RemoteAddr(), s, err), false}
					return
				}
				results <- result{fmt.Sprintf("TCPSTREAM OK peer=%s from=%d bytes=%d\n", c.RemoteAddr(), s, m), true}
			}(c)
		}
	}()
	tick := time.NewTicker(progress)
	defer tick.Stop()
	ok, fail := 0, 0
	for ok+fail < expect {
		select {
		case r := <-results:
			printf("%s", r.line)
			if r.ok {
				ok++
			} else {
				fail++
			}
		case <-tick.C:
			printf("TCPSTREAM PROGRESS rx=%d tx=%d\n", rx.Load(), tx.Load())
		}
	}
	printf("TCPSTREAM DONE ok=%d fail=%d\n", ok, fail)
	return fail
}

func main() {
	peersFlag := flag.String("peers", "", "comma-separated IPs of all VMs, this one included")
	selfFlag := flag.String("self", "", "this VM's IP (one of -peers)")
	port := flag.Int("port", 7000, "TCP port")
	bytes := flag.Uint64("bytes", 64<<20, "bytes to send to each peer")
	progress := flag.Duration("progress", time.Second, "time between progress lines")
	rate := flag.Uint64("rate", 0, "bytes a second each stream sends at most (0: unpaced)")
	after := flag.Duration("unpace-after", 0, "stop pacing once the wall clock has run this far ahead of the monotonic one (the VM slept: restored from a snapshot); 0: never")
	flag.Parse()
	peers, self, err := mesh.Peers(*peersFlag, *selfFlag, *port)
	if err != nil {
		fmt.Fprintf(os.Stderr, "tcpstream: %v\n", err)
		os.Exit(2)
	}
	ln, err := mesh.Listen(peers[self])
	if err != nil {
		fmt.Printf("TCPSTREAM FAIL listen: %v\n", err)
		os.Exit(1)
	}
	if run(ln, self, peers, *bytes, pace{*rate, *after}, os.Stdout, *progress) > 0 {
		os.Exit(1)
	}
}
