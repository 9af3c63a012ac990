package agent

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/vnsnap/vnsnap/cluster/clusterpb"
	"github.com/vnsnap/vnsnap/vne"
)

// fuzzCase is one handler fed a decoded message.
type fuzzCase struct {
	msg  func() proto.Message
	call func(a *Agent, ctx context.Context, m proto.Message) error
}

func unary[Req proto.Message, Rep any](f func(*Agent) func(context.Context, Req) (Rep, error), mk func() Req) fuzzCase {
	return fuzzCase{
		msg: func() proto.Message { return mk() },
		call: func(a *Agent, ctx context.Context, m proto.Message) error {
			_, err := f(a)(ctx, m.(Req))
			return err
		},
	}
}

// fuzzCases are the handlers FuzzHandlers feeds, by the first input byte.
var fuzzCases = []fuzzCase{
	unary(func(a *Agent) func(context.Context, *clusterpb.SetupHostRequest) (*clusterpb.SetupHostReply, error) {
		return a.SetupHost
	}, func() *clusterpb.SetupHostRequest { return &clusterpb.SetupHostRequest{} }),
	unary(func(a *Agent) func(context.Context, *clusterpb.AddTunnelsRequest) (*clusterpb.Ack, error) {
		return a.AddTunnels
	}, func() *clusterpb.AddTunnelsRequest { return &clusterpb.AddTunnelsRequest{} }),
	unary(func(a *Agent) func(context.Context, *clusterpb.StartVMRequest) (*clusterpb.Ack, error) {
		return a.StartVM
	}, func() *clusterpb.StartVMRequest { return &clusterpb.StartVMRequest{} }),
	unary(func(a *Agent) func(context.Context, *clusterpb.RestoreVMRequest) (*clusterpb.Ack, error) {
		return a.RestoreVM
	}, func() *clusterpb.RestoreVMRequest { return &clusterpb.RestoreVMRequest{} }),
	unary(func(a *Agent) func(context.Context, *clusterpb.VMRequest) (*clusterpb.Ack, error) { return a.PauseVM }, func() *clusterpb.VMRequest { return &clusterpb.VMRequest{} }),
	unary(func(a *Agent) func(context.Context, *clusterpb.VMRequest) (*clusterpb.Ack, error) { return a.ResumeVM }, func() *clusterpb.VMRequest { return &clusterpb.VMRequest{} }),
	unary(func(a *Agent) func(context.Context, *clusterpb.SetEpochRequest) (*clusterpb.Ack, error) {
		return a.SetEpoch
	}, func() *clusterpb.SetEpochRequest { return &clusterpb.SetEpochRequest{} }),
	unary(func(a *Agent) func(context.Context, *clusterpb.SetAlgorithmRequest) (*clusterpb.Ack, error) {
		return a.SetAlgorithm
	}, func() *clusterpb.SetAlgorithmRequest { return &clusterpb.SetAlgorithmRequest{} }),
	unary(func(a *Agent) func(context.Context, *clusterpb.FlushRequest) (*clusterpb.Ack, error) { return a.Flush }, func() *clusterpb.FlushRequest { return &clusterpb.FlushRequest{} }),
	unary(func(a *Agent) func(context.Context, *clusterpb.LeaseRequest) (*clusterpb.LeaseReply, error) {
		return a.BeginSnapshot
	}, func() *clusterpb.LeaseRequest { return &clusterpb.LeaseRequest{} }),
	unary(func(a *Agent) func(context.Context, *clusterpb.LeaseRequest) (*clusterpb.LeaseReply, error) {
		return a.RenewLease
	}, func() *clusterpb.LeaseRequest { return &clusterpb.LeaseRequest{} }),
	unary(func(a *Agent) func(context.Context, *clusterpb.EndSnapshotRequest) (*clusterpb.Ack, error) {
		return a.EndSnapshot
	}, func() *clusterpb.EndSnapshotRequest { return &clusterpb.EndSnapshotRequest{} }),
	unary(func(a *Agent) func(context.Context, *clusterpb.ImageRef) (*clusterpb.ImageStatusReply, error) {
		return a.ImageStatus
	}, func() *clusterpb.ImageRef { return &clusterpb.ImageRef{} }),
	{ // SaveVM never holds here: nothing would release it.
		msg: func() proto.Message { return &clusterpb.SaveVMRequest{} },
		call: func(a *Agent, ctx context.Context, m proto.Message) error {
			r := m.(*clusterpb.SaveVMRequest)
			r.Hold = false
			return a.SaveVM(r, &fakeSaveStream{ctx: ctx})
		},
	},
	{ // GetImage: every chunk sent lies inside the image it names.
		msg: func() proto.Message { return &clusterpb.GetImageRequest{} },
		call: func(a *Agent, ctx context.Context, m proto.Message) error {
			return a.GetImage(m.(*clusterpb.GetImageRequest), &fakeGetStream{ctx: ctx})
		},
	},
	{ // PutImage: the message is the first chunk, then two more follow.
		msg: func() proto.Message { return &clusterpb.ImageChunk{} },
		call: func(a *Agent, ctx context.Context, m proto.Message) error {
			c := m.(*clusterpb.ImageChunk)
			next := proto.Clone(c).(*clusterpb.ImageChunk)
			next.Offset += int64(len(c.Data))
			return a.PutImage(&fakePutStream{ctx: ctx, chunks: []*clusterpb.ImageChunk{c, next}})
		},
	},
}

// FuzzHandlers feeds arbitrary decoded messages to the agent's handlers
// (one agent per fuzzing process, so calls build on each other): none may
// panic, every error is a gRPC status with a code other than Unknown, and
// nothing is written outside the state directory's own names.
func FuzzHandlers(f *testing.F) {
	imgDir := f.TempDir()
	kernel, initrd := filepath.Join(imgDir, "vmlinuz"), filepath.Join(imgDir, "initrd.gz")
	os.WriteFile(kernel, []byte("k"), 0o644)
	os.WriteFile(initrd, []byte("i"), 0o644)
	seeds := []proto.Message{
		&clusterpb.SetupHostRequest{Call: call("s", 0), SwitchId: 1, Algorithm: "vnsnap", Ports: []*clusterpb.PortSpec{{Vm: 0, Name: "a"}}},
		&clusterpb.AddTunnelsRequest{Call: call("t", 0), Tunnels: []*clusterpb.Tunnel{{Name: "h2", Addr: "127.0.0.1:9"}}},
		&clusterpb.StartVMRequest{Call: call("v", 0), Spec: &clusterpb.MachineSpec{Vm: 0, Name: "a", MemoryMib: 64, Vcpus: 1, Kernel: kernel, Initrd: initrd, Mac: "52:54:00:00:00:01"}},
		&clusterpb.RestoreVMRequest{Call: call("r", 0), Spec: &clusterpb.MachineSpec{Vm: 0, Name: "a"}, Image: &clusterpb.ImageRef{Snapshot: "s1", Vm: "a"}},
		&clusterpb.VMRequest{Call: call("p", 0), Vm: 0},
		&clusterpb.VMRequest{Call: call("q", 0), Vm: 0},
		&clusterpb.SetEpochRequest{Call: call("e", 1), Vm: 0, Colour: 1},
		&clusterpb.SetAlgorithmRequest{Call: call("g", 1), Algorithm: "vnsnap-log"},
		&clusterpb.FlushRequest{Call: call("f", 1), Snapshot: "s1", InTransitEpoch: 1},
		&clusterpb.LeaseRequest{Call: call("b", 1), Snapshot: "s1", TtlMillis: 1000},
		&clusterpb.LeaseRequest{Call: call("n", 1), Snapshot: "s1", TtlMillis: 1000},
		&clusterpb.EndSnapshotRequest{Call: call("x", 1), Snapshot: "s1", Commit: true},
		&clusterpb.ImageRef{Snapshot: "s1", Vm: "a"},
		&clusterpb.SaveVMRequest{Call: call("w", 1), Vm: 0, Snapshot: "s1", Live: true, ColourEpoch: 1},
		&clusterpb.GetImageRequest{Image: &clusterpb.ImageRef{Snapshot: "s1", Vm: "a"}, Offset: 1, Uncommitted: true},
		&clusterpb.ImageChunk{Image: &clusterpb.ImageRef{Snapshot: "s1", Vm: "../a"}, Size: 3, Sha256: strings.Repeat("0", 64), Data: []byte("abc")},
	}
	for i, m := range seeds {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(byte(i), b)
	}
	state, err := os.MkdirTemp("/tmp", "vnfz")
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { os.RemoveAll(state) })
	a, _, err := New(Config{Host: "h1", State: state, Hypervisor: fakeHV{}, Clock: newManualClock(), ImageDirs: []string{imgDir}})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { a.Close() })
	f.Fuzz(func(t *testing.T, which byte, data []byte) {
		c := fuzzCases[int(which)%len(fuzzCases)]
		m := c.msg()
		if proto.Unmarshal(data, m) != nil {
			return
		}
		if ch, ok := m.(*clusterpb.ImageChunk); ok && len(ch.Data) > MaxChunk {
			return // gRPC's message limit stops it before the handler
		}
		err := c.call(a, context.Background(), m)
		if err != nil {
			if s, ok := status.FromError(err); !ok || s.Code() == codes.Unknown {
				t.Fatalf("%T: error without a status code: %v", m, err)
			}
		}
		checkStateNames(t, state)
	})
}

// checkStateNames fails if the state directory holds a name the agent
// does not make: an unchecked name reached a path.
func checkStateNames(t *testing.T, state string) {
	t.Helper()
	for _, top := range []string{"snapshots", "images"} {
		ents, _ := os.ReadDir(filepath.Join(state, top))
		for _, e := range ents {
			if vne.CheckVNEName(e.Name()) != nil {
				t.Fatalf("%s/%s: not a snapshot name", top, e.Name())
			}
		}
	}
	ents, _ := os.ReadDir(state)
	for _, e := range ents {
		switch e.Name() {
		case "run", "snapshots", "images":
		default:
			t.Fatalf("state directory holds %q", e.Name())
		}
	}
}

// fakeSaveStream and fakePutStream stand for gRPC's streams in the fuzz
// target, which calls handlers directly.
type fakeSaveStream struct {
	clusterpb.Agent_SaveVMServer
	ctx context.Context
}

func (s *fakeSaveStream) Context() context.Context                      { return s.ctx }
func (s *fakeSaveStream) Send(*clusterpb.SaveEvent) error               { return nil }
func (s *fakeSaveStream) SetHeader(metadata.MD) error                   { return nil }
func (s *fakePutStream) Context() context.Context                       { return s.ctx }
func (s *fakePutStream) SendAndClose(*clusterpb.ImageStatusReply) error { return nil }

type fakePutStream struct {
	clusterpb.Agent_PutImageServer
	ctx    context.Context
	chunks []*clusterpb.ImageChunk
}

func (s *fakePutStream) Recv() (*clusterpb.ImageChunk, error) {
	if len(s.chunks) == 0 {
		return nil, io.EOF
	}
	c := s.chunks[0]
	s.chunks = s.chunks[1:]
	return c, nil
}

type fakeGetStream struct {
	clusterpb.Agent_GetImageServer
	ctx context.Context
}

func (s *fakeGetStream) Context() context.Context { return s.ctx }
func (s *fakeGetStream) Send(c *clusterpb.ImageChunk) error {
	if c.Offset < 0 || c.Offset+int64(len(c.Data)) > c.Size {
		return fmt.Errorf("GetImage sent %d bytes at %d of an image of %d", len(c.Data), c.Offset, c.Size)
	}
	return nil
}
