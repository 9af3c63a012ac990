package remote

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/vnsnap/vnsnap/cluster/clusterpb"
	"github.com/vnsnap/vnsnap/core"
	"github.com/vnsnap/vnsnap/realbackend/hv"
)

// Hypervisor returns the host's hypervisor behind the hv port: its
// machines run on the agent, on the switch ports Setup made (a spec's
// NetSocket is ignored: the agent's switch owns the port). info is Hello's.
func (h *Host) Hypervisor(ctx context.Context) (hv.Hypervisor, error) {
	rep, err := h.c.Hello(ctx, &clusterpb.HelloRequest{})
	if err != nil {
		return nil, fmt.Errorf("agent %s: hello: %w", h.name, err)
	}
	if rep.Host != h.name {
		return nil, fmt.Errorf("agent %s: answers as host %q", h.name, rep.Host)
	}
	return &hypervisor{h: h, info: hv.Info{Name: rep.Hypervisor, Version: rep.HypervisorVersion, ImageFormat: rep.ImageFormat}}, nil
}

type hypervisor struct {
	h    *Host
	info hv.Info
}

// Machine is a VM on an agent behind the hv port.
type Machine struct {
	h    *Host
	vm   int32
	name string
}

var (
	_ hv.Hypervisor = (*hypervisor)(nil)
	_ hv.Machine    = (*Machine)(nil)
)

func (p *hypervisor) Info() hv.Info { return p.info }

// Machine returns the handle of VM vm (name) that already runs on the
// agent: a coordinator that took over from another one.
func (h *Host) Machine(vm core.VMID, name string) *Machine {
	return &Machine{h: h, vm: int32(vm), name: name}
}

func (p *hypervisor) spec(s hv.MachineSpec) (*clusterpb.MachineSpec, error) {
	p.h.mu.Lock()
	id, ok := p.h.vms[s.Name]
	p.h.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("agent %s: vm %s has no port (Setup)", p.h.name, s.Name)
	}
	return &clusterpb.MachineSpec{Vm: id, Name: s.Name, MemoryMib: int32(s.MemoryMiB), Vcpus: int32(s.VCPUs),
		Kernel: s.Kernel, Initrd: s.Initrd, Append: s.Append, Mac: s.MAC}, nil
}

// Start boots the machine on the agent.
func (p *hypervisor) Start(ctx context.Context, s hv.MachineSpec) (hv.Machine, error) {
	spec, err := p.spec(s)
	if err != nil {
		return nil, err
	}
	err = p.h.do(ctx, "start "+s.Name, func(c *clusterpb.Call) error {
		_, err := p.h.c.StartVM(ctx, &clusterpb.StartVMRequest{Call: c, Spec: spec})
		return err
	})
	if err != nil {
		return nil, err
	}
	return &Machine{h: p.h, vm: spec.Vm, name: s.Name}, nil
}

// Restore sends the image read from r to the agent (checksummed) and
// restores the machine there from it; it is paused when Restore returns.
func (p *hypervisor) Restore(ctx context.Context, s hv.MachineSpec, r io.Reader) (hv.Machine, error) {
	spec, err := p.spec(s)
	if err != nil {
		return nil, err
	}
	ref := &clusterpb.ImageRef{Snapshot: fmt.Sprintf("restore-%s-%d", p.h.id, p.h.seq.Add(1)), Vm: s.Name}
	if err := p.h.PutImage(ctx, ref, r); err != nil {
		return nil, err
	}
	err = p.h.do(ctx, "restore "+s.Name, func(c *clusterpb.Call) error {
		_, err := p.h.c.RestoreVM(ctx, &clusterpb.RestoreVMRequest{Call: c, Spec: spec, Image: ref})
		return err
	})
	if err != nil {
		return nil, err
	}
	return &Machine{h: p.h, vm: spec.Vm, name: s.Name}, nil
}

// PutImage sends the image read from r to the agent as ref: spooled to a
// temporary file first (its size and SHA-256 go ahead of the bytes), then
// streamed, resuming where the agent's copy ends after a broken transfer.
func (h *Host) PutImage(ctx context.Context, ref *clusterpb.ImageRef, r io.Reader) error {
	f, err := os.CreateTemp("", "vnsnap-image-")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	sum := sha256.New()
	size, err := io.Copy(io.MultiWriter(f, sum), r)
	if err != nil {
		return fmt.Errorf("image %s/%s: %w", ref.Snapshot, ref.Vm, err)
	}
	sha := hex.EncodeToString(sum.Sum(nil))
	var last error
	for attempt := 0; attempt <= Retries; attempt++ {
		st, err := h.c.ImageStatus(ctx, ref)
		if err == nil {
			if st.Complete {
				if st.Sha256 != sha {
					return fmt.Errorf("agent %s: image %s/%s held with another checksum", h.name, ref.Snapshot, ref.Vm)
				}
				return nil
			}
			off := st.Have
			if st.Sha256 != sha || st.Size != size {
				off = 0
			}
			err = h.sendImage(ctx, ref, f, off, size, sha)
			if err == nil {
				continue // ImageStatus confirms it is complete
			}
		}
		last = err
		if ctx.Err() != nil {
			break
		}
	}
	return fmt.Errorf("agent %s: put image %s/%s: %w", h.name, ref.Snapshot, ref.Vm, last)
}

func (h *Host) sendImage(ctx context.Context, ref *clusterpb.ImageRef, f *os.File, off, size int64, sha string) error {
	put, err := h.c.PutImage(ctx)
	if err != nil {
		return err
	}
	buf := make([]byte, 256<<10)
	first := true
	for off < size || first {
		n, err := f.ReadAt(buf, off)
		if err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		c := &clusterpb.ImageChunk{Offset: off, Data: buf[:n]}
		if first {
			c.Image, c.Size, c.Sha256 = ref, size, sha
			first = false
		}
		if err := put.Send(c); err != nil {
			break // the reason comes with CloseAndRecv
		}
		off += int64(n)
		if n == 0 {
			break
		}
	}
	_, err = put.CloseAndRecv()
	return err
}

// Pause pauses the machine on the agent.
func (m *Machine) Pause(ctx context.Context) error {
	return m.h.do(ctx, "pause "+m.name, func(c *clusterpb.Call) error {
		_, err := m.h.c.PauseVM(ctx, &clusterpb.VMRequest{Call: c, Vm: m.vm})
		return err
	})
}

// Resume resumes the machine on the agent.
func (m *Machine) Resume(ctx context.Context) error {
	return m.h.do(ctx, "resume "+m.name, func(c *clusterpb.Call) error {
		_, err := m.h.c.ResumeVM(ctx, &clusterpb.VMRequest{Call: c, Vm: m.vm})
		return err
	})
}

// Kill stops the machine on the agent.
func (m *Machine) Kill() {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	m.h.do(ctx, "kill "+m.name, func(c *clusterpb.Call) error {
		_, err := m.h.c.KillVM(ctx, &clusterpb.VMRequest{Call: c, Vm: m.vm})
		return err
	})
}

// Save saves the machine on the agent, into the host's current lease's
// snapshot, and copies the image into w (checking its SHA-256). OnPass and
// AtSnapshotPoint are called as the agent streams the passes and the
// snapshot point; the agent holds the save at its snapshot point until
// AtSnapshotPoint returns. The hook's context ends if the stream breaks
// meanwhile (the agent died or was cut off).
func (m *Machine) Save(ctx context.Context, w io.Writer, o hv.SaveOptions) (hv.SaveStats, error) {
	snap, err := m.h.currentSnapshot()
	if err != nil {
		return hv.SaveStats{}, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	call := m.h.newCall()
	stream, err := m.h.c.SaveVM(ctx, &clusterpb.SaveVMRequest{Call: call, Vm: m.vm, Snapshot: snap, Live: o.Live, Hold: o.AtSnapshotPoint != nil})
	if err != nil {
		return hv.SaveStats{}, fmt.Errorf("agent %s: save %s: %w", m.h.name, m.name, err)
	}
	var saved *clusterpb.Saved
	var next <-chan recvResult // the event received while the hook ran
	for saved == nil {
		var ev *clusterpb.SaveEvent
		var err error
		if next != nil {
			r := <-next
			ev, err, next = r.ev, r.err, nil
		} else {
			ev, err = stream.Recv()
		}
		if err != nil {
			return hv.SaveStats{}, fmt.Errorf("agent %s: save %s: %w", m.h.name, m.name, err)
		}
		switch e := ev.Event.(type) {
		case *clusterpb.SaveEvent_Pass:
			if o.OnPass != nil {
				o.OnPass(int(e.Pass.N), time.Unix(0, e.Pass.AtUnixNano))
			}
		case *clusterpb.SaveEvent_SnapshotPoint:
			if o.AtSnapshotPoint == nil {
				continue
			}
			// While the hook runs, the stream is watched: if it breaks (the
			// agent died), the hook's context ends.
			hookCtx, hookCancel := context.WithCancel(ctx)
			ch := make(chan recvResult, 1)
			go func() {
				ev, err := stream.Recv()
				if err != nil {
					hookCancel()
				}
				ch <- recvResult{ev, err}
			}()
			err := o.AtSnapshotPoint(hookCtx)
			hookCancel()
			next = ch
			if err != nil {
				m.cancelSave()
				return hv.SaveStats{}, err
			}
			if err := m.h.do(ctx, "release save of "+m.name, func(c *clusterpb.Call) error {
				_, err := m.h.c.ReleaseSave(ctx, &clusterpb.VMRequest{Call: c, Vm: m.vm})
				return err
			}); err != nil {
				m.cancelSave()
				return hv.SaveStats{}, err
			}
		case *clusterpb.SaveEvent_Saved:
			saved = e.Saved
		}
	}
	if err := m.h.GetImage(ctx, &clusterpb.ImageRef{Snapshot: snap, Vm: m.name}, w, saved.Sha256, true); err != nil {
		return hv.SaveStats{}, err
	}
	return hv.SaveStats{Bytes: saved.Bytes, Passes: int(saved.Passes), MemoryCopied: saved.MemoryCopied,
		Downtime: time.Duration(saved.DowntimeNanos), Total: time.Duration(saved.TotalNanos)}, nil
}

type recvResult struct {
	ev  *clusterpb.SaveEvent
	err error
}

// cancelSave cancels the machine's save on the agent, on a context of its
// own (the save's may be what ended).
func (m *Machine) cancelSave() {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	m.h.do(ctx, "cancel save of "+m.name, func(c *clusterpb.Call) error {
		_, err := m.h.c.CancelSave(ctx, &clusterpb.VMRequest{Call: c, Vm: m.vm})
		return err
	})
}

// GetImage copies image ref from the agent into w and checks that its
// SHA-256 is sha. With uncommitted set, the image may be in the lease's
// snapshot directory before EndSnapshot commits it.
func (h *Host) GetImage(ctx context.Context, ref *clusterpb.ImageRef, w io.Writer, sha string, uncommitted bool) error {
	stream, err := h.c.GetImage(ctx, &clusterpb.GetImageRequest{Image: ref, Offset: 0, Uncommitted: uncommitted})
	if err != nil {
		return fmt.Errorf("agent %s: get image %s/%s: %w", h.name, ref.Snapshot, ref.Vm, err)
	}
	sum := sha256.New()
	var off, size int64
	for {
		c, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("agent %s: get image %s/%s at %d: %w", h.name, ref.Snapshot, ref.Vm, off, err)
		}
		if c.Offset != off {
			return fmt.Errorf("agent %s: image %s/%s: chunk at %d, want %d", h.name, ref.Snapshot, ref.Vm, c.Offset, off)
		}
		// The agent is untrusted too: the image is the size its first
		// chunk announced, and nothing past it reaches w.
		if off == 0 {
			size = c.Size
		}
		if c.Size != size || size < 0 || off+int64(len(c.Data)) > size {
			return fmt.Errorf("agent %s: image %s/%s: chunk of %d bytes at %d of an image of %d (announced %d)", h.name, ref.Snapshot, ref.Vm, len(c.Data), off, c.Size, size)
		}
		if _, err := w.Write(c.Data); err != nil {
			return err
		}
		sum.Write(c.Data)
		off += int64(len(c.Data))
	}
	if off != size {
		return fmt.Errorf("agent %s: image %s/%s: %d bytes of %d", h.name, ref.Snapshot, ref.Vm, off, size)
	}
	if got := hex.EncodeToString(sum.Sum(nil)); got != sha {
		return fmt.Errorf("agent %s: image %s/%s: sha256 %s, want %s", h.name, ref.Snapshot, ref.Vm, got, sha)
	}
	return nil
}
