package qemubackend

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/vnsnap/vnsnap/qemubackend/guestimg"
	"github.com/vnsnap/vnsnap/qemubackend/qemutest/progress"
)

// TestStartInCommaDir boots a real QEMU whose every path (QMP socket, NIC
// socket, disk image) lies in a directory named "a,server=on". Unescaped,
// the comma would end the path and splice server=on into -netdev,
// -blockdev and the QMP chardev; escaped, QEMU opens exactly these files:
// QMP answers on its socket, the NIC connects to our listener, and
// query-block names the image.
func TestStartInCommaDir(t *testing.T) {
	h := requireQEMU(t)
	img := guestImage(t)
	dir := filepath.Join(t.TempDir(), "a,server=on")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("TMPDIR", dir) // the QMP socket's directory comes from os.MkdirTemp
	disk := filepath.Join(dir, "d,file.filename=x.qcow2")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", disk, "16M").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img: %v: %s", err, out)
	}
	sock := filepath.Join(dir, "net.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx := testContext(t, 15*time.Minute) // derived from progress; 15m is a safety net
	spec := Spec{
		Name: "comma", Kernel: img.Kernel, Initrd: img.Initrd, Disk: disk, NetSocket: sock,
		Append:     guestimg.KernelArgs("", "", guestimg.Program{Name: "heartbeat"}),
		ConsoleLog: consoleLog(t, "comma"),
	}
	vm := startVM(ctx, t, h, spec)
	if filepath.Dir(filepath.Dir(vm.dir)) != filepath.Dir(dir) || filepath.Base(filepath.Dir(vm.dir)) != "a,server=on" {
		t.Fatalf("QMP directory %s, want it inside %s", vm.dir, dir)
	}
	accepted := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			c.Close()
		}
		accepted <- err
	}()
	if _, _, err := vm.Console.WaitFor(ctx, 0, isHeartbeat); err != nil {
		t.Fatalf("no heartbeat: %v%s", progress.Why(ctx, err), vm.stderrTail())
	}
	// QEMU connected the NIC before the guest ran; the heartbeat is the
	// progress that says it had every chance to.
	select {
	case err := <-accepted:
		if err != nil {
			t.Fatalf("accept on %s: %v", sock, err)
		}
	case <-ctx.Done():
		t.Fatalf("QEMU never connected its NIC to %s%s", sock, vm.stderrTail())
	}
	var blocks []struct {
		Inserted struct {
			File string `json:"file"`
		} `json:"inserted"`
	}
	if err := vm.QMP.Execute(ctx, "query-block", nil, &blocks); err != nil {
		t.Fatal(err)
	}
	if len(blocks) != 1 || blocks[0].Inserted.File != disk {
		t.Errorf("query-block %+v, want one disk on %s", blocks, disk)
	}
}
