package qemubackend

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestEscapeValue(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"/tmp/a/s.sock", "/tmp/a/s.sock"},
		{"/tmp/a,server=on/s.sock", "/tmp/a,,server=on/s.sock"},
		{",", ",,"},
		{",,x,", ",,,,x,,"},
		{"", ""},
		{"späce =ok", "späce =ok"},
	} {
		got, err := EscapeValue(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("EscapeValue(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"a\x00b", "a\nserver=on", "\r", "x\x7f"} {
		if got, err := EscapeValue(bad); !errors.Is(err, ErrBadValue) {
			t.Errorf("EscapeValue(%q) = %q, %v; want ErrBadValue", bad, got, err)
		}
	}
}

func TestOption(t *testing.T) {
	got, err := Option("stream", "id", "net0", "addr.path", "/a,b=c")
	if want := "stream,id=net0,addr.path=/a,,b=c"; err != nil || got != want {
		t.Errorf("Option = %q, %v; want %q", got, err, want)
	}
	if got, err := Option("", "guest", "x,y"); err != nil || got != "guest=x,,y" {
		t.Errorf("Option without first = %q, %v; want guest=x,,y", got, err)
	}
	if _, err := Option("", "path", "a\nb"); !errors.Is(err, ErrBadValue) || !strings.Contains(err.Error(), "path") {
		t.Errorf("Option with a newline: got %v, want ErrBadValue naming path", err)
	}
}

// TestSpecArgs checks the whole argv: with a state directory named
// "a,server=on" every path stays one value (commas doubled), and nothing
// else changes.
func TestSpecArgs(t *testing.T) {
	h := &Host{Binary: "qemu", Machine: "pc-i440fx-10.0"}
	d := "/run/a,server=on"
	s := Spec{
		Name: "a,b", Kernel: d + "/k", Initrd: d + "/i", Append: "console=ttyS0 x=a,b", Disk: d + "/d.qcow2",
		NetSocket: d + "/s.sock", MAC: "52:54:00:00:00:01",
	}.withDefaults(h)
	got, err := s.Args(d+"/q.sock", true)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"-name", "guest=a,,b",
		"-machine", "type=pc-i440fx-10.0",
		"-accel", "tcg", "-m", "128M", "-smp", "1",
		"-nodefaults", "-display", "none", "-no-user-config", "-no-reboot",
		"-chardev", "stdio,id=ser0,signal=off", "-serial", "chardev:ser0",
		"-chardev", "socket,id=qmp0,path=/run/a,,server=on/q.sock,server=on,wait=off",
		"-mon", "chardev=qmp0,mode=control",
		// -kernel, -initrd and -append take their argument verbatim.
		"-kernel", d + "/k", "-initrd", d + "/i", "-append", "console=ttyS0 x=a,b",
		"-blockdev", "driver=qcow2,node-name=disk0,file.driver=file,file.filename=/run/a,,server=on/d.qcow2",
		"-device", "virtio-blk-pci,drive=disk0",
		"-netdev", "stream,id=net0,addr.type=unix,addr.path=/run/a,,server=on/s.sock,server=off,reconnect-ms=100",
		"-device", "virtio-net-pci,netdev=net0,mac=52:54:00:00:00:01",
		"-incoming", "defer", "-S",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Args (-want +got):\n%s", diff)
	}

	s.NetServer, s.NIC, s.Disk, s.Kernel = true, "e1000", "", ""
	got, err = s.Args("/q.sock", false)
	if err != nil {
		t.Fatal(err)
	}
	want = append(want[:23:23],
		"-netdev", "stream,id=net0,addr.type=unix,addr.path=/run/a,,server=on/s.sock,server=on",
		"-device", "e1000,netdev=net0,mac=52:54:00:00:00:01")
	want[20] = "socket,id=qmp0,path=/q.sock,server=on,wait=off"
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("server NIC Args (-want +got):\n%s", diff)
	}
}

// TestSpecArgsRefuses: values that would add options or cannot be passed
// are errors naming the field, never part of a command line.
func TestSpecArgsRefuses(t *testing.T) {
	h := &Host{Binary: "qemu", Machine: "pc-i440fx-10.0"}
	ok := Spec{Name: "a", Kernel: "/k", NetSocket: "/s.sock", MAC: "52:54:00:00:00:01"}
	for _, tc := range []struct {
		name, want string
		edit       func(*Spec)
	}{
		{"MAC with an option", "mac:", func(s *Spec) { s.MAC = "52:54:00:00:00:01,romfile=/etc/shadow" }},
		{"NIC model", "nic:", func(s *Spec) { s.NIC = "virtio-net-pci,romfile=/etc/shadow" }},
		{"newline in socket", "netdev:", func(s *Spec) { s.NetSocket = "/s\n.sock" }},
		{"NUL in disk", "disk:", func(s *Spec) { s.Disk = "/d\x00.qcow2" }},
		{"newline in append", "append", func(s *Spec) { s.Append = "quiet\ninit=/bin/sh" }},
		{"NUL in kernel", "kernel", func(s *Spec) { s.Kernel = "/k\x00" }},
		{"control in name", "name:", func(s *Spec) { s.Name = "a\tb" }},
	} {
		s := ok
		tc.edit(&s)
		got, err := s.withDefaults(h).Args("/q.sock", false)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %q, %v; want an error naming %q", tc.name, got, err, tc.want)
		}
	}
}
