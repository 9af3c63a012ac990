// Package mesh is what the guest programs that talk to their peers
// (tcpstream, npb, swarm) share: the -peers/-self addressing, a listener
// that waits for the guest's address, and a dialler that retries until the
// peer listens. TCP keep-alive is off everywhere, so a pause of any length
// (a snapshot, a restore, TCP backoff while frames are dropped) only delays
// a transfer and never breaks a connection.
package mesh

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"
)

// Peers turns -peers (comma-separated IPs, in rank order, this VM's
// included) and -self into host:port addresses and this VM's index.
func Peers(peers, self string, port int) ([]string, int, error) {
	var out []string
	idx := -1
	for i, p := range strings.Split(peers, ",") {
		if p == self {
			idx = i
		}
		out = append(out, net.JoinHostPort(p, fmt.Sprint(port)))
	}
	if idx < 0 {
		return nil, -1, fmt.Errorf("-self %q not in -peers %q", self, peers)
	}
	return out, idx, nil
}

// Listen listens on addr, retrying for up to 30 s: at boot eth0 may not have
// its address yet.
func Listen(addr string) (net.Listener, error) {
	lc := net.ListenConfig{KeepAlive: -1}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		ln, err := lc.Listen(context.Background(), "tcp", addr)
		if err == nil || time.Now().After(deadline) {
			return ln, err
		}
	}
}

// Dial connects to addr, retrying every interval until it succeeds.
func Dial(addr string, interval time.Duration) net.Conn {
	d := net.Dialer{KeepAlive: -1, Timeout: 5 * time.Second}
	for {
		c, err := d.Dial("tcp", addr)
		if err == nil {
			return c
		}
		time.Sleep(interval)
	}
}

// DialHello connects to addr (retrying as Dial does) and introduces itself
// as peer self: a connection starts with the dialler's index, 2 bytes
// big-endian.
func DialHello(addr string, self int, interval time.Duration) net.Conn {
	for {
		c := Dial(addr, interval)
		var b [2]byte
		binary.BigEndian.PutUint16(b[:], uint16(self))
		if _, err := c.Write(b[:]); err == nil {
			return c
		}
		c.Close()
		time.Sleep(interval)
	}
}

// AcceptHello accepts the next connection that introduces itself and
// returns it with the peer's index. A connection closed before its first
// byte is a dialler that gave up (its dial timed out on a loaded host after
// the SYN got through) and dials again: it is skipped.
func AcceptHello(ln net.Listener) (net.Conn, int, error) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return nil, 0, err
		}
		var b [2]byte
		n, err := io.ReadFull(c, b[:])
		if n == 0 && errors.Is(err, io.EOF) {
			c.Close()
			continue
		}
		if err != nil {
			c.Close()
			return nil, 0, fmt.Errorf("hello from %s: %w", c.RemoteAddr(), err)
		}
		return c, int(binary.BigEndian.Uint16(b[:])), nil
	}
}
