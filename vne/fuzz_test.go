package vne

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// FuzzParse feeds arbitrary bytes to Parse: it must never panic, every
// problem must be an *Error naming the file, and a VNE it accepts must
// validate again and hold only absolute, clean guest paths.
func FuzzParse(f *testing.F) {
	for _, p := range []string{"testdata/example.yaml", "../examples/lab.yaml", "../examples/xen.yaml"} {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(base))
	f.Add([]byte(vm2("    mac: 52:54:00:00:00:01\n    ip: 10.0.0.5/24\n")))
	f.Add([]byte("name: t\nhosts: [{name: h1, ram_budget: NaN}]\nvms: [{name: a, host: h1, memory: 1e400, vcpus: -1, guest: {kernel: ../k, cmdline: \"a\\nb\"}}]\n"))
	f.Add([]byte("name: t\nnetworks: [{name: a, subnet: 10.0.0.0/8}, {name: b, subnet: 10.1.0.0/16}, {name: c, subnet: \"fd00::/64\"}]\nhosts: [{name: h}]\nvms: [{name: v, host: h, network: b, memory: 16MiB, guest: {builtin: tcpstream, args: [\"a b\"]}}]\n"))
	f.Add([]byte("a: &a [*a, *a]\n"))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		v, err := Parse("f.yaml", data, dir)
		if err != nil {
			if v != nil {
				t.Fatalf("Parse returned a VNE and an error %v", err)
			}
			var joined interface{ Unwrap() []error }
			if !errors.As(err, &joined) {
				t.Fatalf("Parse error %T is not a joined list: %v", err, err)
			}
			for _, e := range joined.Unwrap() {
				var ve *Error
				if !errors.As(e, &ve) || ve.File != "f.yaml" {
					t.Fatalf("problem %q is not an *Error naming f.yaml", e)
				}
			}
			return
		}
		if err := v.Validate(); err != nil {
			t.Fatalf("Parse accepted a VNE that Validate rejects: %v", err)
		}
		for _, vm := range v.VMs {
			for _, p := range []string{vm.Guest.Kernel, vm.Guest.Initrd, vm.Guest.Disk} {
				if p != "" && (!filepath.IsAbs(p) || filepath.Clean(p) != p) {
					t.Fatalf("VM %s: guest path %q is not absolute and clean", vm.Name, p)
				}
			}
			if err := CheckName("VM", vm.Name); err != nil {
				t.Fatalf("accepted VM name: %v", err)
			}
		}
	})
}
