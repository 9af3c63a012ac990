package xentest

import (
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"path"
	"path/filepath"
	"testing"

	"github.com/cavaliergopher/cpio"
	"github.com/google/go-cmp/cmp"
)

func TestModuleOrderPutsDependenciesFirst(t *testing.T) {
	dir := t.TempDir()
	dep := "kernel/drivers/xen/xenfs/xenfs.ko: kernel/drivers/xen/xen-privcmd.ko kernel/lib/base.ko\n" +
		"kernel/drivers/xen/xen-privcmd.ko: kernel/lib/base.ko\n" +
		"kernel/lib/base.ko:\n" +
		"kernel/drivers/xen/xen-evtchn.ko:\n"
	if err := os.WriteFile(filepath.Join(dir, "modules.dep"), []byte(dep), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "modules.builtin"), []byte("kernel/drivers/xen/xenbus/xenbus.ko\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	mods, err := moduleOrder(dir, []string{"xen-evtchn", "xenfs", "xenbus", "xen_privcmd"})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range mods {
		got = append(got, m.name)
	}
	want := []string{"xen_evtchn", "base", "xen_privcmd", "xenfs"}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("module order (-want +got):\n%s", d)
	}
	if _, err := moduleOrder(dir, []string{"nosuch"}); err == nil {
		t.Error("moduleOrder(nosuch): got no error, want one naming the module")
	}
}

// An ELF program brings its interpreter and libraries, found on the host
// when the unpacked packages lack them; parents precede children in the
// archive.
func TestArchiveCarriesELFDependencies(t *testing.T) {
	const prog = "/usr/bin/true"
	if _, err := os.Stat(prog); err != nil {
		t.Skipf("no %s on this host", prog)
	}
	a := newArchive(Env{Dir: t.TempDir()})
	if err := a.addELF("/usr/bin/true", prog); err != nil {
		t.Fatal(err)
	}
	if err := a.addLib("libgcc_s.so.1", nil); err != nil {
		t.Fatal(err)
	}
	a.add(File{Path: "/etc/x", Data: []byte("hello")})
	var buf bytes.Buffer
	if err := a.encode(&buf, []string{"/proc"}); err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(&buf)
	if err != nil {
		t.Fatal(err)
	}
	r := cpio.NewReader(zr)
	seen := map[string]bool{}
	content := map[string]string{}
	for {
		h, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if d := path.Dir(h.Name); d != "." && !seen[d] {
			t.Errorf("archive: %s comes before its directory %s", h.Name, d)
		}
		seen[h.Name] = true
		if h.Name == "etc/x" {
			b, _ := io.ReadAll(r)
			content[h.Name] = string(b)
		}
	}
	for _, want := range []string{"usr/bin/true", "lib64/ld-linux-x86-64.so.2", "lib/x86_64-linux-gnu/libc.so.6", "lib/x86_64-linux-gnu/libgcc_s.so.1", "proc"} {
		if !seen[want] {
			t.Errorf("archive: missing %s", want)
		}
	}
	if content["etc/x"] != "hello" {
		t.Errorf("etc/x: got %q, want %q", content["etc/x"], "hello")
	}
}
