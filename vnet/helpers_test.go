package vnet

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/vnsnap/vnsnap/core"
)

func TestMain(m *testing.M) {
	if cfg := os.Getenv(switchProcEnv); cfg != "" {
		os.Exit(switchProcMain(cfg)) // a switch process of the cross-host test
	}
	goleak.VerifyTestMain(m)
}

const waitFor = 5 * time.Second

// shortDir returns a temporary directory with a short path: unix socket
// paths are limited to 108 bytes, and t.TempDir embeds the test name.
func shortDir(t testing.TB) string {
	d, err := os.MkdirTemp("", "vnet")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

func vmMAC(vm core.VMID) mac { return mac{0x52, 0x54, 0, 0, 0, byte(vm + 1)} }

var broadcast = mac{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// ethFrame builds an Ethernet frame with an experimental ethertype.
func ethFrame(dst, src mac, payload string) []byte {
	b := append(append(append([]byte{}, dst[:]...), src[:]...), 0x88, 0xb5)
	return append(b, payload...)
}

// udpFrame builds an Ethernet/IPv4/UDP frame between two VMs.
func udpFrame(dst, src mac, payload string) []byte {
	return ipFrame(dst, src, 17, func(b []byte) []byte {
		b = binary.BigEndian.AppendUint16(b, 4000)
		b = binary.BigEndian.AppendUint16(b, 5000)
		b = binary.BigEndian.AppendUint16(b, uint16(8+len(payload)))
		return append(binary.BigEndian.AppendUint16(b, 0), payload...)
	})
}

// tcpFrame builds an Ethernet/IPv4/TCP frame with the ACK flag set.
func tcpFrame(dst, src mac, seq, ack uint32, payload string) []byte {
	return ipFrame(dst, src, 6, func(b []byte) []byte {
		b = binary.BigEndian.AppendUint16(b, 4000+uint16(src[5])) // mirrored ports:
		b = binary.BigEndian.AppendUint16(b, 4000+uint16(dst[5])) // one connection
		b = binary.BigEndian.AppendUint32(b, seq)
		b = binary.BigEndian.AppendUint32(b, ack)
		b = append(b, 5<<4, tcpACK, 0xff, 0xff, 0, 0, 0, 0)
		return append(b, payload...)
	})
}

func ipFrame(dst, src mac, proto byte, l4 func([]byte) []byte) []byte {
	seg := l4(nil)
	b := append(append(append([]byte{}, dst[:]...), src[:]...), 0x08, 0x00)
	b = append(b, 0x45, 0)
	b = binary.BigEndian.AppendUint16(b, uint16(20+len(seg)))
	b = append(b, 0, 0, 0, 0, 64, proto, 0, 0)
	b = append(b, 10, 0, 0, src[5], 10, 0, 0, dst[5])
	return append(b, seg...)
}

// fakeVM is a test stand-in for QEMU: it speaks the stream protocol over a
// real unix socket connected to a switch port.
type fakeVM struct {
	t    testing.TB
	vm   core.VMID
	mac  mac
	conn net.Conn
	rx   chan []byte
	wg   sync.WaitGroup
}

// dialVM connects a fake VM to the port at path, retrying like QEMU's
// reconnect-ms until the switch listens, and waits until the switch has
// accepted it.
func dialVM(t testing.TB, s *Switch, vm core.VMID, path string) *fakeVM {
	t.Helper()
	conn, err := dialRetry(path)
	if err != nil {
		t.Fatal(err)
	}
	return attachVM(t, s, vm, conn)
}

// dialRetry dials path until it succeeds or waitFor passes.
func dialRetry(path string) (net.Conn, error) {
	deadline := time.Now().Add(waitFor)
	for {
		conn, err := net.Dial("unix", path)
		if err == nil {
			return conn, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("dial %s: %w", path, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// attachVM wraps a connection to vm's port in a fake VM.
func attachVM(t testing.TB, s *Switch, vm core.VMID, conn net.Conn) *fakeVM {
	t.Helper()
	v := &fakeVM{t: t, vm: vm, mac: vmMAC(vm), conn: conn, rx: make(chan []byte, 1<<14)}
	v.wg.Add(1)
	go v.readLoop()
	t.Cleanup(v.close)
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	// The switch has accepted this connection once its connect count
	// covers it and it is up; connects are counted before up is set.
	if err := waitCounter(ctx, s, vm, func(p PortCounters) bool { return p.Connected }); err != nil {
		t.Fatalf("vm %d never connected: %v", vm, err)
	}
	return v
}

func (v *fakeVM) readLoop() {
	defer v.wg.Done()
	defer close(v.rx)
	var lb [4]byte
	for {
		if _, err := io.ReadFull(v.conn, lb[:]); err != nil {
			return
		}
		b := make([]byte, binary.BigEndian.Uint32(lb[:]))
		if _, err := io.ReadFull(v.conn, b); err != nil {
			return
		}
		select {
		case v.rx <- b:
		default:
			panic("fakeVM receive buffer full")
		}
	}
}

func (v *fakeVM) close() {
	v.conn.Close()
	v.wg.Wait()
}

// send writes one frame in the stream format.
func (v *fakeVM) send(frame []byte) {
	v.t.Helper()
	b := binary.BigEndian.AppendUint32(nil, uint32(len(frame)))
	if _, err := v.conn.Write(append(b, frame...)); err != nil {
		v.t.Fatalf("vm %d send: %v", v.vm, err)
	}
}

// sendTo sends an experimental-ethertype frame carrying payload to dst.
func (v *fakeVM) sendTo(dst mac, payload string) { v.send(ethFrame(dst, v.mac, payload)) }

// expect waits for the next frame and checks its payload suffix.
func (v *fakeVM) expect(payload string) []byte {
	v.t.Helper()
	select {
	case b, ok := <-v.rx:
		if !ok {
			v.t.Fatalf("vm %d: connection closed, want %q", v.vm, payload)
		}
		if !bytes.HasSuffix(b, []byte(payload)) {
			v.t.Fatalf("vm %d received %q, want payload %q", v.vm, b[14:], payload)
		}
		return b
	case <-time.After(waitFor):
		v.t.Fatalf("vm %d: no frame, want %q", v.vm, payload)
	}
	return nil
}

// expectNone checks that nothing has been received.
func (v *fakeVM) expectNone() {
	v.t.Helper()
	select {
	case b := <-v.rx:
		v.t.Fatalf("vm %d received %q, want nothing", v.vm, b[14:])
	default:
	}
}

// waitCounter polls vm's port counters until cond holds.
func waitCounter(ctx context.Context, s *Switch, vm core.VMID, cond func(PortCounters) bool) error {
	var last PortCounters
	err := poll(ctx, func() bool {
		p, ok := s.Counters().Port(vm)
		last = p
		return ok && cond(p)
	})
	if err != nil {
		return fmt.Errorf("counters of vm %d stuck at %+v: %w", vm, last, err)
	}
	return nil
}

func mustWait(t testing.TB, s *Switch, vm core.VMID, cond func(PortCounters) bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := waitCounter(ctx, s, vm, cond); err != nil {
		t.Fatal(err)
	}
}

// bed is a test bed of switches; VMs are placed on them by index.
type bed struct {
	t    testing.TB
	dir  string
	sw   []*Switch
	logs []*bytes.Buffer
	path map[core.VMID]string
	on   map[core.VMID]*Switch
}

// newBed starts n switches joined by a full mesh of tunnels on 127.0.0.1,
// each with a frame log in memory.
func newBed(t testing.TB, n int, alg core.Algorithm, logs bool) *bed {
	return newBedLog(t, n, alg, func(b *bed) io.Writer {
		if !logs {
			return nil
		}
		buf := &bytes.Buffer{}
		b.logs = append(b.logs, buf)
		return &lockedWriter{w: buf}
	})
}

// newBedLog is newBed with each switch's frame log from newLog (nil: none).
func newBedLog(t testing.TB, n int, alg core.Algorithm, newLog func(*bed) io.Writer) *bed {
	b := &bed{t: t, dir: shortDir(t), path: map[core.VMID]string{}, on: map[core.VMID]*Switch{}}
	for i := range n {
		cfg := Config{ID: uint16(i + 1), Algorithm: alg, TunnelAddr: "127.0.0.1:0", LogFlushInterval: -1}
		if w := newLog(b); w != nil {
			cfg.FrameLog = w
		}
		s, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		b.sw = append(b.sw, s)
	}
	for i, a := range b.sw {
		for j, c := range b.sw {
			if i != j {
				if err := a.AddTunnel(fmt.Sprintf("to%d", j+1), c.TunnelAddr()); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	return b
}

// lockedWriter lets a test read a log buffer the switch writes to.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// vm adds a port for vm on switch i and connects a fake VM to it.
func (b *bed) vm(i int, vm core.VMID) *fakeVM {
	b.t.Helper()
	path := filepath.Join(b.dir, fmt.Sprintf("vm%d.sock", vm))
	if err := b.sw[i].AddPort(PortConfig{VM: vm, Name: fmt.Sprintf("vm%d", vm), Path: path}); err != nil {
		b.t.Fatal(err)
	}
	b.path[vm], b.on[vm] = path, b.sw[i]
	return dialVM(b.t, b.sw[i], vm, path)
}

// setEpoch flips vm's port on whichever switch holds it.
func (b *bed) setEpoch(vm core.VMID, e core.Epoch) {
	b.t.Helper()
	if err := b.on[vm].SetEpoch(vm, e); err != nil {
		b.t.Fatal(err)
	}
}

func (b *bed) counters(vm core.VMID) PortCounters {
	p, _ := b.on[vm].Counters().Port(vm)
	return p
}

// closeAll closes every switch (flushing the logs).
func (b *bed) closeAll() {
	for _, s := range b.sw {
		if err := s.Close(); err != nil && !errors.Is(err, ErrClosed) {
			b.t.Fatal(err)
		}
	}
}
