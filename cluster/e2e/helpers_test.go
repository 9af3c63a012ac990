package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vnsnap/vnsnap/cluster/netnstest"
	"github.com/vnsnap/vnsnap/internal/testutil"
)

// agentPort is where every agent serves the coordinator in its host.
const agentPort = 7443

// buildVnsnap builds cmd/vnsnap into dir.
func buildVnsnap(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "vnsnap")
	if out, err := exec.Command("go", "build", "-o", bin, "../../cmd/vnsnap").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// run runs the built vnsnap to completion.
func run(t *testing.T, bin string, args ...string) {
	t.Helper()
	if out, err := exec.Command(bin, args...).CombinedOutput(); err != nil {
		t.Fatalf("vnsnap %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// agentProc is one host's `vnsnap agent`, in a process group of its own
// with the QEMUs it starts: crash kills the whole host at once.
type agentProc struct {
	name, state string
	host        netnstest.Host
	args        []string
	cmd         *exec.Cmd
	stderr      *testutil.SyncBuffer
}

// start runs the agent in its host and waits for it to listen.
func (p *agentProc) start(t *testing.T, bin string) {
	t.Helper()
	cmd := p.host.Command(context.Background(), bin, p.args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.cmd, p.stderr = cmd, &testutil.SyncBuffer{}
	cmd.Stderr = p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || !strings.Contains(line, "listening on ") {
		p.crash()
		t.Fatalf("agent %s: %q, %v\n%s", p.name, line, err, p.stderr)
	}
	go io.Copy(io.Discard, out)
}

// crash kills the agent and its QEMUs with SIGKILL and reaps the agent.
func (p *agentProc) crash() {
	if p.cmd == nil || p.cmd.ProcessState != nil {
		return
	}
	syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	p.cmd.Wait()
}

// console is the path of VM vm's console log in the agent's state.
func (p *agentProc) console(vm string) string {
	return filepath.Join(p.state, "run", vm+".console")
}

// forward returns a loopback address whose connections are dialled to
// target from inside host h: the root namespace has no route to the
// cluster network. It stops at cleanup.
func forward(t *testing.T, h netnstest.Host, target string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	track := func(c net.Conn, on bool) bool {
		mu.Lock()
		defer mu.Unlock()
		if conns == nil {
			c.Close()
			return false
		}
		if on {
			conns[c] = true
		} else {
			delete(conns, c)
		}
		return true
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			down, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				var up net.Conn
				err := h.Do(func() (err error) {
					up, err = net.DialTimeout("tcp", target, 10*time.Second)
					return err
				})
				if err != nil {
					down.Close()
					return
				}
				if !track(down, true) || !track(up, true) {
					down.Close()
					up.Close()
					return
				}
				done := make(chan struct{}, 2)
				pipe := func(dst, src net.Conn) { io.Copy(dst, src); done <- struct{}{} }
				go pipe(up, down)
				go pipe(down, up)
				<-done
				up.Close()
				down.Close()
				<-done
				track(down, false)
				track(up, false)
			}()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		conns = nil
		mu.Unlock()
		wg.Wait()
	})
	return l.Addr().String()
}

// waitLine polls file from offset until a line satisfies ok; it returns
// the line and the offset after it.
func waitLine(ctx context.Context, file string, from int64, ok func(string) bool) (string, int64, error) {
	for {
		b, err := os.ReadFile(file)
		if err == nil && int64(len(b)) > from {
			off := from
			for _, l := range strings.SplitAfter(string(b[from:]), "\n") {
				if !strings.HasSuffix(l, "\n") {
					break
				}
				off += int64(len(l))
				if ok(strings.TrimSpace(l)) {
					return strings.TrimSpace(l), off, nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return "", 0, fmt.Errorf("%s: no such line after byte %d: %w", file, from, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// size is a file's size (0 if missing).
func size(file string) int64 {
	fi, err := os.Stat(file)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// tail returns the last n bytes of a file, for failure messages.
func tail(file string, n int) string {
	b, _ := os.ReadFile(file)
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
