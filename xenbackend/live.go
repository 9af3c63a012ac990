package xenbackend

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vnsnap/vnsnap/realbackend/hv"
)

// A live save is xl's own live migration to a receiver of ours:
//
//	xl migrate -s "" DOMID "'vnsnap' 'xen-receive' 'DIR/NAME.recv'"
//
// xl runs the receiver command through sh; the command (RelayReceiver) only
// connects to the socket DIR/NAME.recv, where Save listens, and hands it
// xl's two pipes, so the whole protocol (Receive) runs inside Save, in the
// process that owns the switch and the snapshot, on xl's pipes themselves: the stream goes to Save's
// writer, OnPass is told of each pass, and AtSnapshotPoint runs while the
// source domain is suspended at its snapshot point (renamed
// NAME--migratedaway by xl).
//
// The port wants Save to leave the machine paused until Resume, so the
// receiver does not give the domain back when AtSnapshotPoint returns: Save
// returns then, with the domain still suspended and xl still waiting for
// the receiver's report, and Resume sends it (a non-zero status, so xl
// renames the domain back and resumes it with suspend_cancel; it runs on
// from its snapshot point). Kill sends it too before it destroys the
// domain, so that no NAME--migratedaway is ever left.
//
// Passes: the libxc stream marks none, but each pass sends its pages in
// frame-number order, so a page whose frame number is not above the last
// one's starts the next pass. The last such start is the final copy, made
// while the domain is suspended: OnPass(n) says live pass n was copied and
// the next began, as the port defines it.
//
// Failures: before the stream is complete (a bad stream, a failed writer,
// ctx ended), Save closes the socket, the receiver exits, and xl resumes its
// domain, which ran all along. Once the stream is complete and the receiver
// has said it is ready, xl renames the domain and sends its go, and a
// receiver that died then would leave it suspended and renamed: from there
// on Save always runs the protocol to its end, and a cancelled ctx only
// makes AtSnapshotPoint fail.

// liveHold is a live save that holds its domain suspended until handBack.
type liveHold struct {
	release  chan struct{} // closed: give the domain back
	once     sync.Once
	recvDone chan error // Receive's result
	xlDone   chan error // xl migrate's exit
	xlOut    *lockedBuffer
}

func (l *liveHold) giveBack() { l.once.Do(func() { close(l.release) }) }

// abandon gives the domain back and waits (bounded) for xl to end.
func (l *liveHold) abandon() {
	l.giveBack()
	select {
	case <-l.xlDone:
	case <-time.After(time.Minute):
	}
}

// handBack ends the hold: xl resumes the source domain under its own name.
// Called with m.mu held.
func (m *Machine) handBack(ctx context.Context) error {
	l := m.held
	l.giveBack()
	var errs []error
	for _, ch := range []chan error{l.recvDone, l.xlDone} {
		select {
		case err := <-ch:
			if ch == l.recvDone && err != nil {
				errs = append(errs, err)
			}
			ch <- err // keep it for abandon
		case <-ctx.Done():
			return fmt.Errorf("waiting for xl to resume domain %d: %w", m.id, ctx.Err())
		}
	}
	m.held = nil
	d, ok, err := m.h.xl.Lookup(ctx, m.id)
	switch {
	case err != nil:
		errs = append(errs, err)
	case !ok:
		errs = append(errs, fmt.Errorf("domain %d is gone after its live save (xl: %s)", m.id, l.xlOut.tail()))
	case d.Name != m.spec.Name:
		errs = append(errs, fmt.Errorf("domain %d is named %q after its live save, want %q (xl: %s)", m.id, d.Name, m.spec.Name, l.xlOut.tail()))
	case d.Shutdown():
		errs = append(errs, fmt.Errorf("domain %d is still suspended (%s) after its live save (xl: %s)", m.id, d.State, l.xlOut.tail()))
	}
	return errors.Join(errs...)
}

// saveLive is Save with o.Live (see the comment at the top of this file).
// With f set the stream is written into f as a page file (ReceiveFile), else
// to w as it is.
func (m *Machine) saveLive(ctx context.Context, w io.Writer, f *os.File, o hv.SaveOptions) (hv.SaveStats, error) {
	m.mu.Lock()
	id, held, paused := m.id, m.held != nil, m.paused
	m.mu.Unlock()
	name := m.spec.Name
	if held || paused {
		return hv.SaveStats{}, fmt.Errorf("live save of %s: the domain is paused (a Xen domain must run to be copied live)", name)
	}
	start := time.Now()
	sock := filepath.Join(m.h.cfg.Dir, name+".recv")
	_ = os.Remove(sock)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		return hv.SaveStats{}, fmt.Errorf("live save of %s: receiver socket: %w", name, err)
	}
	defer os.Remove(sock)
	cmdline, err := ShellCommand(append(append([]string(nil), m.h.cfg.Receiver...), sock)...)
	if err != nil {
		ln.Close()
		return hv.SaveStats{}, fmt.Errorf("live save of %s: %w", name, err)
	}
	l := &liveHold{release: make(chan struct{}), recvDone: make(chan error, 1), xlDone: make(chan error, 1), xlOut: &lockedBuffer{}}
	// xl outlives Save (it waits for the report until Resume), so it
	// does not run under ctx.
	go func() { l.xlDone <- m.h.xl.Migrate(context.Background(), id, cmdline, l.xlOut) }()

	accepted := make(chan *net.UnixConn, 1)
	go func() {
		c, err := ln.AcceptUnix()
		if err != nil {
			c = nil
		}
		accepted <- c
	}()
	var conn *net.UnixConn
	select {
	case conn = <-accepted:
	case err := <-l.xlDone:
		ln.Close()
		if c := <-accepted; c != nil {
			c.Close()
		}
		return hv.SaveStats{}, fmt.Errorf("live save of %s: xl migrate ended before its receiver connected: %w", name, errors.Join(err, errors.New(l.xlOut.tail())))
	case <-ctx.Done():
		ln.Close() // the receiver cannot connect, exits, and xl gives up
		if c := <-accepted; c != nil {
			c.Close()
		}
		<-l.xlDone
		return hv.SaveStats{}, fmt.Errorf("live save of %s: %w", name, ctx.Err())
	}
	ln.Close()
	if conn == nil {
		<-l.xlDone
		return hv.SaveStats{}, fmt.Errorf("live save of %s: receiver socket closed", name)
	}

	var (
		mu      sync.Mutex
		stored  bool // the stream is complete: from here the protocol runs to its end
		closed  bool
		pass    = 1
		lastPFN uint64
		anyPage bool
		atErr   error
		info    StreamInfo
	)
	snap := make(chan struct{})
	cw := &countWriter{w: w}
	hooks := ReceiveHooks{
		Page: func(pfn uint64, _ []byte) error {
			if anyPage && pfn <= lastPFN {
				if o.OnPass != nil {
					o.OnPass(pass, time.Now())
				}
				pass++
			}
			anyPage, lastPFN = true, pfn
			return nil
		},
		Stored: func(si StreamInfo) error {
			mu.Lock()
			defer mu.Unlock()
			if closed {
				return errors.New("save cancelled")
			}
			if err := ctx.Err(); err != nil {
				return err
			}
			stored, info = true, si
			return nil
		},
		Paused: func(context.Context) error {
			if o.AtSnapshotPoint != nil {
				atErr = o.AtSnapshotPoint(ctx)
			}
			close(snap)
			<-l.release
			return nil
		},
	}
	// pipes are xl's two pipes to its receiver command, handed over by
	// the relay; closeAll ends the receive (a blocked read returns).
	var pipes []*os.File
	closeAll := func() {
		conn.Close()
		for _, p := range pipes {
			p.Close()
		}
	}
	go func() {
		err := func() error {
			in, out, err := receivePipes(conn)
			if err != nil {
				return err
			}
			mu.Lock()
			pipes = []*os.File{in, out}
			if closed {
				mu.Unlock()
				return errors.New("save cancelled")
			}
			mu.Unlock()
			if f != nil {
				// The page file does not grow when a later pass sends a
				// page again: the stream read is the save's progress.
				var r io.Reader = in
				if o.Progress != nil {
					r = progressReader{in, o.Progress}
				}
				_, err = ReceiveFile(ctx, r, out, f, hooks)
			} else {
				_, err = Receive(ctx, in, out, cw, hooks)
			}
			return err
		}()
		mu.Lock()
		closeAll()
		mu.Unlock()
		l.recvDone <- err
	}()
	cancelled := ctx.Done()
	for {
		select {
		case <-snap:
			m.mu.Lock()
			m.held = l
			m.holdNet()
			m.mu.Unlock()
			st := hv.SaveStats{Bytes: cw.n, Passes: pass, MemoryCopied: info.Pages * pageSize, Total: time.Since(start)}
			if f != nil {
				if fi, err := f.Stat(); err == nil {
					st.Bytes = fi.Size()
				}
			}
			if atErr != nil {
				return st, fmt.Errorf("live save of %s: %w", name, atErr)
			}
			return st, nil
		case err := <-l.recvDone:
			// Failed before the go: the receiver is gone, xl resumes.
			xerr := <-l.xlDone
			if err == nil {
				err = errors.New("receiver ended without the sender's go")
			}
			if cerr := ctx.Err(); cerr != nil {
				err = fmt.Errorf("%w (%v)", cerr, err)
			}
			err = fmt.Errorf("live save of %s: %w (xl: %v: %s)", name, err, xerr, l.xlOut.tail())
			if rerr := m.recoverAway(context.WithoutCancel(ctx)); rerr != nil {
				err = errors.Join(err, rerr)
			}
			return hv.SaveStats{}, err
		case <-cancelled:
			mu.Lock()
			if !stored {
				closed = true
				closeAll()
			}
			mu.Unlock()
			cancelled = nil // from here the protocol runs to its end
		}
	}
}

// recoverAway runs after a live save failed before the go, when xl should
// have resumed its domain under its own name. A NAME--migratedaway still
// there (xl failed after renaming it, leaving it suspended) is brought back
// by RecoverDomain, renamed and resumed: the machine runs on, as the port
// wants of a failed save, and is neither destroyed nor left renamed. If
// that fails the domain stays for Kill, which destroys it by either name.
func (m *Machine) recoverAway(ctx context.Context) error {
	away, err := m.h.xl.MigratedAwayOf(ctx, m.spec.Name)
	if err != nil {
		return fmt.Errorf("live save of %s: looking for %s%s: %w", m.spec.Name, m.spec.Name, MigratedAway, err)
	}
	if len(away) == 0 {
		return nil
	}
	rec, err := RecoverDomain(ctx, m.h.cfg.Runner, m.h.cfg.Xenstore, m.spec.Name)
	if err != nil {
		return fmt.Errorf("live save of %s: %w", m.spec.Name, err)
	}
	m.mu.Lock()
	m.id = rec.After.ID
	m.mu.Unlock()
	return nil
}

// RelayReceiver is "vnsnap xen-receive SOCKET", the command xl migrate runs
// for a live save: it hands its stdin (the stream) and stdout (the
// replies), xl's two pipes, to Save's process over the unix socket
// (SCM_RIGHTS), closes its own copies, and returns when Save closes the
// socket. The protocol itself runs in Save, which reads and writes xl's
// pipes directly: no byte of the stream passes through this process (a copy
// less, which under nested emulation is a large share of a live save's
// time). If this process dies before it has handed the pipes over, xl sees
// its receiver gone and resumes its domain; after, the pipes live as long as
// Save holds them.
func RelayReceiver(sock string, stdin, stdout *os.File) error {
	if err := checkPath("receiver socket", sock); err != nil {
		return err
	}
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		return fmt.Errorf("xen-receive: %w", err)
	}
	defer c.Close()
	rights := syscall.UnixRights(int(stdin.Fd()), int(stdout.Fd()))
	if _, _, err := c.WriteMsgUnix([]byte{0}, rights, nil); err != nil {
		return fmt.Errorf("xen-receive: handing xl's pipes over: %w", err)
	}
	stdin.Close()
	stdout.Close()
	if _, err := io.Copy(io.Discard, c); err != nil {
		return fmt.Errorf("xen-receive: %w", err)
	}
	return nil
}

// streamPipeSize is the size receivePipes asks of xl's stream pipe.
const streamPipeSize = 1 << 20

// receivePipes reads the relay's message on c (RelayReceiver): xl's pipe
// of the stream (read end) and that of the replies (write end). Both must
// be pipes or sockets; they are made non-blocking, so that closing one ends
// a read or write blocked on it.
func receivePipes(c *net.UnixConn) (in, out *os.File, err error) {
	b := make([]byte, 1)
	oob := make([]byte, syscall.CmsgSpace(2*4))
	n, oobn, flags, _, err := c.ReadMsgUnix(b, oob)
	if err != nil {
		return nil, nil, fmt.Errorf("xl receiver: reading xl's pipes from the relay: %w", err)
	}
	var fds []int
	msgs, perr := syscall.ParseSocketControlMessage(oob[:oobn])
	for i := 0; perr == nil && i < len(msgs); i++ {
		var got []int
		got, perr = syscall.ParseUnixRights(&msgs[i])
		fds = append(fds, got...)
	}
	fail := func(format string, a ...any) (*os.File, *os.File, error) {
		for _, fd := range fds {
			syscall.Close(fd)
		}
		return nil, nil, fmt.Errorf("xl receiver: the relay's message: "+format, a...)
	}
	switch {
	case perr != nil:
		return fail("%v", perr)
	case n != 1 || flags&syscall.MSG_CTRUNC != 0 || len(fds) != 2:
		return fail("%d bytes and %d descriptors (truncated: %v), want 1 byte and 2 descriptors", n, len(fds), flags&syscall.MSG_CTRUNC != 0)
	}
	for i, fd := range fds {
		var st syscall.Stat_t
		if err := syscall.Fstat(fd, &st); err != nil {
			return fail("descriptor %d: %v", i, err)
		}
		if m := st.Mode & syscall.S_IFMT; m != syscall.S_IFIFO && m != syscall.S_IFSOCK {
			return fail("descriptor %d is not a pipe or socket (mode %#o)", i, st.Mode)
		}
		if err := syscall.SetNonblock(fd, true); err != nil {
			return fail("descriptor %d: %v", i, err)
		}
	}
	// A pipe of 64 KiB (Linux's default) wakes the reader, and switches
	// between it and libxl's save helper, for every 16 pages; a larger one
	// lets both move a megabyte at a time. Best effort: the limit
	// (/proc/sys/fs/pipe-max-size) may be lower.
	_, _ = unix.FcntlInt(uintptr(fds[0]), unix.F_SETPIPE_SZ, streamPipeSize)
	return os.NewFile(uintptr(fds[0]), "xl-stream"), os.NewFile(uintptr(fds[1]), "xl-replies"), nil
}

// lockedBuffer collects xl's output for error messages.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) tail() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := bytes.TrimSpace(l.b.Bytes())
	if len(s) > 600 {
		s = s[len(s)-600:]
	}
	return string(s)
}

// consoleFollower copies what xenconsoled appends to a domain's console log.
type consoleFollower struct {
	stopc chan struct{}
	done  chan struct{}
}

// followConsole starts copying the lines appended to path, from its current
// end (the log of an earlier domain of the same name is not this one's), to
// w, polling.
func followConsole(path string, w io.Writer) *consoleFollower {
	c := &consoleFollower{stopc: make(chan struct{}), done: make(chan struct{})}
	var off int64 = -1
	if fi, err := os.Stat(path); err == nil {
		off = fi.Size()
	}
	go func() {
		defer close(c.done)
		buf := make([]byte, 64<<10)
		for {
			if f, err := os.Open(path); err == nil {
				if off < 0 {
					off = 0
				}
				for {
					n, err := f.ReadAt(buf, off)
					if n > 0 {
						_, _ = w.Write(buf[:n])
						off += int64(n)
					}
					if err != nil || n == 0 {
						break
					}
				}
				f.Close()
			}
			select {
			case <-c.stopc:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	return c
}

func (c *consoleFollower) stop() {
	close(c.stopc)
	<-c.done
}
