package xenbackend

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
)

// fakeSender plays "xl migrate" against Receive over two pipes, following
// xl_migrate.c's migrate_domain: banner, stream (the pipe stays open),
// ready, go, report and status, and after a non-zero status the receiver's
// go back. events records what each side did, in order.
type fakeSender struct {
	toRecv   *io.PipeWriter // the receiver's stdin
	fromRecv *io.PipeReader // the receiver's stdout
	mu       sync.Mutex
	events   []string
}

func (s *fakeSender) event(e string) {
	s.mu.Lock()
	s.events = append(s.events, e)
	s.mu.Unlock()
}

func (s *fakeSender) expect(msg string) error {
	b := make([]byte, len(msg))
	if _, err := io.ReadFull(s.fromRecv, b); err != nil {
		return err
	}
	if string(b) != msg {
		return errors.New("got " + string(b) + ", want " + msg)
	}
	s.event("sender read " + strings.TrimRight(msg[:12], "\x00"))
	return nil
}

// run sends stream and plays the handshake; it returns the status byte.
func (s *fakeSender) run(stream []byte) (byte, error) {
	if err := s.expect(msgBanner); err != nil {
		return 0, err
	}
	if _, err := s.toRecv.Write(stream); err != nil {
		return 0, err
	}
	if err := s.expect(msgReady); err != nil {
		return 0, err
	}
	s.event("sender go")
	if _, err := io.WriteString(s.toRecv, msgGo); err != nil {
		return 0, err
	}
	if err := s.expect(msgReport); err != nil {
		return 0, err
	}
	var st [1]byte
	if _, err := io.ReadFull(s.fromRecv, st[:]); err != nil {
		return 0, err
	}
	if st[0] != 0 {
		if err := s.expect(msgGo); err != nil {
			return st[0], err
		}
	}
	return st[0], nil
}

func startReceive(t *testing.T, hooks func(*fakeSender) ReceiveHooks) (*fakeSender, *bytes.Buffer, <-chan error) {
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	s := &fakeSender{toRecv: inW, fromRecv: outR}
	sink := &bytes.Buffer{}
	done := make(chan error, 1)
	go func() {
		_, err := Receive(context.Background(), inR, outW, sink, hooks(s))
		outW.Close()
		inR.Close() // as the CLI's exit would: the sender's writes fail
		done <- err
	}()
	return s, sink, done
}

func TestReceiveSnapshotGivesDomainBack(t *testing.T) {
	stream, want := testStream()
	var pages int
	s, sink, done := startReceive(t, func(s *fakeSender) ReceiveHooks {
		return ReceiveHooks{
			Page:   func(uint64, []byte) error { pages++; return nil },
			Stored: func(StreamInfo) error { s.event("stored"); return nil },
			Paused: func(context.Context) error { s.event("paused hook"); return nil },
		}
	})
	status, err := s.run(stream)
	if err != nil {
		t.Fatalf("sender: %v", err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Receive: %v", err)
	}
	if status == 0 {
		t.Errorf("status: got 0, want non-zero so that xl resumes the source")
	}
	if !bytes.Equal(sink.Bytes(), stream) {
		t.Errorf("sink: got %d bytes, want the %d stream bytes exactly", sink.Len(), len(stream))
	}
	if pages != len(want) {
		t.Errorf("Page hook: got %d pages, want %d", pages, len(want))
	}
	wantEvents := []string{"sender read xl migration", "stored", "sender read domain recei", "sender go", "paused hook", "sender read my copy unpa", "sender read domain is yo"}
	if got := strings.Join(s.events, " | "); got != strings.Join(wantEvents, " | ") {
		t.Errorf("handshake order:\n got %s\nwant %s", got, strings.Join(wantEvents, " | "))
	}
}

// TestReceivePausedHookErrorStillGivesBack: a failing hook is reported, and
// the source is given back all the same.
func TestReceivePausedHookErrorStillGivesBack(t *testing.T) {
	stream, _ := testStream()
	boom := errors.New("switch unreachable")
	s, _, done := startReceive(t, func(*fakeSender) ReceiveHooks {
		return ReceiveHooks{Paused: func(context.Context) error { return boom }}
	})
	status, err := s.run(stream)
	if err != nil || status == 0 {
		t.Fatalf("sender: status %d, %v; want a non-zero status and the domain back", status, err)
	}
	if err := <-done; !errors.Is(err, boom) {
		t.Fatalf("Receive: got %v, want the hook's error", err)
	}
}

// TestReceiveBadStreamSaysNothing: on a malformed stream the receiver
// sends no ready message (so xl never renames or pauses for good) and
// returns the parse error.
func TestReceiveBadStreamSaysNothing(t *testing.T) {
	stream, _ := testStream()
	bad := append([]byte{}, stream...)
	copy(bad[bytes.Index(bad, []byte("LibxlFmt")):], "LibxlFmX")
	s, _, done := startReceive(t, func(*fakeSender) ReceiveHooks { return ReceiveHooks{} })
	if err := s.expect(msgBanner); err != nil {
		t.Fatal(err)
	}
	go s.toRecv.Write(bad) // fails once the receiver is gone
	var se *StreamError
	if err := <-done; !errors.As(err, &se) {
		t.Fatalf("Receive: got %v, want a StreamError", err)
	}
	if n, err := io.Copy(io.Discard, s.fromRecv); n != 0 || err != nil {
		t.Errorf("after a bad stream the receiver sent %d more bytes (%v), want none", n, err)
	}
}

// TestReceiveWrongGo: anything but the go message after ready is an error,
// and the Paused hook never runs.
func TestReceiveWrongGo(t *testing.T) {
	stream, _ := testStream()
	called := false
	s, _, done := startReceive(t, func(*fakeSender) ReceiveHooks {
		return ReceiveHooks{Paused: func(context.Context) error { called = true; return nil }}
	})
	if err := s.expect(msgBanner); err != nil {
		t.Fatal(err)
	}
	s.toRecv.Write(stream)
	if err := s.expect(msgReady); err != nil {
		t.Fatal(err)
	}
	io.WriteString(s.toRecv, strings.Repeat("x", len(msgGo)))
	if err := <-done; err == nil || !strings.Contains(err.Error(), "want its go") {
		t.Fatalf("Receive: got %v, want an error about the go message", err)
	}
	if called {
		t.Errorf("Paused hook ran without the sender's go")
	}
}

// failWriter fails every write.
type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

// TestReceiveSinkError: a failing sink fails the receive before ready.
func TestReceiveSinkError(t *testing.T) {
	stream, _ := testStream()
	inR, inW := io.Pipe()
	var out bytes.Buffer
	go func() { inW.Write(stream); inW.Close() }()
	_, err := Receive(context.Background(), inR, &out, failWriter{}, ReceiveHooks{})
	inR.Close()
	if err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("Receive: got %v, want the sink's error", err)
	}
	if out.String() != msgBanner {
		t.Errorf("receiver sent %q, want only the banner", out.String())
	}
}
