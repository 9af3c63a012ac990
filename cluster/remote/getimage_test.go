package remote

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc"

	"github.com/vnsnap/vnsnap/cluster/clusterpb"
)

// countWriter counts what is written to it.
type countWriter struct{ n int }

func (w *countWriter) Write(b []byte) (int, error) { w.n += len(b); return len(b), nil }

// TestGetImageBoundsAgent: an agent that streams more than the image size
// it announced gets an error, and no byte past that size reaches the
// caller's writer.
func TestGetImageBoundsAgent(t *testing.T) {
	const size = 4
	liar := grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		if !strings.HasSuffix(info.FullMethod, "/GetImage") {
			return h(srv, ss)
		}
		var req clusterpb.GetImageRequest
		if err := ss.RecvMsg(&req); err != nil {
			return err
		}
		for i := range 3 {
			c := &clusterpb.ImageChunk{Image: req.Image, Offset: int64(i) << 16, Size: size, Sha256: strings.Repeat("0", 64), Data: make([]byte, 1<<16)}
			if err := ss.SendMsg(c); err != nil {
				return err
			}
		}
		return nil
	})
	h, _ := startAgent(t, countingHV{}, []grpc.ServerOption{liar})
	var w countWriter
	err := h.GetImage(context.Background(), &clusterpb.ImageRef{Snapshot: "s1", Vm: "a"}, &w, strings.Repeat("0", 64), false)
	if err == nil {
		t.Fatal("GetImage of an oversized stream: no error")
	}
	if w.n > size {
		t.Errorf("GetImage wrote %d bytes of an image of %d", w.n, size)
	}
}
