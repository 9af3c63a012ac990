package agent

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/vnsnap/vnsnap/cluster/certs"
	"github.com/vnsnap/vnsnap/cluster/clusterpb"
)

// committedImage writes a committed snapshot snap holding image vm of data
// into a's state directory, as a save and EndSnapshot would.
func committedImage(t *testing.T, a *Agent, snap, vm string, data []byte) string {
	t.Helper()
	dir := a.snapshotDir(snap)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	part := filepath.Join(dir, vm+partExt)
	if err := os.WriteFile(part, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := a.finishImage(part, filepath.Join(dir, vm), hex.EncodeToString(sum[:]), int64(len(data))); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, completeMarker), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(sum[:])
}

// TestImageTransferResumes: an image streamed from one agent to another
// through real mTLS connections arrives whole after a transfer that broke
// half-way, resumed at the receiver's offset; a transfer whose bytes do not
// match the announced checksum is discarded.
func TestImageTransferResumes(t *testing.T) {
	ctx := testCtx(t)
	dir := testCerts(t, "h1", "h2")
	coord := load(t, dir, certs.CoordinatorName)
	src, dst := newAgent(t, "h1", fakeHV{}, nil), newAgent(t, "h2", fakeHV{}, nil)
	cs := client(t, serve(t, src, dir, "h1"), "h1", coord)
	cd := client(t, serve(t, dst, dir, "h2"), "h2", coord)

	data := make([]byte, 3*ChunkSize+12345)
	for i := range data {
		data[i] = byte(i*7 + i>>9)
	}
	sum := committedImage(t, src, "s1", "a", data)
	ref := &clusterpb.ImageRef{Snapshot: "s1", Vm: "a"}

	// copyFrom streams src's image from off into dst, stopping after at
	// most limit bytes (a transfer that breaks).
	copyFrom := func(off, limit int64) *clusterpb.ImageStatusReply {
		t.Helper()
		get, err := cs.GetImage(ctx, &clusterpb.GetImageRequest{Image: ref, Offset: off})
		if err != nil {
			t.Fatal(err)
		}
		put, err := cd.PutImage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		sent := int64(0)
		for sent < limit {
			c, err := get.Recv()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if sent+int64(len(c.Data)) > limit {
				c.Data = c.Data[:limit-sent]
			}
			sent += int64(len(c.Data))
			if err := put.Send(c); err != nil {
				t.Fatal(err)
			}
		}
		rep, err := put.CloseAndRecv()
		if err != nil {
			t.Fatal(err)
		}
		return rep
	}
	half := int64(len(data) / 2)
	if rep := copyFrom(0, half); rep.Complete || rep.Have != half {
		t.Fatalf("broken transfer: %v; want have %d, incomplete", rep, half)
	}
	st, err := cd.ImageStatus(ctx, ref)
	if err != nil || st.Have != half || st.Complete || st.Sha256 != sum {
		t.Fatalf("status after the break: %v, %v; want have %d of sha %s", st, err, half, sum)
	}
	if rep := copyFrom(st.Have, int64(len(data))); !rep.Complete || rep.Sha256 != sum || rep.Size != int64(len(data)) {
		t.Fatalf("resumed transfer: %v; want complete, sha %s", rep, sum)
	}
	got, err := os.ReadFile(filepath.Join(imagesDir(dst.cfg.State), "s1", "a.img"))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("received image: %d bytes, err %v; want the %d bytes sent", len(got), err, len(data))
	}

	// A resume at the wrong offset, and bytes that do not match.
	ref2 := &clusterpb.ImageRef{Snapshot: "s1", Vm: "b"}
	put, _ := cd.PutImage(ctx)
	put.Send(&clusterpb.ImageChunk{Image: ref2, Offset: 5, Size: 10, Sha256: sum, Data: []byte("12345")})
	if _, err := put.CloseAndRecv(); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("offset 5 of a new transfer: err = %v, want FailedPrecondition", err)
	}
	put, _ = cd.PutImage(ctx)
	put.Send(&clusterpb.ImageChunk{Image: ref2, Offset: 0, Size: 10, Sha256: sum, Data: []byte("0123456789")})
	if _, err := put.CloseAndRecv(); status.Code(err) != codes.DataLoss {
		t.Errorf("bytes that do not match the checksum: err = %v, want DataLoss", err)
	}
	if st, err := cd.ImageStatus(ctx, ref2); err != nil || st.Have != 0 || st.Complete {
		t.Errorf("status of the discarded image: %v, %v; want nothing held", st, err)
	}
}
