package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/vnsnap/vnsnap/cluster/clusterpb"
	"github.com/vnsnap/vnsnap/internal/regfile"
)

// ChunkSize is the size of the chunks GetImage sends.
const ChunkSize = 256 << 10

// imageSum is an image's recorded checksum and size.
type imageSum struct {
	sha  string
	size int64
}

// readSum reads stem.img.sha256 ("HEX SIZE\n"), untrusted like any file.
func readSum(path string) (imageSum, error) {
	b, err := regfile.ReadFile(path, 128)
	if err != nil {
		return imageSum{}, err
	}
	f := strings.Fields(string(b))
	if len(f) != 2 || checkSHA256(f[0]) != nil {
		return imageSum{}, fmt.Errorf("%s: not a checksum file", path)
	}
	n, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil || n < 0 || n > MaxImageBytes {
		return imageSum{}, fmt.Errorf("%s: bad size %q", path, f[1])
	}
	return imageSum{sha: f[0], size: n}, nil
}

// completeImage finds a whole image: in a committed snapshot directory
// taken here, or received whole from another agent. It returns its path and
// recorded checksum; the file's size must match it.
func (a *Agent) completeImage(ref *clusterpb.ImageRef) (string, imageSum, error) {
	return a.wholeImage(ref, false)
}

// wholeImage is completeImage, and with uncommitted also finds a whole
// image in the directory of the snapshot whose lease is held.
func (a *Agent) wholeImage(ref *clusterpb.ImageRef, uncommitted bool) (string, imageSum, error) {
	snapDir := a.snapshotDir(ref.Snapshot)
	for _, stem := range []string{filepath.Join(snapDir, ref.Vm), filepath.Join(imagesDir(a.cfg.State), ref.Snapshot, ref.Vm)} {
		if stem == filepath.Join(snapDir, ref.Vm) {
			a.mu.Lock()
			leased := a.lease != nil && a.lease.snapshot == ref.Snapshot
			a.mu.Unlock()
			if _, err := os.Lstat(filepath.Join(snapDir, completeMarker)); err != nil && !(uncommitted && leased) {
				continue
			}
		}
		sum, err := readSum(stem + sumExt)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return "", imageSum{}, status.Errorf(codes.DataLoss, "image %s/%s: %v", ref.Snapshot, ref.Vm, err)
		}
		fi, err := os.Lstat(stem + imgExt)
		if err != nil || !fi.Mode().IsRegular() || fi.Size() != sum.size {
			return "", imageSum{}, status.Errorf(codes.DataLoss, "image %s/%s: not a regular file of %d bytes", ref.Snapshot, ref.Vm, sum.size)
		}
		return stem + imgExt, sum, nil
	}
	return "", imageSum{}, status.Errorf(codes.NotFound, "image %s/%s: not on host %s", ref.Snapshot, ref.Vm, a.cfg.Host)
}

// incoming returns the stem of a received image.
func (a *Agent) incoming(ref *clusterpb.ImageRef) string {
	return filepath.Join(imagesDir(a.cfg.State), ref.Snapshot, ref.Vm)
}

// ImageStatus tells how much of an image the agent holds.
func (a *Agent) ImageStatus(_ context.Context, ref *clusterpb.ImageRef) (*clusterpb.ImageStatusReply, error) {
	if err := checkImageRef("image", ref); err != nil {
		return nil, err
	}
	if _, sum, err := a.completeImage(ref); err == nil {
		return &clusterpb.ImageStatusReply{Have: sum.size, Complete: true, Size: sum.size, Sha256: sum.sha}, nil
	} else if status.Code(err) != codes.NotFound {
		return nil, err
	}
	stem := a.incoming(ref)
	rep := &clusterpb.ImageStatusReply{}
	if fi, err := os.Lstat(stem + partExt); err == nil && fi.Mode().IsRegular() {
		rep.Have = fi.Size()
	}
	if want, err := readSum(stem + wantExt); err == nil {
		rep.Size, rep.Sha256 = want.size, want.sha
	}
	return rep, nil
}

// GetImage streams a whole image from an offset, every chunk with the
// image's size and checksum.
func (a *Agent) GetImage(r *clusterpb.GetImageRequest, stream clusterpb.Agent_GetImageServer) error {
	if err := checkImageRef("image", r.Image); err != nil {
		return err
	}
	path, sum, err := a.wholeImage(r.Image, r.Uncommitted)
	if err != nil {
		return err
	}
	if r.Offset < 0 || r.Offset > sum.size {
		return invalidf("offset", "%d outside [0, %d]", r.Offset, sum.size)
	}
	f, err := os.Open(path)
	if err != nil {
		return hvError("image", err)
	}
	defer f.Close()
	buf := make([]byte, ChunkSize)
	off := r.Offset
	for {
		n, err := f.ReadAt(buf, off)
		if n > 0 {
			if serr := stream.Send(&clusterpb.ImageChunk{Image: r.Image, Offset: off, Data: buf[:n], Size: sum.size, Sha256: sum.sha}); serr != nil {
				return serr
			}
			off += int64(n)
		}
		if err == io.EOF || off >= sum.size {
			return nil
		}
		if err != nil {
			return hvError("image", err)
		}
	}
}

// wantExt records, beside a partial received image, the size and checksum
// its sender announced.
const wantExt = ".img.want"

// PutImage receives an image from an offset. The first chunk names the
// image, its size and checksum; a transfer that breaks keeps what arrived,
// and the next one resumes at ImageStatus's Have. The image becomes
// NAME.img only when it is whole and its checksum matches.
func (a *Agent) PutImage(stream clusterpb.Agent_PutImageServer) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	if err := checkChunk(first, true); err != nil {
		return err
	}
	ref := first.Image
	if _, sum, err := a.completeImage(ref); err == nil {
		if sum.sha != first.Sha256 {
			return status.Errorf(codes.AlreadyExists, "image %s/%s: held with another checksum", ref.Snapshot, ref.Vm)
		}
		return stream.SendAndClose(&clusterpb.ImageStatusReply{Have: sum.size, Complete: true, Size: sum.size, Sha256: sum.sha})
	}
	stem := a.incoming(ref)
	a.mu.Lock()
	busy := a.xfers[stem]
	a.xfers[stem] = true
	a.mu.Unlock()
	if busy {
		return status.Errorf(codes.Aborted, "image %s/%s: another transfer is under way", ref.Snapshot, ref.Vm)
	}
	defer func() {
		a.mu.Lock()
		delete(a.xfers, stem)
		a.mu.Unlock()
	}()
	if err := a.mkdir(filepath.Dir(stem)); err != nil {
		return hvError("image", err)
	}
	want := imageSum{sha: first.Sha256, size: first.Size}
	if old, err := readSum(stem + wantExt); err != nil || old != want {
		// A new image (or another one under this name): start afresh.
		if first.Offset != 0 {
			return status.Errorf(codes.FailedPrecondition, "image %s/%s: offset %d, but no transfer of this image to resume (have 0)", ref.Snapshot, ref.Vm, first.Offset)
		}
		os.Remove(stem + partExt)
		if err := a.writeAtomic(stem+wantExt, func(w io.Writer) error {
			_, err := fmt.Fprintf(w, "%s %d\n", want.sha, want.size)
			return err
		}); err != nil {
			return hvError("image", err)
		}
	}
	f, err := os.OpenFile(stem+partExt, os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return hvError("image", err)
	}
	defer f.Close()
	have, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return hvError("image", err)
	}
	if first.Offset != have {
		return status.Errorf(codes.FailedPrecondition, "image %s/%s: offset %d, have %d", ref.Snapshot, ref.Vm, first.Offset, have)
	}
	for c := first; ; {
		if c.Offset != have {
			return status.Errorf(codes.InvalidArgument, "offset: %d, want %d", c.Offset, have)
		}
		if have+int64(len(c.Data)) > want.size {
			return status.Errorf(codes.InvalidArgument, "data: chunk at %d of %d bytes runs past the size %d", c.Offset, len(c.Data), want.size)
		}
		if _, err := f.Write(c.Data); err != nil {
			return hvError("image", err)
		}
		have += int64(len(c.Data))
		c, err = stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err // what arrived stays for the next transfer
		}
		if err := checkChunk(c, false); err != nil {
			return err
		}
	}
	if err := f.Sync(); err != nil {
		return hvError("image", err)
	}
	if have < want.size {
		return stream.SendAndClose(&clusterpb.ImageStatusReply{Have: have, Size: want.size, Sha256: want.sha})
	}
	got, err := fileSHA256(stem + partExt)
	if err != nil {
		return hvError("image", err)
	}
	if got != want.sha {
		os.Remove(stem + partExt)
		os.Remove(stem + wantExt)
		return status.Errorf(codes.DataLoss, "image %s/%s: checksum %s, the sender announced %s; discarded", ref.Snapshot, ref.Vm, got, want.sha)
	}
	if err := a.finishImage(stem+partExt, stem, got, want.size); err != nil {
		return hvError("image", err)
	}
	os.Remove(stem + wantExt)
	return stream.SendAndClose(&clusterpb.ImageStatusReply{Have: have, Complete: true, Size: want.size, Sha256: got})
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
