package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/vnsnap/vnsnap/core"
	"github.com/vnsnap/vnsnap/realbackend"
	"github.com/vnsnap/vnsnap/store"
)

// The real-VM commands. `vnsnap up` is a foreground supervisor that owns the
// VNE's switches and QEMUs and serves a control socket in its state
// directory; snapshot, restore and down talk to it. verify, ls, rm and gc
// read the store directly (store_cmd.go).

const defaultStore = ".vnsnap/store"

// stateFlags are the flags shared by the commands that reach a supervisor.
type stateFlags struct {
	state, store string
	json         bool // snapshot and restore: events and result as JSON lines
}

// send sends req, with the store as an absolute path, to the running VNE's
// supervisor, shows its progress events (progress_view.go) and prints its
// answer.
func (f *stateFlags) send(stdout, stderr io.Writer, req request) error {
	sock, err := f.controlSocket()
	if err != nil {
		return err
	}
	if req.Store, err = filepath.Abs(f.store); err != nil {
		return err
	}
	req.Progress = progressVersion
	v := newView(stdout, stderr, f.json)
	resp, err := call(context.Background(), sock, req, v.event)
	return v.finish(resp, err)
}

func (f *stateFlags) bind(fs *flag.FlagSet) {
	fs.StringVar(&f.state, "state", "", "state directory of the VNE (default: the only one under .vnsnap/)")
	fs.StringVar(&f.store, "store", defaultStore, "snapshot store directory")
}

// bindJSON adds --json (snapshot, restore).
func (f *stateFlags) bindJSON(fs *flag.FlagSet) {
	fs.BoolVar(&f.json, "json", false, "print progress events and the result as JSON lines (schema: README, progress_wire.go)")
}

// controlSocket finds the supervisor's control socket.
func (f *stateFlags) controlSocket() (string, error) {
	if f.state != "" {
		return filepath.Join(f.state, "control.sock"), nil
	}
	socks, _ := filepath.Glob(filepath.Join(".vnsnap", "*", "control.sock"))
	switch len(socks) {
	case 1:
		return socks[0], nil
	case 0:
		return "", errors.New("no VNE is up under .vnsnap/ (start one with `vnsnap up VNE.yaml`, or give --state)")
	default:
		return "", fmt.Errorf("several VNEs are up (%s): choose one with --state", strings.Join(socks, ", "))
	}
}

// request is one control request to the supervisor, one JSON line.
type request struct {
	Op    string `json:"op"` // snapshot, restore, status, down
	Name  string `json:"name,omitempty"`
	Algo  string `json:"algo,omitempty"`
	Sink  string `json:"sink,omitempty"`
	Store string `json:"store,omitempty"`
	// StallMS is a snapshot's stall bound (realbackend.SnapshotOptions.Stall)
	// in milliseconds; 0, the default.
	StallMS int64 `json:"stall_ms,omitempty"`
	// Progress asks for progress events before the result: the version of
	// their schema the client reads (progress_wire.go); 0, none.
	Progress int `json:"progress,omitempty"`
}

// response answers a request: Text is printed as is. V and Type are set
// (progressVersion, "result") when the request asked for progress; so is
// Summary then, for a snapshot or restore that succeeded.
type response struct {
	V       int            `json:"v,omitempty"`
	Type    string         `json:"type,omitempty"`
	OK      bool           `json:"ok"`
	Error   string         `json:"error,omitempty"`
	Text    string         `json:"text,omitempty"`
	Summary *resultSummary `json:"summary,omitempty"`
}

// call sends req to the supervisor, hands each progress event of its answer
// to onEvent (nil: none are expected) and returns its result. The error is
// the exchange's: a result that is not OK is returned as such.
func call(ctx context.Context, sock string, req request, onEvent func(progressEvent)) (response, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", sock)
	if err != nil {
		return response{}, fmt.Errorf("reach the VNE supervisor at %s: %w (is `vnsnap up` running?)", sock, err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	b, _ := json.Marshal(req)
	if _, err := c.Write(append(b, '\n')); err != nil {
		return response{}, fmt.Errorf("send %s request: %w", req.Op, err)
	}
	a := newAnswerReader(c)
	for {
		e, r, err := a.next()
		if err != nil {
			return response{}, fmt.Errorf("read %s answer: %w", req.Op, err)
		}
		if r != nil {
			return *r, nil
		}
		if onEvent == nil {
			return response{}, fmt.Errorf("read %s answer: a progress event, none asked for", req.Op)
		}
		onEvent(*e)
	}
}

func runSnapshot(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("snapshot", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var sf stateFlags
	sf.bind(fs)
	sf.bindJSON(fs)
	algo := fs.String("algo", "", "algorithm: "+algoNames()+" (default: the VNE file's, else vnsnap)")
	sink := fs.String("sink", "", "sink: memory or disk (default: the VNE file's, else memory)")
	stall := fs.Duration("stall", 0, fmt.Sprintf("abort when no stream byte moves and no event comes for this long, %v to %v (default %v)",
		minStall, maxStall, realbackend.DefaultStall))
	fs.Usage = func() { fmt.Fprintln(stderr, "usage: vnsnap snapshot [flags] NAME"); fs.PrintDefaults() }
	name, err := oneArg(fs, args, "snapshot name")
	if err != nil {
		return err
	}
	if _, err := core.ParseAlgorithm(*algo); *algo != "" && err != nil {
		return fmt.Errorf("--algo: %w", err)
	}
	if _, err := core.ParseSink(*sink); *sink != "" && err != nil {
		return fmt.Errorf("--sink: %w", err)
	}
	if err := store.ValidName(name); err != nil {
		return fmt.Errorf("snapshot name: %w", err)
	}
	if err := checkStall(*stall); *stall != 0 && err != nil {
		return fmt.Errorf("--stall: %w", err)
	}
	return sf.send(stdout, stderr, request{Op: "snapshot", Name: name, Algo: *algo, Sink: *sink, StallMS: stall.Milliseconds()})
}

func runRestore(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("restore", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var sf stateFlags
	sf.bind(fs)
	sf.bindJSON(fs)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: vnsnap restore [flags] NAME\n\nThe running VNE (vnsnap up) is replaced by the snapshot NAME.")
		fs.PrintDefaults()
	}
	name, err := oneArg(fs, args, "snapshot name")
	if err != nil {
		return err
	}
	return sf.send(stdout, stderr, request{Op: "restore", Name: name})
}

func runDown(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("down", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var sf stateFlags
	sf.bind(fs)
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	if fs.NArg() != 0 {
		fs.Usage()
		return errUsage
	}
	sock, err := sf.controlSocket()
	if err != nil {
		return err
	}
	resp, err := call(context.Background(), sock, request{Op: "down"}, nil)
	if err != nil {
		return err
	}
	fmt.Fprint(stdout, resp.Text)
	if !resp.OK {
		return errors.New(resp.Error)
	}
	return nil
}

// parseFlags parses args into fs: --help is flag.ErrHelp, any other mistake
// errUsage (fs has said what it was).
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	return nil
}

// noArgs parses flags and refuses positional arguments.
func noArgs(fs *flag.FlagSet, args []string) error {
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		fs.Usage()
		return errUsage
	}
	return nil
}

// oneArg parses flags and returns the single positional argument.
func oneArg(fs *flag.FlagSet, args []string, what string) (string, error) {
	if err := parseFlags(fs, args); err != nil {
		return "", err
	}
	if fs.NArg() != 1 {
		fmt.Fprintf(fs.Output(), "vnsnap %s: want exactly one %s, got %d arguments\n", fs.Name(), what, fs.NArg())
		fs.Usage()
		return "", errUsage
	}
	return fs.Arg(0), nil
}

// The range of a snapshot's stall bound (vnsnap snapshot --stall): under a
// second every pass's setup would look like a stall; over a day it is no
// bound (DeadlineCap ends the snapshot first anyway).
const (
	minStall = time.Second
	maxStall = 24 * time.Hour
)

// checkStall checks a stall bound given by a user or received on the control
// socket.
func checkStall(d time.Duration) error {
	if d < minStall || d > maxStall {
		return fmt.Errorf("stall bound %v out of range [%v, %v]", d, minStall, maxStall)
	}
	return nil
}

// stallOf is the stall bound a request carries in milliseconds (0: the
// default, realbackend.DefaultStall), checked like a user's: the control
// socket is input too, and a huge value must not overflow a Duration.
func stallOf(ms int64) (time.Duration, error) {
	if ms == 0 {
		return 0, nil
	}
	d := time.Duration(ms) * time.Millisecond
	if d/time.Millisecond != time.Duration(ms) {
		return 0, fmt.Errorf("stall bound of %d ms overflows", ms)
	}
	return d, checkStall(d)
}

// storeDir makes sure the store directory exists.
func storeDir(p string) (string, error) {
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return "", fmt.Errorf("store %s: %w", p, err)
	}
	return abs, nil
}
