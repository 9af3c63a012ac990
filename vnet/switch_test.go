package vnet

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/vnsnap/vnsnap/core"
)

func TestLearningAndFlooding(t *testing.T) {
	b := newBed(t, 1, core.VNsnap, false)
	v0, v1, v2 := b.vm(0, 0), b.vm(0, 1), b.vm(0, 2)

	v0.sendTo(broadcast, "bcast")
	v1.expect("bcast")
	v2.expect("bcast")

	v1.sendTo(v0.mac, "1to0") // v0 was learned from the broadcast
	v0.expect("1to0")

	v0.sendTo(v1.mac, "0to1") // v1 was learned from its unicast
	v1.expect("0to1")

	v2.sendTo(mac{0x52, 0x54, 0, 0, 0, 0x77}, "unknown") // unknown unicast floods
	v0.expect("unknown")
	v1.expect("unknown")

	v1.sendTo(v1.mac, "self") // never back where it came from
	mustWait(t, b.sw[0], 1, func(p PortCounters) bool { return p.RxFrames == 2 })
	v2.sendTo(v1.mac, "2to1")
	v1.expect("2to1")

	v0.expectNone()
	v1.expectNone()
	v2.expectNone()
	c := b.sw[0].Counters()
	if c.Filtered != 1 {
		t.Errorf("filtered = %d, want 1", c.Filtered)
	}
	want := map[core.VMID][2]uint64{0: {1, 2}, 1: {0, 2}, 2: {1, 2}} // flooded, rx
	for vm, w := range want {
		p, _ := c.Port(vm)
		if p.Flooded != w[0] || p.RxFrames != w[1] {
			t.Errorf("vm %d: flooded %d rx %d, want %d %d", vm, p.Flooded, p.RxFrames, w[0], w[1])
		}
	}
	if p, _ := c.Port(1); p.TxFrames != 4 {
		t.Errorf("vm 1 tx frames = %d, want 4", p.TxFrames)
	}
}

func TestTunnelDelivery(t *testing.T) {
	b := newBed(t, 2, core.VNsnap, false)
	v0, v1, v2 := b.vm(0, 0), b.vm(0, 1), b.vm(1, 2)

	v0.sendTo(broadcast, "bcast") // local port and tunnel
	v1.expect("bcast")
	v2.expect("bcast")

	v2.sendTo(v0.mac, "2to0") // sw2 learned v0 behind the tunnel
	v0.expect("2to0")
	v0.sendTo(v2.mac, "0to2") // sw1 learned v2 behind the tunnel
	v2.expect("0to2")
	v1.expectNone()

	// A switch counts a frame after handing it on, so the receiver may see
	// the frame before the sender's counter moves: wait for the counters.
	deadline := time.Now().Add(waitFor)
	c1, c2 := b.sw[0].Counters(), b.sw[1].Counters()
	for (c1.Tunnels[0].TxFrames != 2 || c2.Tunnels[0].Flooded != 1) && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
		c1, c2 = b.sw[0].Counters(), b.sw[1].Counters()
	}
	if got := c1.Tunnels[0]; got.TxFrames != 2 || got.RxFrames != 1 {
		t.Errorf("sw1 tunnel tx %d rx %d, want 2 1", got.TxFrames, got.RxFrames)
	}
	if got := c2.Tunnels[0]; got.Flooded != 1 {
		t.Errorf("sw2 tunnel flooded %d, want 1", got.Flooded)
	}

	// A datagram from a stranger is dropped, even with a good header.
	stranger, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer stranger.Close()
	d := append(AppendHeader(nil, Header{Frame: 9, Src: 0, Len: 20}), ethFrame(v2.mac, v0.mac, "xxxxxx")...)
	if _, err := stranger.WriteToUDPAddrPort(d, b.sw[1].TunnelAddr()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := poll(ctx, func() bool { return b.sw[1].Counters().UnknownPeers == 1 }); err != nil {
		t.Fatal(err)
	}
	v2.expectNone()
}

func TestHeaderRoundTrip(t *testing.T) {
	h := Header{Flags: 2, Epoch: 7, Frame: 3<<48 | 99, Src: 12, Len: 60}
	d := append(AppendHeader(nil, h), make([]byte, 60)...)
	got, err := ParseHeader(d)
	if err != nil || got != h {
		t.Fatalf("ParseHeader = %+v, %v; want %+v", got, err, h)
	}
	bad := map[string][]byte{
		"short":   d[:10],
		"magic":   append([]byte{0}, d[1:]...),
		"version": append([]byte{HeaderMagic, 9}, d[2:]...),
		"length":  d[:len(d)-1],
	}
	for name, b := range bad {
		t.Run(name, func(t *testing.T) {
			if _, err := ParseHeader(b); !errors.Is(err, ErrBadHeader) {
				t.Errorf("got %v, want a header error", err)
			}
		})
	}
}

func TestReconnect(t *testing.T) {
	b := newBed(t, 1, core.VNsnap, false)
	v0 := b.vm(0, 0)

	// The VM's QEMU starts before its port exists and keeps retrying.
	path1 := filepath.Join(b.dir, "late.sock")
	type dialed struct {
		c   net.Conn
		err error
	}
	got := make(chan dialed)
	go func() {
		c, err := dialRetry(path1)
		got <- dialed{c, err}
	}()
	time.Sleep(20 * time.Millisecond)
	if err := b.sw[0].AddPort(PortConfig{VM: 1, Name: "late", Path: path1}); err != nil {
		t.Fatal(err)
	}
	d := <-got
	if d.err != nil {
		t.Fatal(d.err)
	}
	v1 := attachVM(t, b.sw[0], 1, d.c)
	v0.sendTo(broadcast, "hello")
	v1.expect("hello")

	// The VM goes away (restore): frames for it are dropped meanwhile.
	v1.close()
	mustWait(t, b.sw[0], 1, func(p PortCounters) bool { return !p.Connected })
	v0.sendTo(v1.mac, "lost")
	mustWait(t, b.sw[0], 1, func(p PortCounters) bool { return p.DroppedDown == 1 })

	v1 = dialVM(t, b.sw[0], 1, path1)
	v0.sendTo(v1.mac, "again")
	v1.expect("again")
	v1.sendTo(v0.mac, "back")
	v0.expect("back")

	// A second connection replaces the first.
	v1b := dialVM(t, b.sw[0], 1, path1)
	mustWait(t, b.sw[0], 1, func(p PortCounters) bool { return p.Connects == 3 })
	v0.sendTo(v1.mac, "newest")
	v1b.expect("newest")
	if _, ok := <-v1.rx; ok {
		t.Error("replaced connection still open")
	}
}

func TestControl(t *testing.T) {
	b := newBed(t, 1, core.VNsnap, false)
	v0, v1 := b.vm(0, 0), b.vm(0, 1)
	sock := filepath.Join(b.dir, "ctl.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- b.sw[0].ServeControl(l) }()

	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	c, err := Dial(ctx, "unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.SetAlgorithm(core.VNsnapLog); err != nil {
		t.Fatal(err)
	}
	if got := b.sw[0].Algorithm(); got != core.VNsnapLog {
		t.Errorf("algorithm = %v, want vnsnap-log", got)
	}
	if err := c.SetEpoch(1, 1); err != nil {
		t.Fatal(err)
	}
	if err := c.SetEpoch(1, 0); !errors.Is(err, ErrEpochBackwards) {
		t.Errorf("backwards SetEpoch: got %v, want ErrEpochBackwards", err)
	}
	if err := c.SetEpoch(9, 1); !errors.Is(err, ErrUnknownVM) {
		t.Errorf("SetEpoch of unknown vm: got %v, want ErrUnknownVM", err)
	}
	if _, err := c.Call(ctx, ControlRequest{Op: "nope"}); !errors.Is(err, ErrRemote) {
		t.Errorf("unknown op: got %v, want ErrRemote", err)
	}

	v0.sendTo(broadcast, "learn")
	v1.expect("learn") // white to red: logged
	frames, err := c.DumpLog(1)
	if err != nil {
		t.Fatal(err)
	}
	if len(frames) != 1 || frames[0].VM != 1 || frames[0].Src != 0 {
		t.Fatalf("dump-log = %+v, want one frame 0 -> 1", frames)
	}
	if n, err := c.Replay(frames); err != nil || n != 1 {
		t.Fatalf("replay = %d, %v; want 1", n, err)
	}
	v1.expect("learn")
	cs, err := c.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if p, _ := cs.Port(1); p.Epoch != 1 || p.Logged != 1 || p.Replayed != 1 || cs.Algorithm != "vnsnap-log" {
		t.Errorf("counters %+v, want epoch 1, logged 1, replayed 1, vnsnap-log", p)
	}
	if err := c.FlushLog(); err != nil {
		t.Fatal(err)
	}

	b.closeAll()
	if err := <-served; err != nil {
		t.Errorf("ServeControl = %v, want nil after Close", err)
	}
	if _, err := c.Counters(); err == nil {
		t.Error("call after the switch closed succeeded")
	}
}

func TestAddErrors(t *testing.T) {
	b := newBed(t, 1, core.VNsnap, false)
	b.vm(0, 0)
	if err := b.sw[0].AddPort(PortConfig{VM: 0, Path: filepath.Join(b.dir, "x.sock")}); !errors.Is(err, ErrDuplicate) {
		t.Errorf("duplicate vm: got %v, want ErrDuplicate", err)
	}
	if err := b.sw[0].AddTunnel("to2", netip.MustParseAddrPort("127.0.0.1:9")); err != nil {
		t.Fatal(err)
	}
	if err := b.sw[0].AddTunnel("to2", netip.MustParseAddrPort("127.0.0.1:10")); !errors.Is(err, ErrDuplicate) {
		t.Errorf("duplicate tunnel: got %v, want ErrDuplicate", err)
	}
	if err := b.sw[0].SetEpoch(5, 1); !errors.Is(err, ErrUnknownVM) {
		t.Errorf("unknown vm: got %v, want ErrUnknownVM", err)
	}
	if _, err := New(Config{ID: MaxSwitchID + 1}); err == nil {
		t.Error("New accepted a switch id above MaxSwitchID")
	}
	b.closeAll()
	if err := b.sw[0].AddPort(PortConfig{VM: 3, Path: filepath.Join(b.dir, "y.sock")}); !errors.Is(err, ErrClosed) {
		t.Errorf("AddPort after Close: got %v, want ErrClosed", err)
	}
}

func TestMACAging(t *testing.T) {
	bd := &bed{t: t, dir: shortDir(t), path: map[core.VMID]string{}, on: map[core.VMID]*Switch{}}
	s, err := New(Config{ID: 1, MACAge: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	bd.sw = []*Switch{s}
	v0, v1, v2 := bd.vm(0, 0), bd.vm(0, 1), bd.vm(0, 2)
	v1.sendTo(broadcast, "learn")
	v0.expect("learn")
	v2.expect("learn")
	v0.sendTo(v1.mac, "fresh")
	v1.expect("fresh")
	v2.expectNone()
	time.Sleep(150 * time.Millisecond) // v1's entry expires
	v0.sendTo(v1.mac, "stale")
	v1.expect("stale")
	v2.expect("stale") // flooded
	if p, _ := s.Counters().Port(0); p.Flooded != 1 {
		t.Errorf("vm 0 flooded %d frames, want 1 (only the stale one)", p.Flooded)
	}
}
