package realbackend

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/vnsnap/vnsnap/qemubackend"
	"github.com/vnsnap/vnsnap/qemubackend/guestimg"
	"github.com/vnsnap/vnsnap/vne"
)

// FuzzDecodeLayout feeds arbitrary bytes to the decoder of a snapshot's
// layout.json: it must never panic; a layout it accepts passes Check,
// survives a JSON round trip unchanged, and trustLayout either refuses it
// or returns a layout that passes Check, with kernels and disks only from
// the allowed places.
func FuzzDecodeLayout(f *testing.F) {
	dir := f.TempDir()
	good, _ := json.Marshal(goodLayout(dir))
	f.Add(good)
	v, err := vne.Load("../examples/lab.yaml")
	if err != nil {
		f.Fatal(err)
	}
	lab, err := LayoutOf(v, Options{Hypervisor: qemubackend.NewHypervisor(&qemubackend.Host{Machine: testMachine}), Image: guestimg.Image{Kernel: "/k", Initrd: "/i"}})
	if err != nil {
		f.Fatal(err)
	}
	b, _ := json.Marshal(lab)
	f.Add(b)
	f.Add([]byte(`{"name":"x","hosts":[{"name":"../h","address":"1.2.3.4"}],"vms":[{"name":"a","host":0,"memory_mib":-1,"vcpus":1,"mac":"52:54:00:00:00:01,romfile=/etc/shadow","kernel":"/etc/passwd","append":"init=/bin/sh"}]}`))
	f.Add([]byte(`{"name":"x","hosts":[],"vms":[]} {}`))
	kernel := filepath.Join(dir, "vmlinuz")
	if err := os.WriteFile(kernel, []byte("x"), 0o644); err != nil {
		f.Fatal(err)
	}
	o := Options{Hypervisor: qemubackend.NewHypervisor(&qemubackend.Host{Machine: testMachine}), Image: guestimg.Image{Kernel: kernel, Initrd: kernel}, Dir: dir}
	f.Fuzz(func(t *testing.T, data []byte) {
		l, err := DecodeLayout(data)
		if err != nil {
			return
		}
		if err := l.Check(); err != nil {
			t.Fatalf("DecodeLayout accepted a layout Check refuses: %v", err)
		}
		b, err := json.Marshal(l)
		if err != nil {
			t.Fatal(err)
		}
		l2, err := DecodeLayout(b)
		if err != nil {
			t.Fatalf("re-encoded layout refused: %v", err)
		}
		if diff := cmp.Diff(l, l2); diff != "" {
			t.Fatalf("round trip (-first +second):\n%s", diff)
		}
		tl, err := trustLayout(l, o)
		if err != nil {
			return
		}
		if err := tl.Check(); err != nil {
			t.Fatalf("trusted layout fails Check: %v", err)
		}
		for _, vm := range tl.VMs {
			if vm.Kernel != "" && vm.Kernel != kernel {
				t.Fatalf("VM %s runs kernel %q, not this machine's image (no VNE file given)", vm.Name, vm.Kernel)
			}
			if vm.Disk != "" && filepath.Dir(vm.Disk) != dir {
				t.Fatalf("VM %s runs disk %q outside the state directory", vm.Name, vm.Disk)
			}
		}
	})
}
