package remote

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"path/filepath"
	"testing"
	"time"

	"github.com/vnsnap/vnsnap/cluster/clusterpb"
	"github.com/vnsnap/vnsnap/core"
	"github.com/vnsnap/vnsnap/qemubackend"
	"github.com/vnsnap/vnsnap/qemubackend/guestimg"
	"github.com/vnsnap/vnsnap/qemubackend/qemutest"
	"github.com/vnsnap/vnsnap/qemubackend/qemutest/progress"
	"github.com/vnsnap/vnsnap/realbackend/hv"
)

// TestRealRemoteMachine drives a real QEMU VM on an agent through the hv
// port from the coordinator's side: Start, Pause, Resume; a live Save
// under a lease renewed by the coordinator, whose snapshot-point hook runs
// while the VM is paused and flips its colour through the remote
// Controller, with the image streamed back into the caller's writer; then
// Restore from those bytes (sent to the agent, checksummed) runs the guest
// on from its snapshot.
func TestRealRemoteMachine(t *testing.T) {
	qh := qemutest.RequireQEMU(t)
	img := qemutest.GuestImage(t, "../..")
	ctx := qemutest.Context(t, 15*time.Minute)
	h, a := startAgent(t, qemubackend.NewHypervisor(qh), nil, filepath.Dir(img.Kernel), filepath.Dir(img.Initrd))
	if _, err := h.Setup(ctx, 1, core.VNsnap, "", []Port{{VM: 0, Name: "a"}}); err != nil {
		t.Fatal(err)
	}
	hyp, err := h.Hypervisor(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := hyp.Info().Name; got != "qemu" {
		t.Errorf("remote hypervisor %q, want qemu", got)
	}
	spec := hv.MachineSpec{Name: "a", MemoryMiB: 128, VCPUs: 1, Kernel: img.Kernel, Initrd: img.Initrd,
		Append: guestimg.KernelArgs("", "", guestimg.Program{Name: "heartbeat", Args: []string{"-interval=20ms"}}),
		MAC:    qemubackend.MACFor("a")}
	m, err := hyp.Start(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	local := func() *qemubackend.Machine { return a.Machine(0).(*qemubackend.Machine) }
	if _, _, err := local().VM().Console.WaitFor(ctx, 0, func(l qemubackend.Line) bool { _, ok := l.Heartbeat(); return ok }); err != nil {
		t.Fatalf("no heartbeat: %v", progress.Why(ctx, err))
	}
	status := func() string {
		t.Helper()
		s, err := local().VM().Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	beat := func(what string) hv.Heartbeat {
		t.Helper()
		hb, err := local().WaitHeartbeatAfter(ctx, time.Now(), hv.HeartbeatSilence)
		if err != nil {
			t.Fatalf("%s: no heartbeat: %v", what, progress.Why(ctx, err))
		}
		return hb
	}
	if err := m.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	if s := status(); s != "paused" {
		t.Fatalf("after Pause: %q", s)
	}
	if err := m.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	last := beat("after Resume")

	lease, err := h.Begin(ctx, "s1", 1, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var passes []int
	var atPoint string
	var img1 bytes.Buffer
	st, err := m.Save(ctx, &img1, hv.SaveOptions{
		Live:   true,
		OnPass: func(n int, _ time.Time) { passes = append(passes, n) },
		AtSnapshotPoint: func(context.Context) error {
			atPoint = status()
			return h.Controller().SetEpoch(0, 1)
		},
	})
	if err != nil {
		t.Fatalf("save: %v", progress.Why(ctx, err))
	}
	t.Logf("save: %d bytes, %d passes (%v streamed), downtime %v", st.Bytes, st.Passes, passes, st.Downtime)
	if atPoint == "running" || atPoint == "" {
		t.Errorf("status at the snapshot point %q, want a paused VM", atPoint)
	}
	if e, _ := a.Switch().Epoch(0); e != 1 {
		t.Errorf("port epoch %d after the snapshot-point flip, want 1", e)
	}
	if len(passes) == 0 || int64(img1.Len()) != st.Bytes {
		t.Errorf("passes %v, image %d bytes of %d; want passes and the whole image", passes, img1.Len(), st.Bytes)
	}
	if err := lease.Err(); err != nil {
		t.Errorf("lease renewal: %v", err)
	}
	if err := lease.End(ctx, true); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(img1.Bytes())
	rep, err := h.Client().ImageStatus(ctx, &clusterpb.ImageRef{Snapshot: "s1", Vm: "a"})
	if err != nil || !rep.Complete || rep.Sha256 != hex.EncodeToString(sum[:]) {
		t.Errorf("agent's committed image: %v, %v; want the bytes Save returned", rep, err)
	}
	if err := m.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	last = beat("after the save")

	m.Kill()
	m2, err := hyp.Restore(ctx, spec, bytes.NewReader(img1.Bytes()))
	if err != nil {
		t.Fatalf("restore: %v", progress.Why(ctx, err))
	}
	if s := status(); s == "running" {
		t.Fatal("restored VM runs before Resume")
	}
	if err := m2.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	hb := beat("after the restore")
	if hb.N < 2 || hb.N > last.N {
		t.Errorf("restored guest beats %d; want the count it had at its snapshot (> 1, <= %d)", hb.N, last.N)
	}
	m2.Kill()
}
