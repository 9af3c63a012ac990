// Command xenfail is the static test binary TestXenReceiverFailures runs in
// dom0, against one running PVH domU (domu1) whose console carries the
// heartbeat program's "HB n" lines.
//
//	xenfail run          runs every failure case of the receiver in
//	                     sequence, each followed by
//	                     xenbackend.RecoverDomain, then measures the pause
//	                     of live snapshots (through xenbackend.Receive)
//	                     and of "xl save -c"
//	xenfail recv MODE    the receiver command "xl migrate" runs: a live
//	                     snapshot that fails as MODE says (or "ok")
//
// It reports on stdout (the dom0 console) in lines starting VNSNAP-.
package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vnsnap/vnsnap/xenbackend"
)

const (
	xl      = "/usr/lib/xen-4.17/bin/xl"
	domain  = "domu1"
	logFile = "/var/log/xen/console/guest-domu1.log"
	hanging = "/tmp/xenfail-hanging"
	self    = "/usr/bin/xenfail"
)

func main() {
	switch {
	case len(os.Args) == 3 && os.Args[1] == "recv":
		if err := receive(os.Args[2]); err != nil {
			fmt.Fprintf(os.Stderr, "VNSNAP-RECV-ERR mode=%s: %v\n", os.Args[2], err)
			os.Exit(1)
		}
	case len(os.Args) == 2 && os.Args[1] == "run":
		if err := run(); err != nil {
			fmt.Println("VNSNAP-XEN-FAIL xenfail run:", err)
			os.Exit(1)
		}
	default:
		fmt.Fprintln(os.Stderr, "usage: xenfail run | xenfail recv MODE")
		os.Exit(2)
	}
}

// dieMidStream is how many pages the "midstream" receiver reads before it
// dies: well inside the first pass of a 128 MiB domain.
const dieMidStream = 2000

// progressPages is how often (in pages) the receiver says how far it got,
// so that the console shows progress during a long stream.
const progressPages = 4096

// receive is a live-snapshot receiver (xenbackend.Receive, the stream
// discarded) that fails as mode says.
func receive(mode string) error {
	hooks := xenbackend.ReceiveHooks{}
	switch mode {
	case "ok", "stored-fail", "hook-fail", "die-after-go", "midstream":
	case "nobanner-exit":
		// A receiver that cannot start: it says something else and exits.
		fmt.Fprintln(os.Stdout, "vnsnap: cannot open the store")
		return errors.New("exits without the banner")
	case "nobanner-hang":
		// A receiver stuck before its banner: xl waits for it forever.
		if err := os.WriteFile(hanging, nil, 0o644); err != nil {
			return err
		}
		time.Sleep(time.Hour)
		return errors.New("woke up")
	default:
		return fmt.Errorf("unknown mode %q", mode)
	}
	n := 0
	hooks.Page = func(uint64, []byte) error {
		if n++; n%progressPages == 0 {
			fmt.Fprintf(os.Stderr, "VNSNAP-RECV-PROGRESS mode=%s pages=%d\n", mode, n)
		}
		if mode == "midstream" && n == dieMidStream {
			fmt.Fprintf(os.Stderr, "VNSNAP-RECV-DIE pages=%d\n", n)
			os.Exit(3) // no deferred cleanup: a crash
		}
		return nil
	}
	switch mode {
	case "stored-fail":
		hooks.Stored = func(xenbackend.StreamInfo) error { return errors.New("the store refused the image") }
	case "hook-fail":
		hooks.Paused = func(context.Context) error { return errors.New("the switch did not flip the colour") }
	case "die-after-go":
		hooks.Paused = func(context.Context) error {
			fmt.Fprintln(os.Stderr, "VNSNAP-RECV-DIE after go")
			os.Exit(3)
			return nil
		}
	}
	_, err := xenbackend.Receive(context.Background(), os.Stdin, os.Stdout, io.Discard, hooks)
	return err
}

// heartbeat is one "HB n" line of the domU's console log, stamped when the
// tailer read it.
type heartbeat struct {
	at time.Time
	n  uint64
}

// tailer follows the domU's console log (xenconsoled appends to it as the
// guest prints) and stamps its heartbeats.
type tailer struct {
	mu  sync.Mutex
	hbs []heartbeat
	err error
}

// pollEvery is how often the tailer reads the log: the resolution of the
// pauses measured.
const pollEvery = 5 * time.Millisecond

func (t *tailer) follow(f *os.File) {
	var partial []byte
	buf := make([]byte, 64<<10)
	for {
		n, err := f.Read(buf)
		if n > 0 {
			now := time.Now()
			partial = append(partial, buf[:n]...)
			for {
				i := bytes.IndexByte(partial, '\n')
				if i < 0 {
					break
				}
				line := strings.TrimSpace(string(partial[:i]))
				partial = partial[i+1:]
				if v, ok := strings.CutPrefix(line, "HB "); ok {
					if c, err := strconv.ParseUint(v, 10, 64); err == nil {
						t.mu.Lock()
						t.hbs = append(t.hbs, heartbeat{now, c})
						t.mu.Unlock()
					}
				}
			}
		}
		if err != nil && err != io.EOF {
			t.mu.Lock()
			t.err = err
			t.mu.Unlock()
			return
		}
		if n == 0 {
			time.Sleep(pollEvery)
		}
	}
}

// last returns the last heartbeat read.
func (t *tailer) last() (heartbeat, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.hbs) == 0 {
		return heartbeat{}, false
	}
	return t.hbs[len(t.hbs)-1], true
}

// gap returns the largest gap between consecutive heartbeats read in
// [from, to], and the counters around it.
func (t *tailer) gap(from, to time.Time) (d time.Duration, before, after uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var prev *heartbeat
	for i := range t.hbs {
		h := &t.hbs[i]
		if h.at.Before(from) || h.at.After(to) {
			continue
		}
		if prev != nil && h.at.Sub(prev.at) > d {
			d, before, after = h.at.Sub(prev.at), prev.n, h.n
		}
		prev = h
	}
	return d, before, after
}

// silence is how long waitBeyond waits with no new heartbeat: a running
// domU prints every 20 ms of its time, so only one that does not run is
// silent this long.
const silence = 60 * time.Second

// waitBeyond waits for a heartbeat with a counter above n and returns it.
func (t *tailer) waitBeyond(n uint64) (heartbeat, error) {
	lastNew := time.Now()
	var seen uint64
	for {
		h, ok := t.last()
		if ok && h.n > n {
			return h, nil
		}
		if ok && h.n != seen {
			seen, lastNew = h.n, time.Now()
		}
		if time.Since(lastNew) > silence {
			return h, fmt.Errorf("no heartbeat above %d (last %d) for %v", n, h.n, silence)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// xlStates returns "NAME:STATE" of domu1 and domu1--migratedaway.
func xlStates(ctx context.Context) string {
	doms, err := xenbackend.XL{R: xenbackend.ExecRunner{Path: xl}}.List(ctx)
	if err != nil {
		return "error:" + strings.ReplaceAll(err.Error(), " ", "_")
	}
	var s []string
	for _, d := range doms {
		if strings.HasPrefix(d.Name, domain) {
			s = append(s, d.Name+":"+d.State)
		}
	}
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ",")
}

// migrate runs "xl migrate -s ” domu1 'xenfail recv MODE'" and returns
// xl's exit status and the last line of its standard error. For
// nobanner-hang it kills xl (and its receiver) once the receiver says it
// hangs: what a caller does when the banner does not come.
func migrate(mode string) (int, string, error) {
	os.Remove(hanging)
	cmd := exec.Command(xl, "migrate", "-s", "", domain, self+" recv "+mode)
	var stderr bytes.Buffer
	cmd.Stderr = io.MultiWriter(&stderr, os.Stdout) // xl's and the receiver's messages, on the console
	cmd.Stdout = os.Stdout
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return 0, "", err
	}
	if mode == "nobanner-hang" {
		for {
			if _, err := os.Stat(hanging); err == nil {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	err := cmd.Wait()
	rc := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		rc = ee.ExitCode() // -1 when killed
	} else if err != nil {
		return 0, "", err
	}
	lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
	return rc, strings.TrimSpace(lines[len(lines)-1]), nil
}

func run() error {
	ctx := context.Background()
	f, err := os.Open(logFile)
	if err != nil {
		return err
	}
	t := &tailer{}
	go t.follow(f)
	if _, err := t.waitBeyond(50); err != nil {
		return fmt.Errorf("domU heartbeat: %w", err)
	}
	fmt.Println("VNSNAP-T-HEARTBEAT")
	r := xenbackend.ExecRunner{Path: xl}
	xs := xenbackend.ExecXenstore{}
	for _, mode := range []string{"midstream", "nobanner-exit", "nobanner-hang", "stored-fail", "hook-fail", "die-after-go"} {
		h0, _ := t.last()
		start := time.Now()
		rc, said, err := migrate(mode)
		if err != nil {
			return fmt.Errorf("%s: %w", mode, err)
		}
		end := time.Now()
		states := xlStates(ctx)
		rec, err := xenbackend.RecoverDomain(ctx, r, xs, domain)
		recErr := "none"
		if err != nil {
			recErr = strings.ReplaceAll(err.Error(), " ", "_")
		}
		recovered := time.Now()
		hEnd, _ := t.last()
		h, err := t.waitBeyond(hEnd.n + 25) // half a second of the guest's time
		hbErr := "none"
		if err != nil {
			hbErr = strings.ReplaceAll(err.Error(), " ", "_")
		}
		gap, _, _ := t.gap(start, h.at)
		fmt.Printf("VNSNAP-CASE mode=%s xlrc=%d left=%s renamed=%v resumed=%v recover_err=%s after=%s hb_before=%d hb_end=%d hb_after=%d hb_err=%s xl_ms=%d recover_ms=%d gap_ms=%d\n",
			mode, rc, states, rec.Renamed, rec.Resumed, recErr, xlStates(ctx), h0.n, hEnd.n, h.n, hbErr,
			end.Sub(start).Milliseconds(), recovered.Sub(end).Milliseconds(), gap.Milliseconds())
		fmt.Printf("VNSNAP-XL-LAST mode=%s %s\n", mode, said)
	}
	fmt.Println("VNSNAP-T-CASES-DONE")
	return pauses(t)
}

// pauseRounds is how many live snapshots and stop-and-copy saves pauses
// alternates.
const pauseRounds = 3

// pauses measures the pause seen from outside (the largest heartbeat gap)
// of a live snapshot through the receiver and of "xl save -c", both into a
// sink that discards, alternating.
func pauses(t *tailer) error {
	for round := 0; round < pauseRounds; round++ {
		for _, method := range []string{"live", "stopcopy"} {
			before, _ := t.last()
			start := time.Now()
			var rc int
			var err error
			if method == "live" {
				rc, _, err = migrate("ok")
			} else {
				cmd := exec.Command(xl, "save", "-c", domain, "/dev/null")
				var out bytes.Buffer
				cmd.Stdout, cmd.Stderr = &out, io.MultiWriter(&out, os.Stdout)
				if err = cmd.Run(); err != nil {
					err = fmt.Errorf("xl save -c: %w: %s", err, bytes.TrimSpace(out.Bytes()))
				}
			}
			if err != nil {
				return err
			}
			took := time.Since(start)
			h, err := t.waitBeyond(before.n + 5)
			if err != nil {
				return fmt.Errorf("%s round %d: %w", method, round, err)
			}
			gap, b, a := t.gap(before.at, h.at)
			fmt.Printf("VNSNAP-PAUSE method=%s round=%d gap_ms=%d hb=%d..%d took_ms=%d xlrc=%d\n",
				method, round, gap.Milliseconds(), b, a, took.Milliseconds(), rc)
			time.Sleep(300 * time.Millisecond)
		}
	}
	return nil
}
