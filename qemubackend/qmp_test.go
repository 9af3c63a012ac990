package qemubackend

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// fakeQMP is the server end of a socketpair speaking just enough QMP.
type fakeQMP struct {
	t    *testing.T
	conn *net.UnixConn
	r    *bufio.Reader
	wmu  sync.Mutex
}

type fakeCmd struct {
	Execute   string          `json:"execute"`
	ID        json.RawMessage `json:"id"`
	Arguments json.RawMessage `json:"arguments"`
	fds       []int
}

func unixPair(t *testing.T) (*net.UnixConn, *net.UnixConn) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	conv := func(fd int) *net.UnixConn {
		f := os.NewFile(uintptr(fd), "qmp")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		return c.(*net.UnixConn)
	}
	return conv(fds[0]), conv(fds[1])
}

// newFakePair returns a connected client and the fake server behind it.
func newFakePair(t *testing.T) (*QMP, *fakeQMP) {
	t.Helper()
	cc, sc := unixPair(t)
	srv := &fakeQMP{t: t, conn: sc, r: bufio.NewReader(sc)}
	t.Cleanup(func() { sc.Close() })
	errc := make(chan error, 1)
	go func() {
		srv.send(`{"QMP": {"version": {"qemu": {"micro": 2, "minor": 0, "major": 10}, "package": "x"}, "capabilities": ["oob"]}}`)
		c, err := srv.recv()
		if err == nil && c.Execute != "qmp_capabilities" {
			err = fmt.Errorf("first command %q, want qmp_capabilities", c.Execute)
		}
		if err == nil {
			srv.reply(c, `{}`)
		}
		errc <- err
	}()
	q, err := NewQMP(context.Background(), cc)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	return q, srv
}

func (s *fakeQMP) send(line string) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if _, err := s.conn.Write([]byte(line + "\r\n")); err != nil {
		s.t.Errorf("fake qmp write: %v", err)
	}
}

// recv reads one command, with any file descriptors passed alongside it. A
// command and its fds arrive in one message, as QEMU expects.
func (s *fakeQMP) recv() (fakeCmd, error) {
	var c fakeCmd
	if s.r.Buffered() == 0 {
		buf := make([]byte, 4096)
		oob := make([]byte, 128)
		n, oobn, _, _, err := s.conn.ReadMsgUnix(buf, oob)
		if err != nil {
			return c, err
		}
		if oobn > 0 {
			msgs, _ := syscall.ParseSocketControlMessage(oob[:oobn])
			for _, m := range msgs {
				fds, _ := syscall.ParseUnixRights(&m)
				c.fds = append(c.fds, fds...)
			}
		}
		s.r = bufio.NewReader(&prefixReader{buf[:n], s.conn})
	}
	line, err := s.r.ReadBytes('\n')
	if err != nil {
		return c, err
	}
	return c, json.Unmarshal(line, &c)
}

type prefixReader struct {
	p []byte
	r *net.UnixConn
}

func (p *prefixReader) Read(b []byte) (int, error) {
	if len(p.p) > 0 {
		n := copy(b, p.p)
		p.p = p.p[n:]
		return n, nil
	}
	return p.r.Read(b)
}

func (s *fakeQMP) reply(c fakeCmd, ret string) {
	s.send(fmt.Sprintf(`{"return": %s, "id": %s}`, ret, c.ID))
}

func (s *fakeQMP) event(name, data string) {
	s.send(fmt.Sprintf(`{"timestamp": {"seconds": 1700000000, "microseconds": 5}, "event": %q, "data": %s}`, name, data))
}

func TestQMPExecute(t *testing.T) {
	q, srv := newFakePair(t)
	if got, want := q.Version(), (QEMUVersion{10, 0, 2}); got != want {
		t.Errorf("Version() = %v, want %v", got, want)
	}
	go func() {
		c, err := srv.recv()
		if err != nil {
			t.Error(err)
			return
		}
		if c.Execute != "query-status" {
			t.Errorf("got command %q, want query-status", c.Execute)
		}
		srv.reply(c, `{"status": "running", "running": true}`)
		c, _ = srv.recv()
		srv.send(fmt.Sprintf(`{"error": {"class": "GenericError", "desc": "no way"}, "id": %s}`, c.ID))
	}()
	var st struct{ Status string }
	if err := q.Execute(context.Background(), "query-status", nil, &st); err != nil || st.Status != "running" {
		t.Fatalf("query-status = %q, %v; want running, nil", st.Status, err)
	}
	err := q.Execute(context.Background(), "stop", nil, nil)
	var qe *QMPError
	if !errors.As(err, &qe) || qe.Class != "GenericError" || qe.Desc != "no way" || qe.Command != "stop" {
		t.Fatalf("got error %v, want a QMPError GenericError 'no way' for stop", err)
	}
}

// A subscriber that does not read must delay neither command replies nor
// other subscribers, and must get every event afterwards, in order.
func TestQMPEventsDoNotBlockReplies(t *testing.T) {
	q, srv := newFakePair(t)
	slow := q.Subscribe()
	defer slow.Close()
	const n = 5000
	go func() {
		c, err := srv.recv()
		if err != nil {
			t.Error(err)
			return
		}
		for i := 0; i < n; i++ {
			srv.event("MIGRATION_PASS", fmt.Sprintf(`{"pass": %d}`, i))
		}
		srv.reply(c, `{}`)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := q.Execute(ctx, "migrate", map[string]any{"uri": "fd:x"}, nil); err != nil {
		t.Fatalf("reply blocked behind unread events: %v", err)
	}
	for i := 0; i < n; i++ {
		ev := <-slow.C()
		var d struct{ Pass int }
		if err := json.Unmarshal(ev.Data, &d); err != nil || ev.Name != "MIGRATION_PASS" || d.Pass != i {
			t.Fatalf("event %d: got %s %s, want MIGRATION_PASS pass=%d", i, ev.Name, ev.Data, i)
		}
		if ev.QEMUTime.Unix() != 1700000000 || ev.Received.IsZero() {
			t.Fatalf("event %d: timestamps %v / %v", i, ev.QEMUTime, ev.Received)
		}
	}
}

// Replies are matched by id, not by order.
func TestQMPConcurrentCommands(t *testing.T) {
	q, srv := newFakePair(t)
	go func() {
		a, _ := srv.recv()
		b, _ := srv.recv()
		srv.reply(b, fmt.Sprintf(`{"name": %q}`, b.Execute))
		srv.reply(a, fmt.Sprintf(`{"name": %q}`, a.Execute))
	}()
	var wg sync.WaitGroup
	got := make([]string, 2)
	for i, cmd := range []string{"query-name", "query-uuid"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var r struct{ Name string }
			if err := q.Execute(context.Background(), cmd, nil, &r); err != nil {
				t.Error(err)
			}
			got[i] = r.Name
		}()
	}
	wg.Wait()
	if diff := cmp.Diff([]string{"query-name", "query-uuid"}, got); diff != "" {
		t.Errorf("replies mismatched (-want +got):\n%s", diff)
	}
}

func TestQMPPassesFile(t *testing.T) {
	q, srv := newFakePair(t)
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	go func() {
		c, err := srv.recv()
		if err != nil || len(c.fds) != 1 {
			t.Errorf("getfd: got fds %v, err %v; want one fd", c.fds, err)
			srv.reply(c, `{}`)
			return
		}
		f := os.NewFile(uintptr(c.fds[0]), "passed")
		f.Write([]byte("through the socket"))
		f.Close()
		srv.reply(c, `{}`)
	}()
	if err := q.ExecuteWithFile(context.Background(), "getfd", map[string]any{"fdname": "x"}, nil, pw); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	b := make([]byte, 64)
	n, _ := pr.Read(b)
	if got := string(b[:n]); got != "through the socket" {
		t.Errorf("read %q from the passed pipe, want %q", got, "through the socket")
	}
}

// When QEMU goes away, a pending command fails with ErrClosed, and a
// subscription delivers what it holds and then closes.
func TestQMPConnectionEnds(t *testing.T) {
	q, srv := newFakePair(t)
	sub := q.Subscribe()
	defer sub.Close()
	go func() {
		srv.recv()
		srv.event("STOP", `{}`)
		srv.event("SHUTDOWN", `{"guest": false}`)
		srv.conn.Close()
	}()
	err := q.Execute(context.Background(), "quit", nil, nil)
	if !errors.Is(err, ErrClosed) {
		t.Fatalf("got %v, want ErrClosed", err)
	}
	var names []string
	for ev := range sub.C() {
		names = append(names, ev.Name)
	}
	if diff := cmp.Diff([]string{"STOP", "SHUTDOWN"}, names); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
	if err := q.Execute(context.Background(), "query-status", nil, nil); !errors.Is(err, ErrClosed) {
		t.Errorf("after close: got %v, want ErrClosed", err)
	}
	if _, ok := <-q.Subscribe().C(); ok {
		t.Error("subscription on a closed connection delivered an event")
	}
}

func TestQMPContextCancel(t *testing.T) {
	q, srv := newFakePair(t)
	go srv.recv() // never replies
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := q.Execute(ctx, "migrate", nil, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want DeadlineExceeded", err)
	}
}

func TestQMPRejectsNonQMPGreeting(t *testing.T) {
	cc, sc := unixPair(t)
	defer sc.Close()
	defer cc.Close()
	go sc.Write([]byte("hello\n"))
	if _, err := NewQMP(context.Background(), cc); err == nil {
		t.Fatal("NewQMP accepted a non-QMP greeting")
	}
}

// TestQMPExplainsClose: a connection the peer ends makes every later
// command's error carry the explanation (a QEMU's exit status and stderr);
// one the client closes does not ask for it.
func TestQMPExplainsClose(t *testing.T) {
	q, srv := newFakePair(t)
	asked := make(chan struct{}, 2)
	q.explainClose(func() string { asked <- struct{}{}; return " (qemu x: signal: aborted)" })
	go func() {
		srv.recv()
		srv.conn.Close()
	}()
	err := q.Execute(context.Background(), "blockdev-snapshot-sync", nil, nil)
	if !errors.Is(err, ErrClosed) || !strings.Contains(err.Error(), "signal: aborted") {
		t.Fatalf("got %v, want ErrClosed with the explanation", err)
	}
	if err := q.Execute(context.Background(), "query-status", nil, nil); err == nil || !strings.Contains(err.Error(), "signal: aborted") {
		t.Errorf("after close: got %v, want the explanation", err)
	}
	if n := len(asked); n != 1 {
		t.Errorf("explanation asked %d times, want once", n)
	}

	q2, _ := newFakePair(t)
	q2.explainClose(func() string { asked <- struct{}{}; return "" })
	<-asked // drain the first test's
	q2.Close()
	if len(asked) != 0 {
		t.Error("Close asked for an explanation")
	}
}
