package netnstest

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

// listenUDP opens a UDP socket on h's address.
func listenUDP(t *testing.T, h Host, port int) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	err := h.Do(func() (err error) {
		c, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(h.Addr, uint16(port))))
		if err != nil {
			return err
		}
		// Room for every datagram of TestImpairedLink even if the reader
		// is held back: only the link may lose them.
		rc, err := c.SyscallConn()
		if err != nil {
			return err
		}
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20)
		}); err != nil {
			return err
		}
		return serr
	})
	if err != nil {
		t.Fatalf("listen in %s: %v", h.Name, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestHostsReachEachOtherOnly builds three hosts and checks that each
// reaches the others' addresses over UDP, that a host has no route out of
// the cluster network, and that Close removes every namespace.
func TestHostsReachEachOtherOnly(t *testing.T) {
	t.Parallel()
	Require(t)
	c := New(t, Config{Hosts: 3})
	if c.Impairment != "none" {
		t.Errorf("Impairment: got %q, want none", c.Impairment)
	}
	conns := make([]*net.UDPConn, len(c.Hosts))
	for i, h := range c.Hosts {
		if !c.Subnet.Contains(h.Addr) {
			t.Fatalf("host %s: %v outside %v", h.Name, h.Addr, c.Subnet)
		}
		conns[i] = listenUDP(t, h, 9000)
	}
	for i, from := range conns {
		for j, h := range c.Hosts {
			if i == j {
				continue
			}
			msg := fmt.Sprintf("%d->%d", i, j)
			if _, err := from.WriteToUDPAddrPort([]byte(msg), netip.AddrPortFrom(h.Addr, 9000)); err != nil {
				t.Fatalf("send %s: %v", msg, err)
			}
			buf := make([]byte, 64)
			conns[j].SetReadDeadline(time.Now().Add(10 * time.Second))
			n, src, err := conns[j].ReadFromUDPAddrPort(buf)
			if err != nil {
				t.Fatalf("receive %s: %v", msg, err)
			}
			if string(buf[:n]) != msg || src.Addr() != c.Hosts[i].Addr {
				t.Errorf("host %d got %q from %v, want %q from %v", j, buf[:n], src, msg, c.Hosts[i].Addr)
			}
		}
	}
	// Nothing leaves the cluster: a host has no route beyond its subnet.
	_, err := conns[0].WriteToUDPAddrPort([]byte("x"), netip.MustParseAddrPort("192.0.2.1:9"))
	if !errors.Is(err, syscall.ENETUNREACH) {
		t.Errorf("send outside the cluster: got %v, want ENETUNREACH", err)
	}
	// Command runs in the host, and Processes finds it there only.
	sleep := c.Hosts[0].Command(context.Background(), "sleep", "60")
	if err := sleep.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { sleep.Process.Kill(); sleep.Wait() }()
	for i, h := range c.Hosts {
		want := []Process(nil)
		if i == 0 {
			want = []Process{{PID: sleep.Process.Pid, Name: "sleep"}}
		}
		var ps []Process
		// ip netns exec enters the namespace, then execs sleep: wait for it.
		for k := 0; k < 100; k++ {
			var err error
			if ps, err = h.Processes(); err != nil {
				t.Fatal(err)
			}
			if cmp.Equal(want, ps) {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if diff := cmp.Diff(want, ps); diff != "" {
			t.Errorf("processes in host %d (-want +got):\n%s", i, diff)
		}
	}
	sleep.Process.Kill()
	sleep.Wait()

	names := append([]string{c.net}, c.Hosts[0].Name)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if _, err := os.Stat("/run/netns/" + n); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("namespace %s after Close: stat err %v, want not exist", n, err)
		}
	}
}

// TestImpairedLink checks Delay and Loss between two hosts, whichever way
// the kernel lets the cluster apply them: every round trip takes at least
// twice the one-way delay (a lower bound: load only adds), and the share of
// datagrams lost is within 5 standard deviations of Loss.
func TestImpairedLink(t *testing.T) {
	t.Parallel()
	Require(t)
	const (
		delay = 20 * time.Millisecond
		loss  = 0.10
		n     = 1000
	)
	c := New(t, Config{Hosts: 2, Delay: delay, Loss: loss, Seed: 1})
	t.Logf("impairment: %s", c.Impairment)
	a, b := listenUDP(t, c.Hosts[0], 9000), listenUDP(t, c.Hosts[1], 9000)
	bAddr := netip.AddrPortFrom(c.Hosts[1].Addr, 9000)

	// Echo: b returns what it gets.
	go func() {
		buf := make([]byte, 64)
		for {
			k, from, err := b.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			if buf[0] == 'e' {
				b.WriteToUDPAddrPort(buf[:k], from)
			}
		}
	}()
	var rtts []time.Duration
	buf := make([]byte, 64)
	for k := 0; len(rtts) < 10 && k < 200; k++ {
		start := time.Now()
		a.WriteToUDPAddrPort([]byte("e"+strconv.Itoa(k)), bAddr)
		a.SetReadDeadline(time.Now().Add(500 * time.Millisecond)) // later: taken as lost, tried again
		for {
			m, _, err := a.ReadFromUDPAddrPort(buf)
			if err != nil {
				break // lost one way or the other: try again
			}
			if string(buf[:m]) == "e"+strconv.Itoa(k) {
				rtts = append(rtts, time.Since(start))
				break
			}
		}
	}
	if len(rtts) < 10 {
		t.Fatalf("only %d echoes came back", len(rtts))
	}
	for _, r := range rtts {
		if r < 2*delay {
			t.Errorf("round trip %v, want at least %v (2 x delay)", r, 2*delay)
		}
	}
	t.Logf("round trips: %v", rtts)

	// Loss: count what a sink on a gets from b.
	got := make(chan int)
	go func() {
		seen := 0
		buf := make([]byte, 64)
		for {
			a.SetReadDeadline(time.Now().Add(3 * time.Second)) // silence: the stream is over
			if _, _, err := a.ReadFromUDPAddrPort(buf); err != nil {
				got <- seen
				return
			}
			if buf[0] == 'l' {
				seen++
			}
		}
	}()
	aAddr := netip.AddrPortFrom(c.Hosts[0].Addr, 9000)
	for k := 0; k < n; k++ {
		if _, err := b.WriteToUDPAddrPort([]byte("l"), aAddr); err != nil {
			t.Fatal(err)
		}
		if k%50 == 49 {
			time.Sleep(time.Millisecond) // below any queue or socket-buffer limit
		}
	}
	recv := <-got
	sd := 5 * math.Sqrt(n*loss*(1-loss))
	if lost := float64(n - recv); lost < n*loss-sd || lost > n*loss+sd {
		t.Errorf("lost %v of %d datagrams, want %v +- %.0f", lost, n, n*loss, sd)
	}
	fw, lo, ov := c.WireStats()
	t.Logf("received %d of %d; wire forwarded %d, lost %d, overflow %d", recv, n, fw, lo, ov)
}

// TestSweep checks that Sweep removes the namespaces of a dead process and
// keeps those of a live one.
func TestSweep(t *testing.T) {
	t.Parallel()
	Require(t)
	pid := deadPID(t)
	dead := fmt.Sprintf("%s%d-beef-net", Prefix, pid)
	live := fmt.Sprintf("%s%d-beef-h7", Prefix, os.Getpid())
	other := "vnsnap-not-ours-beef"
	// Under the sweeps' lock: another test's (or test binary's) Sweep
	// would delete the dead process's namespace while ip makes it.
	unlock, err := lockNetns()
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{dead, live, other} {
		if err := ip("netns", "add", n); err != nil {
			unlock()
			t.Fatal(err)
		}
		t.Cleanup(func() { ip("netns", "delete", n) })
	}
	err = sweep()
	unlock()
	if err != nil {
		t.Fatal(err)
	}
	for n, want := range map[string]bool{dead: false, live: true, other: true} {
		_, err := os.Stat("/run/netns/" + n)
		if got := err == nil; got != want {
			t.Errorf("namespace %s after Sweep: exists %v, want %v", n, got, want)
		}
	}
}

// TestTCPThroughWire sends 8 MB over TCP from one host to another through
// an impaired link (the wire on kernels without netem): offloaded checksums
// and GSO segments must arrive intact, and TCP must recover the losses.
func TestTCPThroughWire(t *testing.T) {
	t.Parallel()
	Require(t)
	c := New(t, Config{Hosts: 2, Delay: 2 * time.Millisecond, Loss: 0.01, Seed: 2})
	var ln net.Listener
	if err := c.Hosts[1].Do(func() (err error) {
		ln, err = net.Listen("tcp", netip.AddrPortFrom(c.Hosts[1].Addr, 9001).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	const size = 8 << 20
	sum := make(chan [32]byte, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			sum <- [32]byte{}
			return
		}
		defer conn.Close()
		h := sha256.New()
		io.Copy(h, conn)
		var s [32]byte
		copy(s[:], h.Sum(nil))
		sum <- s
	}()
	var conn net.Conn
	if err := c.Hosts[0].Do(func() (err error) {
		conn, err = net.DialTimeout("tcp", netip.AddrPortFrom(c.Hosts[1].Addr, 9001).String(), 10*time.Second)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	data := make([]byte, size)
	rnd := rand.New(rand.NewPCG(3, 4))
	for i := range data {
		data[i] = byte(rnd.Uint32())
	}
	if _, err := conn.Write(data); err != nil {
		t.Fatal(err)
	}
	conn.Close()
	if got, want := <-sum, sha256.Sum256(data); got != want {
		t.Errorf("sha256 of the received stream: got %x, want %x", got, want)
	}
	fw, lo, ov := c.WireStats()
	t.Logf("impairment %s: wire forwarded %d, lost %d, overflow %d", c.Impairment, fw, lo, ov)
}

// TestPartition cuts hosts 0 and 1 apart: datagrams between them vanish both
// ways while host 2 still reaches both; Heal brings the link back. Through
// a bridge and through the wire.
func TestPartition(t *testing.T) {
	t.Parallel()
	Require(t)
	for _, cfg := range []Config{{Hosts: 3}, {Hosts: 3, Delay: time.Millisecond}} {
		t.Run(fmt.Sprintf("delay=%v", cfg.Delay), func(t *testing.T) { testPartition(t, cfg) })
	}
}

func testPartition(t *testing.T, cfg Config) {
	c := New(t, cfg)
	conns := make([]*net.UDPConn, len(c.Hosts))
	for i, h := range c.Hosts {
		conns[i] = listenUDP(t, h, 9000)
	}
	// reaches sends one datagram from i to j and reports whether it came.
	seq := 0
	reaches := func(i, j int) bool {
		t.Helper()
		seq++
		msg := fmt.Sprintf("%d:%d->%d", seq, i, j)
		if _, err := conns[i].WriteToUDPAddrPort([]byte(msg), netip.AddrPortFrom(c.Hosts[j].Addr, 9000)); err != nil {
			t.Fatalf("send %s: %v", msg, err)
		}
		buf := make([]byte, 64)
		for {
			// A datagram that came gets here in well under a second; the
			// wait only bounds how long a lost one is waited for.
			conns[j].SetReadDeadline(time.Now().Add(time.Second))
			n, _, err := conns[j].ReadFromUDPAddrPort(buf)
			if err != nil {
				return false
			}
			if string(buf[:n]) == msg {
				return true
			}
		}
	}
	if !reaches(0, 1) || !reaches(1, 0) {
		t.Fatal("hosts 0 and 1 do not reach each other before the partition")
	}
	if err := c.Partition(0, 1); err != nil {
		t.Fatal(err)
	}
	for _, p := range [][2]int{{0, 1}, {1, 0}} {
		if reaches(p[0], p[1]) {
			t.Errorf("partitioned: host %d reached host %d", p[0], p[1])
		}
	}
	for _, p := range [][2]int{{2, 0}, {0, 2}, {2, 1}, {1, 2}} {
		if !reaches(p[0], p[1]) {
			t.Errorf("partition of 0 and 1: host %d no longer reaches host %d", p[0], p[1])
		}
	}
	if err := c.Heal(0, 1); err != nil {
		t.Fatal(err)
	}
	if !reaches(0, 1) || !reaches(1, 0) {
		t.Error("hosts 0 and 1 do not reach each other after Heal")
	}
	if err := c.Partition(1, 1); err == nil {
		t.Error("Partition(1, 1): got nil error, want one")
	}
}

// TestSweepSparesNamespacesBeingMade: sweeps running all the while (as other
// tests' and test binaries' New do) never delete a dead process's namespace
// that is being made under the sweeps' lock, as TestSweep makes one: without
// the lock, `ip netns add` failed when a sweep deleted its file before it
// bound the namespace there.
func TestSweepSparesNamespacesBeingMade(t *testing.T) {
	t.Parallel()
	Require(t)
	pid := deadPID(t)
	stop := make(chan struct{})
	swept := make(chan error, 1)
	go func() {
		var err error
		for {
			select {
			case <-stop:
				swept <- err
				return
			default:
			}
			if e := Sweep(); e != nil && err == nil {
				err = e
			}
		}
	}()
	defer func() {
		close(stop)
		if err := <-swept; err != nil {
			t.Errorf("Sweep: %v", err)
		}
	}()
	for i := range 30 {
		name := fmt.Sprintf("%s%d-%04x-net", Prefix, pid, i)
		unlock, err := lockNetns()
		if err != nil {
			t.Fatal(err)
		}
		err = ip("netns", "add", name)
		if err == nil {
			_, err = os.Stat("/run/netns/" + name)
		}
		unlock()
		if err != nil {
			t.Fatalf("namespace %d made under the lock while sweeping: %v", i, err)
		}
		// Unlocked now: the next sweep removes it, as a dead process's.
	}
}

// deadPID returns the PID of a process that has exited (one that ran true).
func deadPID(t *testing.T) int {
	t.Helper()
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	return cmd.Process.Pid
}
