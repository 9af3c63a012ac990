package main

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/vnsnap/vnsnap/workloads/npb"
)

// runRanks runs every rank of kernel k on loopback addresses 127.0.0.(2+i)
// and returns each rank's messages received and error.
func runRanks(t *testing.T, k npb.Kernel, ranks, iterations int) ([]int, []int, []error) {
	t.Helper()
	p, err := npb.New(k, npb.ClassS, ranks)
	if err != nil {
		t.Fatal(err)
	}
	steps := plan(p, iterations)
	var peers []string
	var lns []net.Listener
	for i := range ranks {
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.%d:0", 2+i))
		if err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("loopback 127.0.0.%d: %v (CI must run this test)", 2+i, err)
			}
			t.Skipf("loopback 127.0.0.%d (Linux routes all of 127/8 to lo): %v", 2+i, err)
		}
		lns = append(lns, ln)
		t.Cleanup(func() { ln.Close() })
		peers = append(peers, ln.Addr().String())
	}
	got, want, errs := make([]int, ranks), make([]int, ranks), make([]error, ranks)
	var wg sync.WaitGroup
	for i := range ranks {
		for _, ms := range steps {
			for _, m := range ms {
				if int(m.dst) == i {
					want[i]++
				}
			}
		}
		wg.Go(func() {
			defer lns[i].Close()
			r, err := connect(lns[i], i, peers)
			if err != nil {
				errs[i] = err
				return
			}
			r.mem = newHot(min(p.HotBytes(), 1<<20))
			got[i], errs[i] = r.run(p, steps, 0, func(string) {})
		})
	}
	wg.Wait()
	return got, want, errs
}

func TestKernelsRunAndVerify(t *testing.T) {
	for _, k := range []npb.Kernel{npb.EP, npb.IS, npb.CG, npb.MG, npb.FT, npb.LU} {
		t.Run(string(k), func(t *testing.T) {
			got, want, errs := runRanks(t, k, 4, 2)
			for i := range got {
				if errs[i] != nil {
					t.Errorf("rank %d: %v", i, errs[i])
				}
				if got[i] != want[i] || want[i] == 0 {
					t.Errorf("rank %d received %d messages, want %d (> 0)", i, got[i], want[i])
				}
			}
		})
	}
}

// TestReceiveCatchesDamage: a flipped byte in a message's content, or a
// message out of order, fails the receiver with the message named.
func TestReceiveCatchesDamage(t *testing.T) {
	m := msg{key: key{iter: 3, step: 1, src: 0, dst: 1}, bytes: 70000}
	for _, c := range []struct {
		name string
		edit func([]byte)
		want string
	}{
		{"intact", func([]byte) {}, ""},
		{"content", func(b []byte) { b[hdrLen+65537] ^= 1 }, "content differs at offset 65536"},
		{"header", func(b []byte) { b[8]++ }, "got message"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var buf bytes.Buffer
			w := bufio.NewWriter(&buf)
			s := &rank{out: []*bufio.Writer{nil, w}}
			if err := s.send(m); err != nil {
				t.Fatal(err)
			}
			b := buf.Bytes()
			c.edit(b)
			r := &rank{in: []*bufio.Reader{bufio.NewReader(bytes.NewReader(b))}}
			crc, err := r.receive(m)
			if c.want == "" {
				if err != nil || crc != checksum(0, m.key, m.bytes) {
					t.Fatalf("intact message: crc %#x, %v", crc, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("damaged message: %v, want an error with %q", err, c.want)
			}
		})
	}
}

// TestHotWorkingSetCatchesDamage: a page of the working set changed behind
// the rank's back (a snapshot that lost a write) fails the next compute.
func TestHotWorkingSetCatchesDamage(t *testing.T) {
	h := newHot(64 << 10)
	if err := h.compute(0); err != nil {
		t.Fatal(err)
	}
	h.words[5*pageWords+7] ^= 1
	var err error
	for i := 0; i < 4 && err == nil; i++ {
		err = h.compute(0)
	}
	if err == nil || !strings.Contains(err.Error(), "page 5 ") {
		t.Fatalf("compute after damage: %v, want page 5 named", err)
	}
}
