package realbackend

import (
	"bytes"
	"strings"
	"testing"

	"github.com/vnsnap/vnsnap/qemubackend"
	"github.com/vnsnap/vnsnap/qemubackend/guestimg"
)

func TestLayoutOf(t *testing.T) {
	v := loadVNE(t, t.TempDir(), 128, 1000)
	o := Options{Hypervisor: qemubackend.NewHypervisor(&qemubackend.Host{Machine: "pc-i440fx-10.0"}), Image: guestimg.Image{Kernel: "/k", Initrd: "/i"}}
	l, err := LayoutOf(v, o)
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Hosts) != 2 || len(l.VMs) != 3 {
		t.Fatalf("got %d hosts %d VMs, want 2 3", len(l.Hosts), len(l.VMs))
	}
	c := l.VMs[2]
	if c.Host != 1 || c.MemoryMiB != 128 || c.Machine != "pc-i440fx-10.0" || c.Kernel != "/k" || !c.Heartbeat {
		t.Errorf("vm c: %+v", c)
	}
	for _, want := range []string{"vnsnap.ip=10.0.0.3/24", "tcpstream:-bytes=1000:-progress=250ms:-peers=10.0.0.1,10.0.0.2,10.0.0.3:-self=10.0.0.3", "heartbeat:-interval=20ms"} {
		if !strings.Contains(c.Append, want) {
			t.Errorf("vm c kernel args %q lack %q", c.Append, want)
		}
	}
	v.VMs[0].Memory = 100<<20 + 4096
	if _, err := LayoutOf(v, o); err == nil || !strings.Contains(err.Error(), "vms[0] (a).memory") {
		t.Errorf("memory not in MiB: got %v, want an error naming vms[0] (a).memory", err)
	}
	v.VMs[0].Memory = 128 << 20
	if _, err := LayoutOf(v, Options{Hypervisor: o.Hypervisor}); err == nil || !strings.Contains(err.Error(), "guest.builtin") {
		t.Errorf("no image: got %v, want an error naming guest.builtin", err)
	}
}

func TestTunnelAddr(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1": "127.0.0.1:0", "127.0.0.1:7002": "127.0.0.1:7002", "::1": "[::1]:0", "host:1": "host:1",
	} {
		if got := tunnelAddr(in); got != want {
			t.Errorf("tunnelAddr(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestRAMBuffer(t *testing.T) {
	var b ramBuffer
	var want bytes.Buffer
	for i := 0; i < 50; i++ {
		p := bytes.Repeat([]byte{byte(i)}, 1+i*77777)
		b.Write(p)
		want.Write(p)
	}
	if b.Len() != int64(want.Len()) {
		t.Fatalf("Len %d, want %d", b.Len(), want.Len())
	}
	var got bytes.Buffer
	if n, err := b.WriteTo(&got); err != nil || n != int64(want.Len()) || !bytes.Equal(got.Bytes(), want.Bytes()) {
		t.Fatalf("WriteTo: n %d err %v, equal %v", n, err, bytes.Equal(got.Bytes(), want.Bytes()))
	}
	b.Reset()
	if b.Len() != 0 {
		t.Errorf("Len after Reset %d, want 0", b.Len())
	}
}
