package realbackend

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vnsnap/vnsnap/qemubackend"
	"github.com/vnsnap/vnsnap/qemubackend/guestimg"
	"github.com/vnsnap/vnsnap/store"
	"github.com/vnsnap/vnsnap/vne"
	"github.com/vnsnap/vnsnap/vnet"
)

const testMachine = "pc-i440fx-10.0"

// goodLayout is a valid two-VM layout as Snapshot stores it: a built-in
// guest and a disk guest whose image lies in dir.
func goodLayout(dir string) *Layout {
	return &Layout{
		Name:  "lab",
		Hosts: []HostLayout{{Name: "h1", Address: "127.0.0.1"}, {Name: "h2", Address: "127.0.0.1"}},
		VMs: []VMLayout{
			{
				Name: "a", Host: 0, MemoryMiB: 128, VCPUs: 1, Machine: testMachine, MAC: "52:54:00:00:00:01",
				Kernel: "/old/kernel", Initrd: "/old/initrd.gz", Heartbeat: true,
				Append: guestimg.KernelArgs("10.0.0.1/24", "52:54:00:00:00:01",
					guestimg.Program{Name: "heartbeat", Args: []string{"-interval=20ms"}},
					guestimg.Program{Name: "tcpstream", Args: []string{"-bytes=1000", "-peers=10.0.0.1,10.0.0.2"}}),
			},
			{
				Name: "b", Host: 1, MemoryMiB: 64, VCPUs: 2, Machine: testMachine, MAC: "52:54:00:00:00:02",
				Disk: filepath.Join(dir, "b.e3.qcow2"),
			},
		},
	}
}

func TestLayoutCheck(t *testing.T) {
	dir := t.TempDir()
	if err := goodLayout(dir).Check(); err != nil {
		t.Fatalf("Check of a good layout: %v", err)
	}
	for _, tc := range []struct {
		name, want string
		edit       func(*Layout)
	}{
		{"MAC with a device option", `vms[0] (a).mac: "52:54:00:00:00:01,romfile=/etc/shadow" is not a MAC address`,
			func(l *Layout) { l.VMs[0].MAC = "52:54:00:00:00:01,romfile=/etc/shadow" }},
		{"multicast MAC", `vms[0] (a).mac: 01:00:5e:00:00:01 is a multicast address`,
			func(l *Layout) { l.VMs[0].MAC = "01:00:5e:00:00:01" }},
		{"duplicate MAC", `vms[1] (b).mac: duplicate MAC 52:54:00:00:00:01`,
			func(l *Layout) { l.VMs[1].MAC = "52:54:00:00:00:01" }},
		{"VM name with ../", `vms[0].name: "../../x" is not a valid VM name`,
			func(l *Layout) { l.VMs[0].Name = "../../x" }},
		{"host name with ../", `hosts[0].name: "../h" is not a valid host name`,
			func(l *Layout) { l.Hosts[0].Name = "../h" }},
		{"duplicate VM name", `vms[1] (a).name: duplicate VM name "a"`,
			func(l *Layout) { l.VMs[1].Name = "a" }},
		{"VNE name", `name: "Lab/.." is not a valid VNE name`, func(l *Layout) { l.Name = "Lab/.." }},
		{"host index", `vms[1] (b).host: host index 7 out of range (2 hosts)`, func(l *Layout) { l.VMs[1].Host = 7 }},
		{"negative host index", `vms[1] (b).host: host index -1 out of range`, func(l *Layout) { l.VMs[1].Host = -1 }},
		{"negative memory", `vms[0] (a).memory_mib: -128 MiB is out of range`, func(l *Layout) { l.VMs[0].MemoryMiB = -128 }},
		{"huge memory", `vms[0] (a).memory_mib: 9223372036854775807 MiB is out of range`, func(l *Layout) { l.VMs[0].MemoryMiB = 1<<63 - 1 }},
		{"small memory", `vms[0] (a).memory_mib: 8388608 bytes is less than the minimum 16MiB`, func(l *Layout) { l.VMs[0].MemoryMiB = 8 }},
		{"vcpus", `vms[0] (a).vcpus: 0 is out of range (want 1..64)`, func(l *Layout) { l.VMs[0].VCPUs = 0 }},
		{"machine with an option", `vms[0] (a).machine: "pc,accel=kvm" is not a machine type`, func(l *Layout) { l.VMs[0].Machine = "pc,accel=kvm" }},
		{"relative kernel", `vms[0] (a).kernel: "k" is not an absolute path`, func(l *Layout) { l.VMs[0].Kernel = "k" }},
		{"kernel with ..", `vms[0] (a).kernel: "/a/../etc/passwd" is not a clean path`, func(l *Layout) { l.VMs[0].Kernel = "/a/../etc/passwd" }},
		{"append with a newline", `vms[0] (a).append: holds the byte '\n'`, func(l *Layout) { l.VMs[0].Append += "\ninit=/bin/sh" }},
		{"bad address", `hosts[1].address: "127.0.0.1:99999" has a bad port`, func(l *Layout) { l.Hosts[1].Address = "127.0.0.1:99999" }},
		{"negative budget", `hosts[0].ram_budget: must not be negative`, func(l *Layout) { l.Hosts[0].RAMBudget = -1 }},
		{"nothing to boot", `vms[1] (b): neither kernel nor disk`, func(l *Layout) { l.VMs[1].Disk = "" }},
		{"no VMs", `vms: at least one VM is required`, func(l *Layout) { l.VMs = nil }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := goodLayout(dir)
			tc.edit(l)
			err := l.Check()
			if err == nil || !strings.Contains(err.Error(), "layout: "+tc.want) {
				t.Errorf("got %v, want an error containing %q", err, "layout: "+tc.want)
			}
		})
	}
}

func TestDecodeLayout(t *testing.T) {
	l := goodLayout("/run")
	b, _ := json.Marshal(l)
	got, err := DecodeLayout(b)
	if err != nil || got.VMs[1].Disk != "/run/b.e3.qcow2" {
		t.Fatalf("DecodeLayout of a good layout: %+v, %v", got, err)
	}
	for name, in := range map[string]string{
		"unknown field": `{"name":"lab","hosts":[],"vms":[],"romfile":"/etc/shadow"}`,
		"trailing data": string(b) + `{}`,
		"not an object": `[1]`,
		"bad MAC":       strings.Replace(string(b), "52:54:00:00:00:01", "52:54:00:00:00:01,romfile=/etc/shadow", 1),
		"too large":     `{"name":"` + strings.Repeat("a", MaxLayoutSize) + `"}`,
	} {
		if _, err := DecodeLayout([]byte(in)); err == nil || !strings.Contains(err.Error(), "layout") {
			t.Errorf("%s: got %v, want an error naming the layout", name, err)
		}
	}
}

// trustEnv is a state directory, a built-in image and a user kernel for the
// policy tests.
type trustEnv struct {
	dir, kernel, initrd, userKernel string
	o                               Options
}

func newTrustEnv(t *testing.T) trustEnv {
	t.Helper()
	root := t.TempDir()
	te := trustEnv{dir: filepath.Join(root, "run")}
	if err := os.Mkdir(te.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	te.kernel, te.initrd, te.userKernel = filepath.Join(root, "img", "vmlinuz"), filepath.Join(root, "img", "initrd.gz"), filepath.Join(root, "user", "vmlinuz")
	for _, f := range []string{te.kernel, te.initrd, te.userKernel, filepath.Join(te.dir, "b.e3.qcow2")} {
		if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	te.o = Options{
		Hypervisor: qemubackend.NewHypervisor(&qemubackend.Host{Binary: "/nonexistent/qemu", Machine: testMachine}),
		Image:      guestimg.Image{Kernel: te.kernel, Initrd: te.initrd}, Dir: te.dir,
	}
	return te
}

// userVNE is the VNE file describing VM "a" with the user's own kernel.
func (te trustEnv) userVNE(t *testing.T, cmdline string) *vne.VNE {
	t.Helper()
	src := "name: lab\nhosts: [{name: h1}, {name: h2}]\nvms:\n" +
		"  - {name: a, host: h1, memory: 128MiB, guest: {kernel: " + te.userKernel + ", cmdline: \"" + cmdline + "\"}}\n"
	p := filepath.Join(filepath.Dir(te.dir), "lab.yaml")
	if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	v, err := vne.Load(p)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestTrustLayout checks Restore's policy: a built-in guest runs this
// machine's image whatever the snapshot says, with a command line of the
// image's form only; a user kernel comes from the VNE file; disks only from
// the state directory; the machine type is this QEMU's.
func TestTrustLayout(t *testing.T) {
	te := newTrustEnv(t)
	got, err := trustLayout(goodLayout(te.dir), te.o)
	if err != nil {
		t.Fatalf("trustLayout of a good layout: %v", err)
	}
	if a := got.VMs[0]; a.Kernel != te.kernel || a.Initrd != te.initrd {
		t.Errorf("built-in guest runs %s %s, want this machine's image %s %s", a.Kernel, a.Initrd, te.kernel, te.initrd)
	}
	if got.VMs[1].Disk != filepath.Join(te.dir, "b.e3.qcow2") {
		t.Errorf("disk %s, want the frozen image in the state directory", got.VMs[1].Disk)
	}
	// /etc/passwd as a built-in guest's kernel is simply not used.
	l := goodLayout(te.dir)
	l.VMs[0].Kernel = "/etc/passwd"
	if got, err := trustLayout(l, te.o); err != nil || got.VMs[0].Kernel != te.kernel {
		t.Errorf("built-in guest with kernel /etc/passwd: got %+v, %v; want this machine's image", got, err)
	}
	if err := os.Symlink("/etc/shadow", filepath.Join(te.dir, "b.e4.qcow2")); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, want string
		edit       func(*Layout, *Options)
	}{
		{"init= appended", `vms[0] (a).append: kernel command line`, func(l *Layout, o *Options) { l.VMs[0].Append += " init=/bin/sh" }},
		{"init= first", `vms[0] (a).append: kernel command line`, func(l *Layout, o *Options) { l.VMs[0].Append = "init=/bin/sh " + l.VMs[0].Append }},
		{"another VM's MAC", `vms[0] (a).append: vnsnap.mac="52:54:00:00:00:09" is not the VM's MAC`, func(l *Layout, o *Options) {
			l.VMs[0].Append = strings.Replace(l.VMs[0].Append, "vnsnap.mac=52:54:00:00:00:01", "vnsnap.mac=52:54:00:00:00:09", 1)
		}},
		{"unknown program", `vms[0] (a).append: vnsnap.run: unknown program "sh"`, func(l *Layout, o *Options) {
			l.VMs[0].Append = guestimg.KernelArgs("", "", guestimg.Program{Name: "sh", Args: []string{"-c"}})
		}},
		{"no built-in image", `vms[0] (a): a built-in guest needs the built-in guest image`, func(l *Layout, o *Options) { o.Image = guestimg.Image{} }},
		{"user kernel without the VNE file", `vms[0] (a): restoring a guest with its own kernel needs the VNE file`, func(l *Layout, o *Options) {
			l.VMs[0].Heartbeat, l.VMs[0].Kernel, l.VMs[0].Append = false, "/etc/passwd", "console=ttyS0"
		}},
		{"disk outside the state directory", `vms[1] (b).disk: /etc/shadow is not in the state directory`, func(l *Layout, o *Options) { l.VMs[1].Disk = "/etc/shadow" }},
		{"another VM's disk", `vms[1] (b).disk: ` + te.dir + `/a.e3.qcow2 is not an image of VM b`, func(l *Layout, o *Options) { l.VMs[1].Disk = filepath.Join(te.dir, "a.e3.qcow2") }},
		{"disk that is a symlink", `vms[1] (b).disk: ` + te.dir + `/b.e4.qcow2 is not a regular file`, func(l *Layout, o *Options) { l.VMs[1].Disk = filepath.Join(te.dir, "b.e4.qcow2") }},
		{"disk in another hypervisor's format", `vms[1] (b).disk: ` + te.dir + `/b.e3.raw is not an image of VM b (want b.boot.qcow2`, func(l *Layout, o *Options) { l.VMs[1].Disk = filepath.Join(te.dir, "b.e3.raw") }},
		{"missing disk", `vms[1] (b).disk: lstat`, func(l *Layout, o *Options) { l.VMs[1].Disk = filepath.Join(te.dir, "b.e5.qcow2") }},
		{"machine type", `vms[1] (b).machine: snapshot needs "pc-i440fx-9.2", this qemu pins "pc-i440fx-10.0"`, func(l *Layout, o *Options) { l.VMs[1].Machine = "pc-i440fx-9.2" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, o := goodLayout(te.dir), te.o
			tc.edit(l, &o)
			got, err := trustLayout(l, o)
			if err == nil || !strings.Contains(err.Error(), "layout: "+tc.want) {
				t.Errorf("got %+v, %v; want an error containing %q", got, err, "layout: "+tc.want)
			}
		})
	}
}

// TestTrustUserKernel: a guest with the user's own kernel takes kernel and
// initramfs from the VNE file the user runs; the snapshot's command line
// must be that file's.
func TestTrustUserKernel(t *testing.T) {
	te := newTrustEnv(t)
	user := func() *Layout {
		l := goodLayout(te.dir)
		l.VMs[0].Heartbeat, l.VMs[0].Kernel, l.VMs[0].Initrd, l.VMs[0].Append = false, "/etc/passwd", "/etc/shadow", "console=ttyS0 quiet"
		return l
	}
	o := te.o
	o.VNE = te.userVNE(t, "console=ttyS0 quiet")
	got, err := trustLayout(user(), o)
	if err != nil {
		t.Fatalf("user kernel described by the VNE file: %v", err)
	}
	if a := got.VMs[0]; a.Kernel != te.userKernel || a.Initrd != "" || a.Append != "console=ttyS0 quiet" {
		t.Errorf("user kernel guest runs %q %q %q, want %q from the VNE file, no initrd", a.Kernel, a.Initrd, a.Append, te.userKernel)
	}
	l := user()
	l.VMs[0].Append = "console=ttyS0 quiet init=/bin/sh"
	if _, err := trustLayout(l, o); err == nil || !strings.Contains(err.Error(), `vms[0] (a).append: "console=ttyS0 quiet init=/bin/sh" is not the command line of VM a`) {
		t.Errorf("changed command line: got %v, want it refused", err)
	}
	l = user()
	l.VMs[0].Name = "b2"
	if _, err := trustLayout(l, o); err == nil || !strings.Contains(err.Error(), "has no kernel guest of that name") {
		t.Errorf("VM not in the VNE file: got %v, want it refused", err)
	}
}

// craftStore commits a snapshot "evil" whose layout.json is l (raw JSON,
// so that it may be anything) into a new store and returns the store root.
func craftStore(t *testing.T, layout []byte) string {
	t.Helper()
	return craftStoreLabels(t, layout, map[string]string{
		"machine": testMachine, LabelHypervisor: "qemu", LabelHypervisorVersion: "10.0.2", LabelImageFormat: qemubackend.ImageFormat,
	})
}

// craftStoreLabels is craftStore with the manifest labels given.
func craftStoreLabels(t *testing.T, layout []byte, labels map[string]string) string {
	t.Helper()
	root := t.TempDir()
	w, err := store.Create(root, "evil", store.Meta{Created: time.Now(), Algorithm: "vnsnap-memory", Epoch: 1,
		Labels: labels})
	if err != nil {
		t.Fatal(err)
	}
	sw, err := w.Extra("layout.json")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sw.Write(layout); err != nil {
		t.Fatal(err)
	}
	if err := sw.Close(); err != nil {
		t.Fatal(err)
	}
	it, err := w.Extra("intransit")
	if err != nil {
		t.Fatal(err)
	}
	if err := vnet.WriteInTransit(it, nil); err != nil {
		t.Fatal(err)
	}
	if err := it.Close(); err != nil {
		t.Fatal(err)
	}
	ms, err := w.Stream("a", "memory")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ms.Write([]byte("not a migration stream")); err != nil {
		t.Fatal(err)
	}
	if err := ms.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	return root
}

// fakeQEMU is a qemu-system-x86_64 that records its arguments in log and
// exits, so a test sees the command line Restore would have run.
func fakeQEMU(t *testing.T) (bin, log string) {
	t.Helper()
	d := t.TempDir()
	bin, log = filepath.Join(d, "qemu"), filepath.Join(d, "args")
	script := "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done >> " + log + "\nexit 1\n"
	if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return bin, log
}

// TestRestoreRefusesCraftedSnapshot restores snapshots whose layout was
// crafted: nothing of it may reach a QEMU command line or place a file
// outside the state directory.
func TestRestoreRefusesCraftedSnapshot(t *testing.T) {
	te := newTrustEnv(t)
	bin, log := fakeQEMU(t)
	te.o.Hypervisor.(*qemubackend.Hypervisor).Host().Binary = bin
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, tc := range []struct {
		name, want string
		edit       func(*Layout)
	}{
		{"MAC with a device option", `mac: "52:54:00:00:00:01,romfile=/etc/shadow" is not a MAC address`, func(l *Layout) { l.VMs[0].MAC = "52:54:00:00:00:01,romfile=/etc/shadow" }},
		{"kernel /etc/passwd", `needs the VNE file`, func(l *Layout) {
			l.VMs[0].Heartbeat, l.VMs[0].Kernel, l.VMs[0].Append = false, "/etc/passwd", "console=ttyS0"
		}},
		{"init= appended", `append: kernel command line`, func(l *Layout) { l.VMs[0].Append += " init=/bin/sh" }},
		{"VM name with ../", `vms[0].name: "../../escaped" is not a valid VM name`, func(l *Layout) { l.VMs[0].Name = "../../escaped" }},
		{"host name with ../", `hosts[0].name: "../escaped-host" is not a valid host name`, func(l *Layout) { l.Hosts[0].Name = "../escaped-host" }},
		{"disk outside", `disk: /etc/shadow is not in the state directory`, func(l *Layout) { l.VMs[1].Disk = "/etc/shadow" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := goodLayout(te.dir)
			tc.edit(l)
			b, err := json.Marshal(l)
			if err != nil {
				t.Fatal(err)
			}
			root := craftStore(t, b)
			before := entries(t, filepath.Dir(te.dir))
			env, _, err := Restore(ctx, root, "evil", te.o)
			if env != nil {
				env.Close()
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Restore: got %v, want an error containing %q", err, tc.want)
			}
			if _, err := os.Stat(log); err == nil {
				b, _ := os.ReadFile(log)
				t.Errorf("QEMU was started with:\n%s", b)
				os.Remove(log)
			}
			if after := entries(t, filepath.Dir(te.dir)); after != before {
				t.Errorf("files outside the state directory changed: %s -> %s", before, after)
			}
			_ = filepath.WalkDir(filepath.Dir(filepath.Dir(te.dir)), func(p string, d os.DirEntry, err error) error {
				if err == nil && strings.Contains(d.Name(), "escaped") {
					t.Errorf("file placed from an unchecked name: %s", p)
				}
				return nil
			})
		})
	}
}

// TestRestoreRunsTrustedLayout restores a good snapshot with a crafted
// kernel path through the fake QEMU: the command line it gets holds this
// machine's image and the snapshot's MAC as one -device value.
func TestRestoreRunsTrustedLayout(t *testing.T) {
	te := newTrustEnv(t)
	bin, log := fakeQEMU(t)
	te.o.Hypervisor.(*qemubackend.Hypervisor).Host().Binary = bin
	l := goodLayout(te.dir)
	l.VMs = l.VMs[:1]
	l.VMs[0].Kernel = "/etc/passwd"
	b, _ := json.Marshal(l)
	root := craftStore(t, b)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	env, _, err := Restore(ctx, root, "evil", te.o)
	if env != nil {
		env.Close()
	}
	if err == nil {
		t.Fatal("Restore with a fake QEMU succeeded")
	}
	args, rerr := os.ReadFile(log)
	if rerr != nil {
		t.Fatalf("fake QEMU never ran (%v); Restore: %v", rerr, err)
	}
	got := string(args)
	for _, want := range []string{"-kernel\n" + te.kernel + "\n", "-initrd\n" + te.initrd + "\n", "virtio-net-pci,netdev=net0,mac=52:54:00:00:00:01\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("QEMU arguments lack %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "/etc/passwd") {
		t.Errorf("QEMU arguments hold the snapshot's kernel /etc/passwd:\n%s", got)
	}
}

// entries lists dir's entries (names, sorted) as one string.
func entries(t *testing.T, dir string) string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return strings.Join(names, ",")
}
