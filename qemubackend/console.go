package qemubackend

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vnsnap/vnsnap/realbackend/hv"
)

// Line is one line of a VM's serial console, stamped with the host clock when
// it was read.
type Line struct {
	At   time.Time
	Text string
}

// Heartbeat returns the counter of a heartbeat line ("HB <n>").
func (l Line) Heartbeat() (uint64, bool) {
	rest, ok := strings.CutPrefix(l.Text, "HB ")
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseUint(rest, 10, 64)
	return n, err == nil
}

// Console collects a VM's serial output. The host stamps each line on arrival,
// so gaps between heartbeat lines measure the VM's pauses from outside.
type Console struct {
	mu    sync.Mutex
	cond  *sync.Cond
	lines []Line
	done  bool
}

func newConsole(r io.Reader, tee io.Writer) *Console {
	c := &Console{}
	c.cond = sync.NewCond(&c.mu)
	go func() {
		br := bufio.NewReaderSize(r, 64<<10)
		for {
			s, err := br.ReadString('\n')
			now := time.Now()
			if s = strings.TrimRight(s, "\r\n"); s != "" {
				if tee != nil {
					fmt.Fprintf(tee, "%s %s\n", now.Format("15:04:05.000000"), s)
				}
				c.mu.Lock()
				c.lines = append(c.lines, Line{now, s})
				c.mu.Unlock()
				c.cond.Broadcast()
			}
			if err != nil {
				break
			}
		}
		c.mu.Lock()
		c.done = true
		c.mu.Unlock()
		c.cond.Broadcast()
	}()
	return c
}

// Lines returns a copy of the lines read so far.
func (c *Console) Lines() []Line {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Line(nil), c.lines...)
}

// Len returns the number of lines read so far; pass it to WaitFor to wait
// only for later lines.
func (c *Console) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.lines)
}

// WaitFor waits until a line with index >= from satisfies match and returns
// it with its index. It fails when ctx ends or the console closes first.
func (c *Console) WaitFor(ctx context.Context, from int, match func(Line) bool) (Line, int, error) {
	stop := context.AfterFunc(ctx, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.cond.Broadcast()
	})
	defer stop()
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := from; ; {
		for ; i < len(c.lines); i++ {
			if match(c.lines[i]) {
				return c.lines[i], i, nil
			}
		}
		if c.done {
			return Line{}, 0, fmt.Errorf("console closed: %w", io.EOF)
		}
		if err := ctx.Err(); err != nil {
			return Line{}, 0, err
		}
		c.cond.Wait()
	}
}

// WaitHeartbeatAfter waits for the first heartbeat that arrived after t. Its
// deadline derives from the console's progress: it gives up when no line at
// all has arrived for silence (a paused or stuck guest), however long a
// loaded host takes to let a running guest print; ctx bounds it overall.
func (c *Console) WaitHeartbeatAfter(ctx context.Context, t time.Time, silence time.Duration) (Line, error) {
	isAfter := func(l Line) bool { _, ok := l.Heartbeat(); return ok && l.At.After(t) }
	for from := 0; ; {
		wctx, cancel := context.WithTimeout(ctx, silence)
		l, i, err := c.WaitFor(wctx, from, func(l Line) bool { return isAfter(l) || l.At.After(t) })
		cancel()
		if err != nil {
			return Line{}, err
		}
		if isAfter(l) {
			return l, nil
		}
		from = i + 1 // a line after t that is no heartbeat: the guest moves
	}
}

// WaitPrefix waits for a line at index >= from that starts with prefix.
func (c *Console) WaitPrefix(ctx context.Context, from int, prefix string) (Line, int, error) {
	return c.WaitFor(ctx, from, func(l Line) bool { return strings.HasPrefix(l.Text, prefix) })
}

// HeartbeatGap is the largest gap between consecutive heartbeat lines that
// arrived within a window: a VM's pause seen from outside (plus up to one
// heartbeat interval). It is the port's type, so the adapter passes it on.
type HeartbeatGap = hv.HeartbeatGap

// MaxHeartbeatGap returns the largest gap between heartbeats that arrived in
// [from, to].
func (c *Console) MaxHeartbeatGap(from, to time.Time) HeartbeatGap {
	c.mu.Lock()
	defer c.mu.Unlock()
	var g HeartbeatGap
	var prev *Line
	var prevN uint64
	for i := range c.lines {
		l := &c.lines[i]
		n, ok := l.Heartbeat()
		if !ok || l.At.Before(from) || l.At.After(to) {
			continue
		}
		g.Count++
		if prev != nil {
			if d := l.At.Sub(prev.At); d > g.Gap {
				g = HeartbeatGap{Gap: d, Before: prevN, After: n, At: prev.At, Count: g.Count}
			}
		}
		prev, prevN = l, n
	}
	return g
}

// LastHeartbeat returns the last heartbeat that arrived before t.
func (c *Console) LastHeartbeat(t time.Time) (Line, uint64, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := len(c.lines) - 1; i >= 0; i-- {
		l := c.lines[i]
		if n, ok := l.Heartbeat(); ok && l.At.Before(t) {
			return l, n, true
		}
	}
	return Line{}, 0, false
}
