package vnet

import (
	"bytes"
	"context"
	"encoding/binary"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/vnsnap/vnsnap/core"
	"github.com/vnsnap/vnsnap/qemubackend"
	"github.com/vnsnap/vnsnap/qemubackend/qemutest"
	"github.com/vnsnap/vnsnap/qemubackend/qemutest/progress"
)

// startQEMU runs a QEMU process whose only "VM" is its user-mode network
// stack (slirp) behind a hub, connected to the port at path as a -netdev stream client, its value built
// by qemubackend.Option like every QEMU argument.
// It answers ARP for 10.0.2.2, so frames cross QEMU's real stream backend.
func startQEMU(t *testing.T, path string) *exec.Cmd {
	t.Helper()
	h := qemutest.RequireQEMU(t) // fails in CI without QEMU, skips elsewhere
	netdev, err := qemubackend.Option("stream", "id", "s0", "server", "off", "addr.type", "unix", "addr.path", path, "reconnect-ms", "50")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(h.Binary, "-machine", "none", "-nodefaults", "-display", "none",
		"-netdev", netdev,
		"-netdev", "user,id=u0,restrict=on",
		"-netdev", "hubport,id=h0,hubid=0,netdev=s0",
		"-netdev", "hubport,id=h1,hubid=0,netdev=u0")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start qemu: %v", err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return cmd
}

// arpRequest asks who has 10.0.2.2, from 10.0.2.15.
func arpRequest(src mac) []byte {
	b := append(append(append([]byte{}, broadcast[:]...), src[:]...), 0x08, 0x06)
	b = binary.BigEndian.AppendUint16(b, 1)
	b = binary.BigEndian.AppendUint16(b, 0x0800)
	b = append(b, 6, 4, 0, 1)
	b = append(append(b, src[:]...), 10, 0, 2, 15)
	return append(b, 0, 0, 0, 0, 0, 0, 10, 0, 2, 2)
}

func expectARPReply(ctx context.Context, t *testing.T, v *fakeVM) {
	t.Helper()
	v.send(arpRequest(v.mac))
	select {
	case b := <-v.rx:
		if len(b) < 42 || !bytes.Equal(b[0:6], v.mac[:]) || b[12] != 0x08 || b[13] != 0x06 || b[21] != 2 {
			t.Fatalf("got %x, want an ARP reply to %x", b, v.mac)
		}
	case <-ctx.Done():
		t.Fatalf("no ARP reply from QEMU's slirp: %v", context.Cause(ctx))
	}
}

// TestQEMUStream's waits on QEMU derive from progress (qemutest.Context: no
// CPU time for QEMU for qemutest.Idle), not from the 5 s the in-process
// tests allow: a QEMU starting on a loaded machine may take seconds to
// connect.
func TestQEMUStream(t *testing.T) {
	b := newBed(t, 1, core.VNsnap, false)
	v := b.vm(0, 0)
	path := filepath.Join(b.dir, "qemu.sock")
	q := startQEMU(t, path) // before the port exists: QEMU keeps reconnecting
	ctx := qemutest.Context(t, 5*time.Minute)
	wait := func(cond func(PortCounters) bool) {
		t.Helper()
		if err := waitCounter(ctx, b.sw[0], 1, cond); err != nil {
			t.Fatal(progress.Why(ctx, err))
		}
	}
	if err := b.sw[0].AddPort(PortConfig{VM: 1, Name: "qemu", Path: path}); err != nil {
		t.Fatal(err)
	}
	wait(func(p PortCounters) bool { return p.Connected })
	expectARPReply(ctx, t, v)

	// QEMU goes away and a new one comes (a restore): the port reconnects.
	q.Process.Kill()
	q.Wait()
	wait(func(p PortCounters) bool { return !p.Connected })
	startQEMU(t, path)
	wait(func(p PortCounters) bool { return p.Connected && p.Connects == 2 })
	expectARPReply(ctx, t, v)
	if p, _ := b.sw[0].Counters().Port(1); p.RxFrames != 2 || p.TxFrames != 2 {
		t.Errorf("qemu port rx %d tx %d, want 2 2", p.RxFrames, p.TxFrames)
	}
}
