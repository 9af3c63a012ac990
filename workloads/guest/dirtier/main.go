// Command dirtier dirties memory at a set rate (MiB/s) over a set working set
// (MiB) and checks every page before it rewrites it.
//
// Page p of generation g holds 512 words derived from (p, g); the generation of
// every page is kept in a separate table. Before a page is rewritten with
// generation g+1 its content is compared with (p, g), so a snapshot or restore
// that loses or mixes up a page write is caught the next time the sweep visits
// that page. Every full sweep prints "DIRTIER OK cycle=<n> pages=<verified>";
// a mismatch prints "DIRTIER FAIL page=<p> ...".
package main

import (
	"flag"
	"fmt"
	"os"
	"time"
)

const (
	pageSize  = 4096
	pageWords = pageSize / 8
)

// mem is the working set and the generation of each of its pages.
type mem struct {
	words []uint64
	gen   []uint32
	next  int // page the sweep visits next
}

func newMem(pages int) *mem {
	m := &mem{words: make([]uint64, pages*pageWords), gen: make([]uint32, pages)}
	for p := 0; p < pages; p++ {
		m.fill(p)
	}
	return m
}

func base(p int, g uint32) uint64 {
	z := uint64(p)<<32 ^ uint64(g) + 0x9E3779B97F4A7C15
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
	z = (z ^ (z >> 27)) * 0x94D049BB133111EB
	return z ^ (z >> 31)
}

func (m *mem) fill(p int) {
	b := base(p, m.gen[p])
	w := m.words[p*pageWords : (p+1)*pageWords]
	for i := range w {
		w[i] = b + uint64(i)*0x9E3779B97F4A7C15
	}
}

// check returns the first word of page p that does not match its generation,
// or -1.
func (m *mem) check(p int) (int, uint64, uint64) {
	b := base(p, m.gen[p])
	w := m.words[p*pageWords : (p+1)*pageWords]
	for i := range w {
		if want := b + uint64(i)*0x9E3779B97F4A7C15; w[i] != want {
			return i, w[i], want
		}
	}
	return -1, 0, 0
}

// step verifies and rewrites the next n pages. It reports each mismatch to fail
// and returns true when the sweep wrapped around.
func (m *mem) step(n int, fail func(p int, g uint32, i int, got, want uint64)) (wrapped bool) {
	for k := 0; k < n; k++ {
		p := m.next
		if i, got, want := m.check(p); i >= 0 {
			fail(p, m.gen[p], i, got, want)
		}
		m.gen[p]++
		m.fill(p)
		m.next++
		if m.next == len(m.gen) {
			m.next = 0
			wrapped = true
		}
	}
	return wrapped
}

func main() {
	rate := flag.Float64("rate", 8, "MiB dirtied per second")
	ws := flag.Int("ws", 32, "working set in MiB")
	tick := flag.Duration("tick", 10*time.Millisecond, "time between bursts")
	flag.Parse()
	pages := *ws << 20 / pageSize
	if pages <= 0 || *rate <= 0 {
		fmt.Fprintln(os.Stderr, "dirtier: -ws and -rate must be positive")
		os.Exit(2)
	}
	m := newMem(pages)
	fmt.Printf("DIRTIER START ws=%dMiB rate=%gMiB/s\n", *ws, *rate)
	perSec := *rate * (1 << 20) / pageSize
	var cycle, verified, fails uint64
	fail := func(p int, g uint32, i int, got, want uint64) {
		fails++
		fmt.Printf("DIRTIER FAIL page=%d gen=%d word=%d got=%#x want=%#x\n", p, g, i, got, want)
	}
	start := time.Now()
	var done float64 // pages dirtied so far
	t := time.NewTicker(*tick)
	defer t.Stop()
	for now := range t.C {
		// Catch up at most one second after a pause rather than bursting.
		due := perSec * now.Sub(start).Seconds()
		if due-done > perSec {
			done = due - perSec
		}
		n := int(due - done)
		done += float64(n)
		if n > 0 && m.step(n, fail) {
			cycle++
			verified += uint64(pages)
			status := "OK"
			if fails > 0 {
				status = "FAIL"
			}
			fmt.Printf("DIRTIER %s cycle=%d pages=%d fails=%d\n", status, cycle, verified, fails)
		}
	}
}
