package agent

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/vnsnap/vnsnap/cluster/clusterpb"
	"github.com/vnsnap/vnsnap/vnet"
)

// TestStartVMRefusesUntrustedSpecs: a spec from the network never makes
// the agent boot a file outside its image directories (directly, through
// "..", or through a symbolic link), nor pass a bad name, MAC, size or
// command line; each refusal is InvalidArgument naming the field, and no
// VM is started.
func TestStartVMRefusesUntrustedSpecs(t *testing.T) {
	ctx := testCtx(t)
	a := newAgent(t, "h1", fakeHV{}, nil)
	imgs, kernel, initrd := fakeImages(t)
	a.cfg.ImageDirs = []string{imgs}
	if _, err := a.SetupHost(ctx, &clusterpb.SetupHostRequest{Call: call("setup", 0), SwitchId: 1, Algorithm: "vnsnap",
		Ports: []*clusterpb.PortSpec{{Vm: 0, Name: "a"}}}); err != nil {
		t.Fatal(err)
	}
	outside := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(outside, []byte("s"), 0o600)
	link := filepath.Join(imgs, "link")
	if err := os.Symlink(outside, link); err != nil {
		t.Fatal(err)
	}
	good := func() *clusterpb.MachineSpec {
		return &clusterpb.MachineSpec{Vm: 0, Name: "a", MemoryMib: 64, Vcpus: 1, Kernel: kernel, Initrd: initrd, Mac: "52:54:00:00:00:01"}
	}
	for _, c := range []struct {
		name, field string
		edit        func(*clusterpb.MachineSpec)
	}{
		{"kernel outside", "spec.kernel", func(s *clusterpb.MachineSpec) { s.Kernel = outside }},
		{"kernel through ..", "spec.kernel", func(s *clusterpb.MachineSpec) {
			s.Kernel = imgs + "/../" + filepath.Base(filepath.Dir(outside)) + "/secret"
		}},
		{"initrd through a symlink", "spec.initrd", func(s *clusterpb.MachineSpec) { s.Initrd = link }},
		{"relative kernel", "spec.kernel", func(s *clusterpb.MachineSpec) { s.Kernel = "vmlinuz" }},
		{"etc passwd", "spec.initrd", func(s *clusterpb.MachineSpec) { s.Initrd = "/etc/passwd" }},
		{"name with a slash", "spec.name", func(s *clusterpb.MachineSpec) { s.Name = "../a" }},
		{"name with a comma", "spec.name", func(s *clusterpb.MachineSpec) { s.Name = "a,server=on" }},
		{"negative vm", "spec.vm", func(s *clusterpb.MachineSpec) { s.Vm = -1 }},
		{"no memory", "spec.memory_mib", func(s *clusterpb.MachineSpec) { s.MemoryMib = 0 }},
		{"huge memory", "spec.memory_mib", func(s *clusterpb.MachineSpec) { s.MemoryMib = 1 << 30 }},
		{"no vcpus", "spec.vcpus", func(s *clusterpb.MachineSpec) { s.Vcpus = 0 }},
		{"bad mac", "spec.mac", func(s *clusterpb.MachineSpec) { s.Mac = "52-54-00-00-00-01" }},
		{"multicast mac", "spec.mac", func(s *clusterpb.MachineSpec) { s.Mac = "01:00:5e:00:00:01" }},
		{"long append", "spec.append", func(s *clusterpb.MachineSpec) { s.Append = strings.Repeat("x", 5000) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := good()
			c.edit(s)
			_, err := a.StartVM(ctx, &clusterpb.StartVMRequest{Call: call(fmt.Sprint("start-", len(c.name), c.field[5:]), 0), Spec: s})
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), c.field) {
				t.Errorf("err = %v; want InvalidArgument naming %s", err, c.field)
			}
			if a.Machine(0) != nil {
				t.Fatal("a VM was started")
			}
		})
	}
	if _, err := a.StartVM(ctx, &clusterpb.StartVMRequest{Call: call("start-good", 0), Spec: good()}); err != nil {
		t.Errorf("the good spec: %v", err)
	}
}

// TestRequestsRefused: malformed calls, snapshot names, tunnel addresses,
// lease TTLs and image references are refused with InvalidArgument
// naming the field.
func TestRequestsRefused(t *testing.T) {
	ctx := testCtx(t)
	a := newAgent(t, "h1", fakeHV{}, nil)
	setupFake(t, ctx, a)
	cases := []struct {
		name, field string
		do          func() error
	}{
		{"no call", "call", func() error { _, err := a.PauseVM(ctx, &clusterpb.VMRequest{Vm: 0}); return err }},
		{"empty request id", "call.request_id", func() error { _, err := a.PauseVM(ctx, &clusterpb.VMRequest{Call: call("", 0)}); return err }},
		{"request id with a space", "call.request_id", func() error { _, err := a.PauseVM(ctx, &clusterpb.VMRequest{Call: call("a b", 0)}); return err }},
		{"long request id", "call.request_id", func() error {
			_, err := a.PauseVM(ctx, &clusterpb.VMRequest{Call: call(strings.Repeat("a", 65), 0)})
			return err
		}},
		{"snapshot ..", "snapshot", func() error {
			_, err := a.BeginSnapshot(ctx, &clusterpb.LeaseRequest{Call: call("b1", 0), Snapshot: "..", TtlMillis: 1000})
			return err
		}},
		{"snapshot with a slash", "snapshot", func() error {
			_, err := a.BeginSnapshot(ctx, &clusterpb.LeaseRequest{Call: call("b2", 0), Snapshot: "a/b", TtlMillis: 1000})
			return err
		}},
		{"ttl too long", "ttl_millis", func() error {
			_, err := a.BeginSnapshot(ctx, &clusterpb.LeaseRequest{Call: call("b3", 0), Snapshot: "s", TtlMillis: 1 << 40})
			return err
		}},
		{"tunnel to a name", "tunnels[0].addr", func() error {
			_, err := a.AddTunnels(ctx, &clusterpb.AddTunnelsRequest{Call: call("t1", 0), Tunnels: []*clusterpb.Tunnel{{Name: "h2", Addr: "example.org:4789"}}})
			return err
		}},
		{"tunnel to port 0", "tunnels[0].addr", func() error {
			_, err := a.AddTunnels(ctx, &clusterpb.AddTunnelsRequest{Call: call("t2", 0), Tunnels: []*clusterpb.Tunnel{{Name: "h2", Addr: "10.0.0.2:0"}}})
			return err
		}},
		{"image vm ..", "image.vm", func() error { _, err := a.ImageStatus(ctx, &clusterpb.ImageRef{Snapshot: "s", Vm: ".."}); return err }},
		{"chunk too big", "data", func() error {
			return a.PutImage(&fakePutStream{ctx: ctx, chunks: []*clusterpb.ImageChunk{{Image: &clusterpb.ImageRef{Snapshot: "s", Vm: "a"}, Size: 10, Sha256: strings.Repeat("0", 64), Data: make([]byte, MaxChunk+1)}}})
		}},
		{"image too big", "size", func() error {
			return a.PutImage(&fakePutStream{ctx: ctx, chunks: []*clusterpb.ImageChunk{{Image: &clusterpb.ImageRef{Snapshot: "s", Vm: "a"}, Size: MaxImageBytes + 1, Sha256: strings.Repeat("0", 64)}}})
		}},
		{"unknown algorithm", "algorithm", func() error {
			_, err := a.SetAlgorithm(ctx, &clusterpb.SetAlgorithmRequest{Call: call("g1", 0), Algorithm: "chandy"})
			return err
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.do()
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), c.field+":") {
				t.Errorf("err = %v; want InvalidArgument naming %s", err, c.field)
			}
		})
	}
	if ents, _ := os.ReadDir(snapshotsDir(a.cfg.State)); len(ents) != 0 {
		t.Errorf("refused requests left %d snapshot directories", len(ents))
	}
}

// TestFlushAndAlgorithm: Flush writes the switch's frame log and the
// in-transit log into the lease's snapshot directory (and nowhere without
// a lease); the algorithm changes between snapshots, not during one.
func TestFlushAndAlgorithm(t *testing.T) {
	ctx := testCtx(t)
	a := newAgent(t, "h1", fakeHV{}, newManualClock())
	setupFake(t, ctx, a)
	if _, err := a.Flush(ctx, &clusterpb.FlushRequest{Call: call("f0", 0), Snapshot: "s1"}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("Flush without a lease: err = %v, want FailedPrecondition", err)
	}
	if _, err := a.SetAlgorithm(ctx, &clusterpb.SetAlgorithmRequest{Call: call("g0", 0), Algorithm: "vnsnap-log"}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.BeginSnapshot(ctx, &clusterpb.LeaseRequest{Call: call("b", 1), Snapshot: "s1", TtlMillis: 1000}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.SetAlgorithm(ctx, &clusterpb.SetAlgorithmRequest{Call: call("g1", 1), Algorithm: "vnsnap"}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("SetAlgorithm during a snapshot: err = %v, want FailedPrecondition", err)
	}
	if _, err := a.Flush(ctx, &clusterpb.FlushRequest{Call: call("f1", 1), Snapshot: "s1", InTransitEpoch: 1}); err != nil {
		t.Fatal(err)
	}
	dir := a.snapshotDir("s1")
	f, err := os.Open(filepath.Join(dir, "frames-h1.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if hdr, _, err := vnet.ReadLogEntries(f); err != nil || hdr.Switch != 1 {
		t.Errorf("frame log in the snapshot: switch %d, %v; want switch 1's log", hdr.Switch, err)
	}
	c, err := os.Open(filepath.Join(dir, "in-transit-h1-e1.chan"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if frames, err := vnet.ReadInTransit(c); err != nil || len(frames) != 0 {
		t.Errorf("in-transit log: %d frames, %v; want an empty, valid log", len(frames), err)
	}
}
