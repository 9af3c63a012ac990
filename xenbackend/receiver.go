package xenbackend

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
)

// The messages of xl's migration handshake (tools/xl/xl.h). The banner is
// sent without a terminating NUL, the others with one.
const (
	msgBanner  = "xl migration receiver ready, send binary domain data.\n"
	msgReady   = "domain received, ready to unpause\x00"
	msgGo      = "domain is yours, you are cleared to unpause\x00"
	msgReport  = "my copy unpause results are as follows\x00"
	statusKeep = 1 // a non-zero status: the sender resumes its own domain
)

// ReceiveHooks are the receiver's callbacks; nil fields are skipped.
type ReceiveHooks struct {
	// Page receives every page of the stream as it is read (see PageFunc).
	Page PageFunc
	// Stored is called once the whole stream has been written to the sink
	// and flushed, before the receiver tells the sender it has it.
	Stored func(StreamInfo) error
	// Paused is called when the sender has handed the domain over: the
	// source domain is paused at its snapshot point (renamed
	// NAME--migratedaway) until Receive's report lets it run on. This is
	// where the switch flips the VM's colour. An error is returned by
	// Receive, but the source is resumed all the same.
	Paused func(context.Context) error
}

// ReceiveResult is what a finished receive saw.
type ReceiveResult struct {
	Stream StreamInfo
}

// Receive speaks the receiver's side of "xl migrate" as the command that
// xl runs (stdin in, stdout out) and takes a live snapshot instead of a
// migration: it sends the banner, reads the stream to libxl's END record
// while copying exactly those bytes to sink (they form a save file that
// "xl restore" accepts), says it is ready, waits for the sender's go (the
// domain is paused now), calls hooks.Paused, then reports a non-zero status
// and gives the domain back, so that xl renames the source domain back and
// resumes it (libxl_domain_resume with suspend_cancel) and it runs on under
// its own name.
//
// On an error before the go (a bad stream, a failed sink), Receive returns
// without another word; the caller must then close in (in the CLI: exit),
// so that the sender's writes fail and xl resumes its domain. Reads of in
// are not interrupted by ctx; ctx is checked at each page and passed to
// the hooks.
func Receive(ctx context.Context, in io.Reader, out io.Writer, sink io.Writer, hooks ReceiveHooks) (ReceiveResult, error) {
	return receive(ctx, in, out, hooks, func(r io.Reader, onPage PageFunc) (StreamInfo, error) {
		bw := bufio.NewWriterSize(sink, 1<<20)
		tee := io.TeeReader(r, bw) // a sink error fails the read that fed it
		info, err := ReadStream(tee, onPage)
		if err == nil {
			err = bw.Flush()
		}
		return info, err
	})
}

// ReceiveFile is Receive writing the stream into f, an empty regular file,
// as a page file (PageFileFormat, WritePageFile) instead of as it is.
func ReceiveFile(ctx context.Context, in io.Reader, out io.Writer, f *os.File, hooks ReceiveHooks) (ReceiveResult, error) {
	return receive(ctx, in, out, hooks, func(r io.Reader, onPage PageFunc) (StreamInfo, error) {
		st, err := WritePageFile(r, f, onPage)
		return st.Stream, err
	})
}

func receive(ctx context.Context, in io.Reader, out io.Writer, hooks ReceiveHooks, consume func(io.Reader, PageFunc) (StreamInfo, error)) (ReceiveResult, error) {
	var res ReceiveResult
	if _, err := io.WriteString(out, msgBanner); err != nil {
		return res, fmt.Errorf("xl receiver: sending banner: %w", err)
	}
	br := bufio.NewReaderSize(in, 1<<20)
	onPage := func(pfn uint64, data []byte) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if hooks.Page != nil {
			return hooks.Page(pfn, data)
		}
		return nil
	}
	info, err := consume(br, onPage)
	res.Stream = info
	if err != nil {
		return res, fmt.Errorf("xl receiver: %w", err)
	}
	if hooks.Stored != nil {
		if err := hooks.Stored(info); err != nil {
			return res, fmt.Errorf("xl receiver: stored hook: %w", err)
		}
	}
	if _, err := io.WriteString(out, msgReady); err != nil {
		return res, fmt.Errorf("xl receiver: sending ready: %w", err)
	}
	got := make([]byte, len(msgGo))
	if _, err := io.ReadFull(br, got); err != nil {
		return res, fmt.Errorf("xl receiver: reading the sender's go: %w", err)
	}
	if !bytes.Equal(got, []byte(msgGo)) {
		return res, fmt.Errorf("xl receiver: got %q from the sender, want its go %q", got, msgGo)
	}
	var hookErr error
	if hooks.Paused != nil {
		if hookErr = hooks.Paused(ctx); hookErr != nil {
			hookErr = fmt.Errorf("xl receiver: paused hook: %w", hookErr)
		}
	}
	if _, err := io.WriteString(out, msgReport+string([]byte{statusKeep})+msgGo); err != nil {
		return res, errors.Join(hookErr, fmt.Errorf("xl receiver: giving the domain back: %w", err))
	}
	return res, hookErr
}
