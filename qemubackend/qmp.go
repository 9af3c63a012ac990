package qemubackend

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
)

// Event is an asynchronous QMP event.
type Event struct {
	Name     string          // e.g. "STOP", "MIGRATION"
	Data     json.RawMessage // the event's "data" member, or nil
	QEMUTime time.Time       // QEMU's own timestamp
	Received time.Time       // host clock when the line was read
}

// QMPError is an error reply to a QMP command.
type QMPError struct {
	Command string
	Class   string
	Desc    string
}

// Error implements error.
func (e *QMPError) Error() string { return fmt.Sprintf("%s: %s: %s", e.Command, e.Class, e.Desc) }

// ErrClosed is returned by commands on a client whose connection has ended.
var ErrClosed = errors.New("qmp connection closed")

// QMP is a client for one QEMU Machine Protocol connection. Commands may be
// issued from several goroutines; each waits for its own reply, matched by id.
// A single reader goroutine never blocks on a consumer: events go into each
// subscription's unbounded queue, so a slow event reader can delay neither
// replies nor other subscribers, and no event is dropped.
type QMP struct {
	conn    *net.UnixConn
	version QEMUVersion

	wmu sync.Mutex // serialises writes (a command and its fds)

	mu      sync.Mutex
	nextID  uint64
	pending map[string]chan reply
	subs    map[*Subscription]struct{}
	err     error // set once the reader stops
	done    chan struct{}
	// why, if set, says why the connection ended (the QEMU process's exit
	// status and the tail of its standard error); closing is set by Close,
	// when the end is the client's own doing.
	why     func() string
	closing bool
}

type reply struct {
	Return json.RawMessage `json:"return"`
	Error  *struct {
		Class string `json:"class"`
		Desc  string `json:"desc"`
	} `json:"error"`
}

// DialQMP connects to the QMP unix socket at path, retrying until ctx ends
// (QEMU creates the socket a little after it starts), reads the greeting and
// negotiates capabilities.
func DialQMP(ctx context.Context, path string) (*QMP, error) {
	var d net.Dialer
	for {
		c, err := d.DialContext(ctx, "unix", path)
		if err == nil {
			q, err := NewQMP(ctx, c.(*net.UnixConn))
			if err != nil {
				c.Close()
			}
			return q, err
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("qmp dial %s: %w (last error: %v)", path, ctx.Err(), err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// NewQMP runs the QMP handshake on an open connection and starts its reader.
// The client owns conn from then on.
func NewQMP(ctx context.Context, conn *net.UnixConn) (*QMP, error) {
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetReadDeadline(dl)
	}
	r := bufio.NewReaderSize(conn, 64<<10)
	line, err := r.ReadBytes('\n')
	if err != nil {
		return nil, fmt.Errorf("qmp greeting: %w", err)
	}
	var greet struct {
		QMP *struct {
			Version struct {
				QEMU QEMUVersion `json:"qemu"`
			} `json:"version"`
		} `json:"QMP"`
	}
	if err := json.Unmarshal(line, &greet); err != nil || greet.QMP == nil {
		return nil, fmt.Errorf("qmp greeting: not a QMP greeting: %q", bytes.TrimSpace(line))
	}
	if _, err := conn.Write([]byte(`{"execute":"qmp_capabilities","id":"cap"}` + "\n")); err != nil {
		return nil, fmt.Errorf("qmp_capabilities: %w", err)
	}
	for {
		line, err := r.ReadBytes('\n')
		if err != nil {
			return nil, fmt.Errorf("qmp_capabilities: %w", err)
		}
		var rep reply
		if json.Unmarshal(line, &rep) == nil && (rep.Return != nil || rep.Error != nil) {
			if rep.Error != nil {
				return nil, &QMPError{"qmp_capabilities", rep.Error.Class, rep.Error.Desc}
			}
			break
		}
	}
	_ = conn.SetReadDeadline(time.Time{})
	q := &QMP{
		conn:    conn,
		version: greet.QMP.Version.QEMU,
		pending: map[string]chan reply{},
		subs:    map[*Subscription]struct{}{},
		done:    make(chan struct{}),
	}
	go q.read(r)
	return q, nil
}

// explainClose makes the error of every command after the connection has
// ended carry why(): the peer's exit status, say. why runs once, on the
// reader's goroutine, when the connection ends other than by Close; it may
// wait a little for the peer to exit.
func (q *QMP) explainClose(why func() string) {
	q.mu.Lock()
	q.why = why
	q.mu.Unlock()
}

// Version is the QEMU version from the QMP greeting.
func (q *QMP) Version() QEMUVersion { return q.version }

// Done is closed when the connection has ended (QEMU exited or Close).
func (q *QMP) Done() <-chan struct{} { return q.done }

// Close closes the connection; pending commands fail with ErrClosed and
// subscriptions end after delivering what they hold.
func (q *QMP) Close() error {
	q.mu.Lock()
	q.closing = true
	q.mu.Unlock()
	err := q.conn.Close()
	<-q.done
	return err
}

func (q *QMP) read(r *bufio.Reader) {
	var err error
	for {
		var line []byte
		line, err = r.ReadBytes('\n')
		if err != nil {
			break
		}
		now := time.Now()
		var m struct {
			Event     string          `json:"event"`
			Data      json.RawMessage `json:"data"`
			ID        json.RawMessage `json:"id"`
			Timestamp struct {
				Seconds      int64 `json:"seconds"`
				Microseconds int64 `json:"microseconds"`
			} `json:"timestamp"`
		}
		if json.Unmarshal(line, &m) != nil {
			continue // not JSON: ignore, as QEMU never sends it
		}
		if m.Event != "" {
			ev := Event{Name: m.Event, Data: m.Data, Received: now,
				QEMUTime: time.Unix(m.Timestamp.Seconds, m.Timestamp.Microseconds*1000)}
			q.mu.Lock()
			for s := range q.subs {
				s.push(ev)
			}
			q.mu.Unlock()
			continue
		}
		var rep reply
		if json.Unmarshal(line, &rep) != nil {
			continue
		}
		q.mu.Lock()
		ch, ok := q.pending[string(m.ID)]
		delete(q.pending, string(m.ID))
		q.mu.Unlock()
		if ok {
			ch <- rep // buffered
		}
	}
	q.mu.Lock()
	why := q.why
	if q.closing {
		why = nil
	}
	q.mu.Unlock()
	extra := ""
	if why != nil {
		extra = why()
	}
	q.mu.Lock()
	q.err = fmt.Errorf("%w: %v%s", ErrClosed, err, extra)
	for id, ch := range q.pending {
		close(ch)
		delete(q.pending, id)
	}
	for s := range q.subs {
		s.end()
	}
	q.subs = nil
	q.mu.Unlock()
	close(q.done)
}

// Execute runs command with args (marshalled to JSON; nil for none) and
// unmarshals the reply's "return" member into result (ignored if nil). A QMP
// error reply is returned as a *QMPError.
func (q *QMP) Execute(ctx context.Context, command string, args, result any) error {
	return q.ExecuteWithFile(ctx, command, args, result, nil)
}

// ExecuteWithFile is Execute that also passes f to QEMU over SCM_RIGHTS, as
// getfd and add-fd need. f stays open; the caller may close it once this
// returns.
func (q *QMP) ExecuteWithFile(ctx context.Context, command string, args, result any, f *os.File) error {
	q.mu.Lock()
	if q.err != nil {
		err := q.err
		q.mu.Unlock()
		return err
	}
	q.nextID++
	id := fmt.Sprintf(`"%d"`, q.nextID)
	ch := make(chan reply, 1)
	q.pending[id] = ch
	q.mu.Unlock()

	msg := map[string]any{"execute": command, "id": json.RawMessage(id)}
	if args != nil {
		msg["arguments"] = args
	}
	b, err := json.Marshal(msg)
	if err != nil {
		q.forget(id)
		return fmt.Errorf("%s: marshal arguments: %w", command, err)
	}
	b = append(b, '\n')
	q.wmu.Lock()
	if f != nil {
		_, _, err = q.conn.WriteMsgUnix(b, syscall.UnixRights(int(f.Fd())), nil)
	} else {
		_, err = q.conn.Write(b)
	}
	q.wmu.Unlock()
	if err != nil {
		q.forget(id)
		return fmt.Errorf("%s: %w", command, err)
	}
	select {
	case rep, ok := <-ch:
		if !ok {
			q.mu.Lock()
			err := q.err
			q.mu.Unlock()
			return fmt.Errorf("%s: %w", command, err)
		}
		if rep.Error != nil {
			return &QMPError{command, rep.Error.Class, rep.Error.Desc}
		}
		if result != nil && len(rep.Return) > 0 {
			if err := json.Unmarshal(rep.Return, result); err != nil {
				return fmt.Errorf("%s: decode reply: %w", command, err)
			}
		}
		return nil
	case <-ctx.Done():
		// The reply, if it comes, is dropped by the reader.
		q.forget(id)
		return fmt.Errorf("%s: %w", command, ctx.Err())
	}
}

func (q *QMP) forget(id string) {
	q.mu.Lock()
	delete(q.pending, id)
	q.mu.Unlock()
}

// Subscribe returns a subscription that receives every event read after this
// call, in order, without loss. Subscribe before issuing the command whose
// events you want. The caller must Close it (or the connection must end).
func (q *QMP) Subscribe() *Subscription {
	s := &Subscription{c: make(chan Event), wake: make(chan struct{}, 1), stop: make(chan struct{})}
	go s.pump()
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.subs == nil { // connection already ended
		s.end()
		return s
	}
	q.subs[s] = struct{}{}
	s.q = q
	return s
}

// Subscription is an unbounded, ordered queue of events from one QMP
// connection.
type Subscription struct {
	q     *QMP
	c     chan Event
	wake  chan struct{}
	stop  chan struct{}
	once  sync.Once
	mu    sync.Mutex
	queue []Event
	ended bool
}

// C delivers the events. It is closed after the last event once the
// connection has ended, or at once after Close.
func (s *Subscription) C() <-chan Event { return s.c }

// Close stops the subscription and discards undelivered events.
func (s *Subscription) Close() {
	if s.q != nil {
		s.q.mu.Lock()
		if s.q.subs != nil {
			delete(s.q.subs, s)
		}
		s.q.mu.Unlock()
	}
	s.once.Do(func() { close(s.stop) })
}

func (s *Subscription) push(ev Event) {
	s.mu.Lock()
	s.queue = append(s.queue, ev)
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *Subscription) end() {
	s.mu.Lock()
	s.ended = true
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *Subscription) pump() {
	defer close(s.c)
	for {
		s.mu.Lock()
		q, ended := s.queue, s.ended
		s.queue = nil
		s.mu.Unlock()
		for _, ev := range q {
			select {
			case s.c <- ev:
			case <-s.stop:
				return
			}
		}
		if len(q) > 0 {
			continue
		}
		if ended {
			return
		}
		select {
		case <-s.wake:
		case <-s.stop:
			return
		}
	}
}
