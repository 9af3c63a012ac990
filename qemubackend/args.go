package qemubackend

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// ErrBadValue is returned (wrapped) for a value no QEMU option syntax can
// carry: one holding a control character such as NUL or a newline.
var ErrBadValue = errors.New("value cannot be passed to QEMU")

// EscapeValue returns v written as the value of a key in a QEMU option
// string (-netdev, -blockdev, -chardev, -device, -machine, -name, ...):
// QemuOpts and keyval both end a value at a comma and read ",," as one
// literal comma, so every comma is doubled. A value with a control
// character (NUL, newline, ...) is refused with ErrBadValue: no option
// syntax carries it, and none of our values needs one.
//
// Every option value the backend builds goes through this function, via
// Option, so a path or name holding "a,server=on" stays one value.
func EscapeValue(v string) (string, error) {
	if err := noControl(v); err != nil {
		return "", err
	}
	return strings.ReplaceAll(v, ",", ",,"), nil
}

// noControl refuses a value holding a control character, which no QEMU
// argument syntax carries.
func noControl(v string) error {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < 0x20 || c == 0x7f {
			return fmt.Errorf("%q holds the control character %q: %w", v, c, ErrBadValue)
		}
	}
	return nil
}

// optKey is what a key of an option string may look like; keys are
// constants of this package, never input.
var optKey = regexp.MustCompile(`^[a-z][a-z0-9.-]*$`)

// Option builds a QEMU option string "first,k1=v1,k2=v2" from its implied
// first value (a driver or backend name, escaped too) and key/value pairs,
// escaping every value with EscapeValue. Keys must be lower-case
// identifiers (a programming error panics). An empty first value is left
// out.
func Option(first string, kv ...string) (string, error) {
	if len(kv)%2 != 0 {
		panic(fmt.Sprintf("qemubackend: Option(%q) with an odd number of key/values", first))
	}
	var b strings.Builder
	if first != "" {
		v, err := EscapeValue(first)
		if err != nil {
			return "", err
		}
		b.WriteString(v)
	}
	for i := 0; i < len(kv); i += 2 {
		if !optKey.MatchString(kv[i]) {
			panic(fmt.Sprintf("qemubackend: bad option key %q", kv[i]))
		}
		v, err := EscapeValue(kv[i+1])
		if err != nil {
			return "", fmt.Errorf("%s: %w", kv[i], err)
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(kv[i])
		b.WriteByte('=')
		b.WriteString(v)
	}
	return b.String(), nil
}

// plainArg checks a value QEMU takes verbatim as a whole argument (-kernel,
// -initrd, -append): no escaping applies, but control characters are
// still refused.
func plainArg(flag, v string) error {
	if err := noControl(v); err != nil {
		return fmt.Errorf("%s %w", flag, err)
	}
	return nil
}

// nicModels are the NIC models a Spec may name.
var nicModels = map[string]bool{"virtio-net-pci": true, "e1000": true}

// Args returns the QEMU command line (without the binary) for spec, with QMP
// on the unix socket qmpSock and the serial console on stdout. incoming adds
// `-incoming defer -S`: the VM waits for migrate-incoming and stays paused
// after it. Every option value is escaped (EscapeValue); a value that cannot
// be passed, an unknown NIC model or a malformed MAC is an error naming the
// field.
func (s Spec) Args(qmpSock string, incoming bool) ([]string, error) {
	var errs []error
	opt := func(field, first string, kv ...string) string {
		o, err := Option(first, kv...)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", field, err))
		}
		return o
	}
	if s.MemoryMiB < 1 || s.VCPUs < 1 {
		errs = append(errs, fmt.Errorf("memory %d MiB, %d vCPUs: want both positive", s.MemoryMiB, s.VCPUs))
	}
	machine := []string{"type", s.Machine}
	if s.ram != nil {
		machine = append(machine, "memory-backend", ramBackendID)
	}
	a := []string{
		"-name", opt("name", "", "guest", s.Name),
		"-machine", opt("machine", "", machine...),
		"-accel", "tcg",
		"-m", strconv.Itoa(s.MemoryMiB) + "M",
		"-smp", strconv.Itoa(s.VCPUs),
		"-nodefaults", "-display", "none", "-no-user-config", "-no-reboot",
		"-chardev", "stdio,id=ser0,signal=off",
		"-serial", "chardev:ser0",
		"-chardev", opt("qmp socket", "socket", "id", "qmp0", "path", qmpSock, "server", "on", "wait", "off"),
		"-mon", "chardev=qmp0,mode=control",
	}
	if s.ram != nil {
		o, err := s.ram.object(s.MemoryMiB)
		if err != nil {
			errs = append(errs, err)
		}
		a = append(a, "-object", o)
	}
	if s.Kernel != "" {
		errs = append(errs, plainArg("kernel", s.Kernel))
		a = append(a, "-kernel", s.Kernel)
		if s.Initrd != "" {
			errs = append(errs, plainArg("initrd", s.Initrd))
			a = append(a, "-initrd", s.Initrd)
		}
		if s.Append != "" {
			errs = append(errs, plainArg("append", s.Append))
			a = append(a, "-append", s.Append)
		}
	}
	if s.Disk != "" {
		a = append(a,
			"-blockdev", opt("disk", "", "driver", "qcow2", "node-name", "disk0", "file.driver", "file", "file.filename", s.Disk),
			"-device", "virtio-blk-pci,drive=disk0")
	}
	if s.NetSocket != "" {
		kv := []string{"id", "net0", "addr.type", "unix", "addr.path", s.NetSocket}
		if s.NetServer {
			kv = append(kv, "server", "on")
		} else {
			kv = append(kv, "server", "off", "reconnect-ms", strconv.Itoa(s.ReconnectMs))
		}
		if !nicModels[s.NIC] {
			errs = append(errs, fmt.Errorf("nic: unknown model %q (want virtio-net-pci or e1000)", s.NIC))
		}
		if !macRE.MatchString(s.MAC) {
			errs = append(errs, fmt.Errorf("mac: %q is not a MAC address (want e.g. 52:54:00:12:34:01): %w", s.MAC, ErrBadValue))
		}
		a = append(a, "-netdev", opt("netdev", "stream", kv...),
			"-device", opt("nic", s.NIC, "netdev", "net0", "mac", s.MAC))
	}
	if incoming {
		a = append(a, "-incoming", "defer", "-S")
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("qemu arguments of %s: %w", s.Name, err)
	}
	return append(a, s.ExtraArgs...), nil
}

// ramBackend is a guest RAM that is Size bytes at Offset of the file QEMU
// inherits as descriptor ramFD: a shared memory-backend-file, so the
// guest runs on the file's pages themselves (RestoreOnFile).
type ramBackend struct {
	Offset, Size int64
}

// ramFD is the descriptor QEMU inherits the RAM file as (the first of
// exec.Cmd.ExtraFiles), and ramPath the path QEMU opens it by: a constant,
// so no file name reaches QEMU's command line.
const (
	ramFD        = 3
	ramPath      = "/proc/self/fd/3"
	ramBackendID = "pc.ram" // the pc and q35 machines' RAM id, kept so a
	// snapshot of the VM names its RAMBlock as any other's does
)

// object returns the -object option of the RAM backend for a guest of
// memMiB MiB, or why it cannot be one.
func (r *ramBackend) object(memMiB int) (string, error) {
	if r.Size != int64(memMiB)<<20 || r.Offset < 0 || r.Offset%ramPageSize != 0 {
		return "", fmt.Errorf("ram file: %d bytes at offset %d, want the guest's %d MiB at a page-aligned offset: %w", r.Size, r.Offset, memMiB, ErrBadValue)
	}
	return Option("memory-backend-file", "id", ramBackendID, "share", "on", "mem-path", ramPath,
		"offset", strconv.FormatInt(r.Offset, 10), "size", strconv.FormatInt(r.Size, 10))
}

var macRE = regexp.MustCompile(`^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$`)
