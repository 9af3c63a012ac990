package qemubackend

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Spec describes one VM. The same Spec (with the same Machine) must be used to
// restore a snapshot taken of it.
type Spec struct {
	Name      string // used in errors and file names
	MemoryMiB int    // default 128
	VCPUs     int    // default 1
	Machine   string // default Host.Machine

	// Boot from a kernel and initramfs (direct kernel boot) ...
	Kernel, Initrd, Append string
	// ... or from a qcow2 disk (virtio-blk); both may be set.
	Disk string

	// NetSocket, when set, gives the VM one NIC whose frames travel over
	// `-netdev stream` on this unix socket. As a client (the default) QEMU
	// reconnects every ReconnectMs until the switch listens, so the VM may
	// start first. NetServer makes QEMU listen instead, which joins two VMs
	// back to back without a switch.
	NetSocket   string
	NetServer   bool
	ReconnectMs int    // default 100
	NIC         string // NIC model, default "virtio-net-pci" (or "e1000")
	MAC         string // default derived from Name

	// ConsoleLog, when set, receives every console line with its host stamp.
	ConsoleLog io.Writer
	// ExtraArgs are appended to the QEMU command line.
	ExtraArgs []string

	// ram, set by RestoreOnFile, puts the guest's RAM on the file QEMU
	// inherits as descriptor ramFD (args.go).
	ram *ramBackend
}

func (s Spec) withDefaults(h *Host) Spec {
	if s.MemoryMiB == 0 {
		s.MemoryMiB = 128
	}
	if s.VCPUs == 0 {
		s.VCPUs = 1
	}
	if s.Machine == "" {
		s.Machine = h.Machine
	}
	if s.ReconnectMs == 0 {
		s.ReconnectMs = 100
	}
	if s.NIC == "" {
		s.NIC = "virtio-net-pci"
	}
	if s.MAC == "" {
		s.MAC = MACFor(s.Name)
	}
	return s
}

// MACFor derives a stable locally administered MAC from a VM name.
func MACFor(name string) string {
	h := uint32(2166136261)
	for i := 0; i < len(name); i++ {
		h = (h ^ uint32(name[i])) * 16777619
	}
	return fmt.Sprintf("52:54:00:%02x:%02x:%02x", byte(h>>16), byte(h>>8), byte(h))
}

// VM is a running QEMU process with its QMP connection and console.
type VM struct {
	Spec    Spec
	QMP     *QMP
	Console *Console

	host   *Host
	dir    string
	cmd    *exec.Cmd
	stderr lockedBuffer
	exited chan struct{}
	once   sync.Once
	fdsets atomic.Int64 // the last fd set id handed to QEMU (mappedram.go)
}

// Start boots a VM from spec and waits for its QMP socket.
func Start(ctx context.Context, host *Host, spec Spec) (*VM, error) {
	return start(ctx, host, spec, false, nil)
}

// start starts QEMU for spec; files are the descriptors it inherits from 3
// on (exec.Cmd.ExtraFiles).
func start(ctx context.Context, host *Host, spec Spec, incoming bool, files []*os.File) (*VM, error) {
	spec = spec.withDefaults(host)
	dir, err := os.MkdirTemp("", "vnsnap-qemu-")
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", spec.Name, err)
	}
	vm := &VM{Spec: spec, host: host, dir: dir, exited: make(chan struct{})}
	qmpSock := filepath.Join(dir, "qmp.sock")
	args, err := spec.Args(qmpSock, incoming)
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start %s: %w", spec.Name, err)
	}
	vm.cmd = exec.Command(host.Binary, args...)
	vm.cmd.Stdin = nil // /dev/null
	vm.cmd.ExtraFiles = files
	vm.cmd.Stderr = &vm.stderr
	// Own process group, so Kill takes any helper QEMU forks too; and die
	// with the test binary if it is killed.
	vm.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	out, err := vm.cmd.StdoutPipe()
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start %s: %w", spec.Name, err)
	}
	if err := vm.cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start %s: %w", spec.Name, err)
	}
	vm.Console = newConsole(out, spec.ConsoleLog)
	go func() {
		_ = vm.cmd.Wait()
		close(vm.exited)
	}()
	// QEMU creates its QMP socket early in its start; the wait ends at once
	// if it exits, so the timeout only bounds a QEMU that hangs before it.
	// It is generous: on a loaded host, loading the kernel and initrd alone
	// can take seconds.
	dctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	go func() {
		select {
		case <-vm.exited:
			cancel()
		case <-dctx.Done():
		}
	}()
	if vm.QMP, err = DialQMP(dctx, qmpSock); err != nil {
		vm.Kill()
		return nil, fmt.Errorf("start %s: %w%s", spec.Name, err, vm.stderrTail())
	}
	vm.QMP.explainClose(vm.exitReport)
	return vm, nil
}

// exitReport says how the QEMU process ended, with the tail of its standard
// error, for the error of a command whose QMP connection closed under it: a
// QEMU that crashed (an assertion, a signal) says so there, not only in a
// log nobody kept. QEMU closes its socket a little before the process is
// reaped, so it waits up to exitReportWait for that.
func (vm *VM) exitReport() string {
	select {
	case <-vm.exited:
		return fmt.Sprintf(" (qemu %s: %s)%s", vm.Spec.Name, vm.cmd.ProcessState, vm.stderrTail())
	case <-time.After(exitReportWait):
		return fmt.Sprintf(" (qemu %s still running %v after its QMP socket closed)%s", vm.Spec.Name, exitReportWait, vm.stderrTail())
	}
}

const exitReportWait = 2 * time.Second

// RAMOnFile reports whether the guest's RAM is a shared mapping of a
// restored image's file (RestoreOnFile) rather than QEMU's own memory.
func (vm *VM) RAMOnFile() bool { return vm.Spec.ram != nil }

// Pid returns the QEMU process's id.
func (vm *VM) Pid() int { return vm.cmd.Process.Pid }

// Exited is closed when the QEMU process has exited.
func (vm *VM) Exited() <-chan struct{} { return vm.exited }

// Stderr returns what QEMU wrote to its standard error.
func (vm *VM) Stderr() string { return vm.stderr.String() }

func (vm *VM) stderrTail() string {
	s := strings.TrimSpace(vm.stderr.String())
	if s == "" {
		return ""
	}
	if len(s) > 2000 {
		s = s[len(s)-2000:]
	}
	return "\nqemu stderr: " + s
}

// Kill kills the QEMU process group, waits for it to exit and removes its
// runtime files. It is safe to call more than once and from t.Cleanup.
func (vm *VM) Kill() {
	vm.once.Do(func() {
		if vm.cmd.Process != nil {
			_ = syscall.Kill(-vm.cmd.Process.Pid, syscall.SIGKILL)
			<-vm.exited
		}
		if vm.QMP != nil {
			_ = vm.QMP.Close()
		}
		_ = os.RemoveAll(vm.dir)
	})
}

// Status returns the VM's run state ("running", "paused", "postmigrate", ...).
func (vm *VM) Status(ctx context.Context) (string, error) {
	var st struct {
		Status string `json:"status"`
	}
	if err := vm.QMP.Execute(ctx, "query-status", nil, &st); err != nil {
		return "", fmt.Errorf("qmp query-status %s: %w", vm.Spec.Name, err)
	}
	return st.Status, nil
}

// Stop pauses the VM.
func (vm *VM) Stop(ctx context.Context) error {
	if err := vm.QMP.Execute(ctx, "stop", nil, nil); err != nil {
		return fmt.Errorf("qmp stop %s: %w", vm.Spec.Name, err)
	}
	return nil
}

// Cont resumes the VM (from paused, postmigrate, or after a restore).
//
// Just after a migration to a file (mapped-ram) has completed, QEMU refuses
// cont ("Migration is not finalized yet") until its migration thread has
// cleaned up; Cont retries then, for at most contRetry.
func (vm *VM) Cont(ctx context.Context) error {
	deadline := time.Now().Add(contRetry)
	for {
		err := vm.QMP.Execute(ctx, "cont", nil, nil)
		if err == nil {
			return nil
		}
		if !strings.Contains(err.Error(), "not finalized") || time.Now().After(deadline) {
			return fmt.Errorf("qmp cont %s: %w", vm.Spec.Name, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("qmp cont %s: %w", vm.Spec.Name, ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// contRetry bounds Cont's wait for a migration's clean-up: milliseconds
// normally, on a loaded machine perhaps a second.
const contRetry = 10 * time.Second

// lockedBuffer is a bytes.Buffer safe for a writer and concurrent readers.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// ErrExited is returned when QEMU exits during an operation.
var ErrExited = errors.New("qemu exited")
