package qemubackend

import (
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vnsnap/vnsnap/qemubackend/guestimg"
	"github.com/vnsnap/vnsnap/qemubackend/qemutest/progress"
)

// Two VMs joined back to back by `-netdev stream` (one listens, the other
// connects) stream verified data to each other while one of them is
// snapshotted live and the other stop-and-copied: the transfer must survive
// the pauses with every byte intact.
func TestTCPStreamSurvivesSnapshots(t *testing.T) {
	h := requireQEMU(t)
	img := guestImage(t)
	ctx := testContext(t, 15*time.Minute)
	sock := filepath.Join(t.TempDir(), "link.sock")
	ips := []string{"10.0.0.1", "10.0.0.2"}
	var vms []*VM
	for i, ip := range ips {
		name := "tcp" + string(rune('1'+i))
		spec := Spec{
			Name: name, MemoryMiB: 128, Kernel: img.Kernel, Initrd: img.Initrd,
			NetSocket: sock, NetServer: i == 0,
			Append: guestimg.KernelArgs(ip+"/24", MACFor(name),
				guestimg.Program{Name: "heartbeat", Args: []string{"-interval=50ms"}},
				guestimg.Program{Name: "tcpstream", Args: []string{
					"-peers=" + strings.Join(ips, ","), "-self=" + ip, "-bytes=40000000"}}),
			ConsoleLog: consoleLog(t, name),
		}
		vms = append(vms, startVM(ctx, t, h, spec))
	}
	for _, vm := range vms {
		if _, _, err := vm.Console.WaitPrefix(ctx, 0, "TCPSTREAM PROGRESS"); err != nil {
			t.Fatalf("%s: tcpstream did not start: %v", vm.Spec.Name, progress.Why(ctx, err))
		}
	}
	var snapped time.Time
	for i, m := range []Method{Precopy, StopCopy} {
		st, err := vms[i].Snapshot(ctx, io.Discard, Options{Method: m, Resume: true})
		if err != nil {
			t.Fatal(progress.Why(ctx, err))
		}
		snapped = time.Now()
		t.Logf("%s of %s during the transfer: pause %v, %d bytes", m, vms[i].Spec.Name, st.Pause.Gap.Round(time.Millisecond), st.Bytes)
	}
	for _, vm := range vms {
		l, _, err := vm.Console.WaitPrefix(ctx, 0, "TCPSTREAM DONE")
		if err != nil {
			t.Fatalf("%s: %v", vm.Spec.Name, progress.Why(ctx, err))
		}
		if l.Text != "TCPSTREAM DONE ok=2 fail=0" {
			t.Errorf("%s: %q, want ok=2 fail=0", vm.Spec.Name, l.Text)
		}
		if l.At.Before(snapped) {
			t.Errorf("%s finished before the snapshots: raise -bytes", vm.Spec.Name)
		}
		checkNoFail(t, vm, vm.Spec.Name)
		t.Logf("%s: %s, %v after the last snapshot", vm.Spec.Name, l.Text, l.At.Sub(snapped).Round(time.Millisecond))
	}
}
