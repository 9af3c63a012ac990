package remote

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/vnsnap/vnsnap/core"
)

// TestTunnelBetweenAgents: a coordinator sets up two agents' switches
// with tunnels to each other's addresses; a frame sent into a port on
// host h1 (as QEMU would, over the port's unix socket) comes out of the
// port on h2, through real UDP between the agents' switches.
func TestTunnelBetweenAgents(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := newCerts(t, "h1", "h2")
	h1, a1 := serveAgent(t, dir, "h1", countingHV{}, nil)
	h2, a2 := serveAgent(t, dir, "h2", countingHV{}, nil)
	t1, err := h1.Setup(ctx, 1, core.VNsnap, "127.0.0.1:0", []Port{{VM: 0, Name: "a"}})
	if err != nil {
		t.Fatal(err)
	}
	t2, err := h2.Setup(ctx, 2, core.VNsnap, "127.0.0.1:0", []Port{{VM: 1, Name: "b"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := h1.AddTunnel(ctx, "h2", t2); err != nil {
		t.Fatal(err)
	}
	if err := h2.AddTunnel(ctx, "h1", t1); err != nil {
		t.Fatal(err)
	}
	dial := func(state, vm string) net.Conn {
		t.Helper()
		c, err := net.Dial("unix", filepath.Join(state, "run", vm+".sock"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	ca, cb := dial(a1.State(), "a"), dial(a2.State(), "b")
	if err := a1.Switch().WaitConnected(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if err := a2.Switch().WaitConnected(ctx, 1); err != nil {
		t.Fatal(err)
	}
	frame := make([]byte, 64)
	copy(frame, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x52, 0x54, 0, 0, 0, 1, 0x88, 0xb5}) // broadcast, local experimental ethertype
	copy(frame[14:], "across the tunnel")
	rec := binary.BigEndian.AppendUint32(nil, uint32(len(frame)))
	if _, err := ca.Write(append(rec, frame...)); err != nil {
		t.Fatal(err)
	}
	cb.SetReadDeadline(time.Now().Add(30 * time.Second)) // a safety net, not a measurement
	var n uint32
	if err := binary.Read(cb, binary.BigEndian, &n); err != nil {
		t.Fatalf("no frame at h2's port: %v", err)
	}
	got := make([]byte, n)
	if _, err := io.ReadFull(cb, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, frame) {
		t.Errorf("frame at h2 % x, want % x", got, frame)
	}
	if c := a2.Switch().Counters(); c.Tunnels[0].RxFrames == 0 {
		t.Errorf("h2's tunnel counted no frame: %+v", c)
	}
}
