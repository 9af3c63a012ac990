package vnet

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
	"time"

	"github.com/vnsnap/vnsnap/core"
	"github.com/vnsnap/vnsnap/internal/regfile"
)

// Controller is the control surface a snapshot driver needs from a switch,
// local (*Switch) or remote (*Client).
type Controller interface {
	SetEpoch(vm core.VMID, e core.Epoch) error
	SetAlgorithm(a core.Algorithm) error
}

var (
	_ Controller = (*Switch)(nil)
	_ Controller = (*Client)(nil)
)

// The control operations (ControlRequest.Op).
const (
	OpPing         = "ping"
	OpSetEpoch     = "set-epoch"     // vm, epoch
	OpEpoch        = "epoch"         // vm -> epoch
	OpSetAlgorithm = "set-algorithm" // algorithm
	OpCounters     = "counters"      // -> counters
	OpDumpLog      = "dump-log"      // epoch [, path] -> frames, data (if no path)
	OpForgetLog    = "forget-log"    // epoch
	OpReplay       = "replay"        // data or path -> frames
	OpFlushLog     = "flush-log"
)

// ControlRequest is one line of the control protocol, client to switch.
type ControlRequest struct {
	ID        uint64     `json:"id"`
	Op        string     `json:"op"`
	VM        core.VMID  `json:"vm"`
	Epoch     core.Epoch `json:"epoch,omitempty"`
	Algorithm string     `json:"algorithm,omitempty"`
	// Path names a file on the switch's host: dump-log writes the
	// in-transit log there, replay reads it from there.
	Path string `json:"path,omitempty"`
	// Data is an in-transit log (base64 in JSON), for replay.
	Data []byte `json:"data,omitempty"`
}

// ControlResponse is one line of the control protocol, switch to client,
// answering the request with the same ID.
type ControlResponse struct {
	ID    uint64 `json:"id"`
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
	// Code classifies Error: "unknown-vm", "epoch-backwards", "closed",
	// "bad-request" or "internal".
	Code     string     `json:"code,omitempty"`
	Epoch    core.Epoch `json:"epoch,omitempty"`
	Frames   int        `json:"frames,omitempty"`
	Data     []byte     `json:"data,omitempty"`
	Counters *Counters  `json:"counters,omitempty"`
}

// maxControlLine bounds a control line (an in-transit log travels in one).
const maxControlLine = 256 << 20

// ServeControl serves the control protocol on l until l fails or the switch
// closes; Close closes l and every control connection. It returns nil when
// the switch closed it.
func (s *Switch) ServeControl(l net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		l.Close()
		return ErrClosed
	}
	s.ctrlLns[l] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.ctrlLns, l)
		s.mu.Unlock()
	}()
	for {
		conn, err := l.Accept()
		if err != nil {
			select {
			case <-s.done:
				return nil
			default:
				return fmt.Errorf("vnet: control accept: %w", err)
			}
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			conn.Close()
			return nil
		}
		s.ctrlConns[conn] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serveControlConn(conn)
	}
}

// serveControlConn answers requests in order, one line each.
func (s *Switch) serveControlConn(conn net.Conn) {
	defer s.wg.Done()
	defer func() {
		conn.Close()
		s.mu.Lock()
		delete(s.ctrlConns, conn)
		s.mu.Unlock()
	}()
	sc := bufio.NewScanner(conn)
	sc.Buffer(make([]byte, 64<<10), maxControlLine)
	enc := json.NewEncoder(conn)
	for sc.Scan() {
		var req ControlRequest
		var resp ControlResponse
		if err := json.Unmarshal(sc.Bytes(), &req); err != nil {
			resp = ControlResponse{Error: fmt.Sprintf("bad request: %v", err), Code: "bad-request"}
		} else {
			resp = s.handle(req)
			resp.ID = req.ID
		}
		resp.OK = resp.Error == ""
		if err := enc.Encode(&resp); err != nil {
			return
		}
	}
	if err := sc.Err(); err != nil && !errors.Is(err, net.ErrClosed) {
		s.log.Warn("control connection", "err", err)
	}
}

func (s *Switch) handle(req ControlRequest) ControlResponse {
	var r ControlResponse
	var err error
	switch req.Op {
	case OpPing:
	case OpSetEpoch:
		err = s.SetEpoch(req.VM, req.Epoch)
	case OpEpoch:
		r.Epoch, err = s.Epoch(req.VM)
	case OpSetAlgorithm:
		var a core.Algorithm
		if a, err = core.ParseAlgorithm(req.Algorithm); err == nil {
			err = s.SetAlgorithm(a)
		}
	case OpCounters:
		c := s.Counters()
		r.Counters = &c
	case OpDumpLog:
		var buf bytes.Buffer
		if r.Frames, err = s.WriteInTransit(&buf, req.Epoch); err == nil {
			if req.Path == "" {
				r.Data = buf.Bytes()
			} else {
				err = os.WriteFile(req.Path, buf.Bytes(), 0o644)
			}
		}
	case OpForgetLog:
		s.ForgetInTransit(req.Epoch)
	case OpReplay:
		data := req.Data
		if req.Path != "" {
			data, err = regfile.ReadFile(req.Path, maxControlLine)
		}
		var fs []LoggedFrame
		if err == nil {
			fs, err = ReadInTransit(bytes.NewReader(data))
		}
		if err == nil {
			r.Frames, err = s.Replay(fs)
		}
	case OpFlushLog:
		err = s.FlushLog()
	default:
		return ControlResponse{Error: fmt.Sprintf("unknown op %q", req.Op), Code: "bad-request"}
	}
	if err != nil {
		r.Error, r.Code = err.Error(), errorCode(err)
	}
	return r
}

func errorCode(err error) string {
	switch {
	case errors.Is(err, ErrUnknownVM):
		return "unknown-vm"
	case errors.Is(err, ErrEpochBackwards):
		return "epoch-backwards"
	case errors.Is(err, ErrClosed):
		return "closed"
	default:
		return "internal"
	}
}

// ErrRemote is wrapped by errors a switch returned over the control
// protocol that have no sentinel of their own.
var ErrRemote = errors.New("vnet: remote switch error")

func codeError(code string) error {
	switch code {
	case "unknown-vm":
		return ErrUnknownVM
	case "epoch-backwards":
		return ErrEpochBackwards
	case "closed":
		return ErrClosed
	default:
		return ErrRemote
	}
}

// Client is a control protocol client. Its methods may be called
// concurrently; requests are sent one at a time.
type Client struct {
	// Timeout bounds each call made without a context; 0 means 10s.
	Timeout time.Duration

	mu   sync.Mutex
	conn net.Conn
	sc   *bufio.Scanner
	enc  *json.Encoder
	next uint64
	err  error // set by a transport failure: the stream may be out of step
}

// Dial connects to a switch's control socket ("unix" and a path, or "tcp"
// and host:port).
func Dial(ctx context.Context, network, addr string) (*Client, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, fmt.Errorf("vnet: dial control %s: %w", addr, err)
	}
	sc := bufio.NewScanner(conn)
	sc.Buffer(make([]byte, 64<<10), maxControlLine)
	return &Client{conn: conn, sc: sc, enc: json.NewEncoder(conn)}, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// Call sends one request and waits for its response. A response with an
// error becomes an error wrapping the matching sentinel (ErrUnknownVM,
// ErrEpochBackwards, ErrClosed) or ErrRemote. After a transport failure
// (including ctx ending) every later call fails too: Close and Dial again.
func (c *Client) Call(ctx context.Context, req ControlRequest) (ControlResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return ControlResponse{}, fmt.Errorf("vnet control %s: broken connection: %w", req.Op, c.err)
	}
	resp, err := c.roundTrip(ctx, req)
	if err != nil {
		c.err = err
		return ControlResponse{}, fmt.Errorf("vnet control %s: %w", req.Op, err)
	}
	if !resp.OK {
		return resp, fmt.Errorf("vnet control %s: %w: %s", req.Op, codeError(resp.Code), resp.Error)
	}
	return resp, nil
}

func (c *Client) roundTrip(ctx context.Context, req ControlRequest) (ControlResponse, error) {
	c.next++
	req.ID = c.next
	dl, ok := ctx.Deadline()
	if !ok {
		dl = time.Time{}
	}
	c.conn.SetDeadline(dl)
	stop := context.AfterFunc(ctx, func() { c.conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if err := c.enc.Encode(&req); err != nil {
		return ControlResponse{}, err
	}
	if !c.sc.Scan() {
		if err := c.sc.Err(); err != nil {
			return ControlResponse{}, err
		}
		return ControlResponse{}, net.ErrClosed
	}
	var resp ControlResponse
	if err := json.Unmarshal(c.sc.Bytes(), &resp); err != nil {
		return ControlResponse{}, fmt.Errorf("bad response: %w", err)
	}
	if resp.ID != req.ID {
		return ControlResponse{}, fmt.Errorf("response id %d, want %d", resp.ID, req.ID)
	}
	return resp, nil
}

func (c *Client) call(req ControlRequest) (ControlResponse, error) {
	t := c.Timeout
	if t == 0 {
		t = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), t)
	defer cancel()
	return c.Call(ctx, req)
}

// SetEpoch calls Switch.SetEpoch remotely; it returns after the flip is
// effective.
func (c *Client) SetEpoch(vm core.VMID, e core.Epoch) error {
	_, err := c.call(ControlRequest{Op: OpSetEpoch, VM: vm, Epoch: e})
	return err
}

// SetAlgorithm calls Switch.SetAlgorithm remotely.
func (c *Client) SetAlgorithm(a core.Algorithm) error {
	_, err := c.call(ControlRequest{Op: OpSetAlgorithm, Algorithm: a.String()})
	return err
}

// Counters calls Switch.Counters remotely.
func (c *Client) Counters() (Counters, error) {
	r, err := c.call(ControlRequest{Op: OpCounters})
	if err != nil {
		return Counters{}, err
	}
	if r.Counters == nil {
		return Counters{}, fmt.Errorf("vnet control counters: %w: no counters in response", ErrRemote)
	}
	return *r.Counters, nil
}

// DumpLog fetches the in-transit log of snapshot e.
func (c *Client) DumpLog(e core.Epoch) ([]LoggedFrame, error) {
	r, err := c.call(ControlRequest{Op: OpDumpLog, Epoch: e})
	if err != nil {
		return nil, err
	}
	fs, err := ReadInTransit(bytes.NewReader(r.Data))
	if err != nil {
		return nil, fmt.Errorf("vnet control dump-log: %w", err)
	}
	return fs, nil
}

// Replay sends frames to the switch's Replay and returns how many it queued.
func (c *Client) Replay(frames []LoggedFrame) (int, error) {
	var buf bytes.Buffer
	if err := WriteInTransit(&buf, frames); err != nil {
		return 0, err
	}
	r, err := c.call(ControlRequest{Op: OpReplay, Data: buf.Bytes()})
	return r.Frames, err
}

// FlushLog calls Switch.FlushLog remotely.
func (c *Client) FlushLog() error {
	_, err := c.call(ControlRequest{Op: OpFlushLog})
	return err
}
