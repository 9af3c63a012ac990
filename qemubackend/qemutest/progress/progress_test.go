package progress

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

func TestWatchStallsWithoutProgress(t *testing.T) {
	var n atomic.Int64
	ctx, cancel := Watch(context.Background(), "counter", 50*time.Millisecond, time.Hour, func() int64 { return n.Load() })
	defer cancel()
	<-ctx.Done()
	if c := context.Cause(ctx); !errors.Is(c, ErrStalled) {
		t.Fatalf("cause %v, want ErrStalled", c)
	}
	if err := Why(ctx, ctx.Err()); err == nil || !errors.Is(err, context.Canceled) {
		t.Errorf("Why: %v, want the error with its cause", err)
	}
}

// TestWatchExtendsWhileMoving: a probe that keeps changing keeps the
// context alive well past the idle period, until the hard cap.
func TestWatchExtendsWhileMoving(t *testing.T) {
	var n atomic.Int64
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
				n.Add(1)
			}
		}
	}()
	idle := 100 * time.Millisecond
	ctx, cancel := Watch(context.Background(), "counter", idle, 8*idle, func() int64 { return n.Load() })
	defer cancel()
	<-ctx.Done()
	if c := context.Cause(ctx); !errors.Is(c, ErrCapped) {
		t.Fatalf("cause %v, want ErrCapped (the probe kept moving)", c)
	}
	if n.Load() < 10 {
		t.Errorf("probe moved %d times before the cap, want it to have run", n.Load())
	}
}

func TestWatchCancel(t *testing.T) {
	ctx, cancel := Watch(context.Background(), "x", time.Hour, time.Hour)
	cancel()
	<-ctx.Done()
	if c := context.Cause(ctx); errors.Is(c, ErrStalled) || errors.Is(c, ErrCapped) {
		t.Errorf("cause after cancel %v, want neither stalled nor capped", c)
	}
}

func TestDescendantCPU(t *testing.T) {
	p := DescendantCPU()
	before := p()
	// A child that burns CPU for a while: its ticks show up in the probe,
	// while it runs or, once reaped, in this process's cutime.
	cmd := exec.Command("sh", "-c", "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	if after := p(); after <= before {
		t.Errorf("descendant CPU %d -> %d after a busy child, want it to grow", before, after)
	}
}

func TestDirBytes(t *testing.T) {
	d := t.TempDir()
	p := DirBytes(d)
	if got := p(); got != 0 {
		t.Fatalf("empty dir: %d", got)
	}
	if err := os.WriteFile(filepath.Join(d, "a.console"), []byte("HB 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := p(); got != 5 {
		t.Errorf("got %d bytes, want 5", got)
	}
}
