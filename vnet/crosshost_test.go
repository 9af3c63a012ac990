package vnet

import (
	"bytes"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/vnsnap/vnsnap/cluster/netnstest"
	"github.com/vnsnap/vnsnap/core"
	"github.com/vnsnap/vnsnap/core/cut"
	"github.com/vnsnap/vnsnap/qemubackend"
	"github.com/vnsnap/vnsnap/qemubackend/guestimg"
	"github.com/vnsnap/vnsnap/qemubackend/qemutest"
	"github.com/vnsnap/vnsnap/qemubackend/qemutest/progress"
)

// Sizes of the cross-host test: one small VM per host and a transfer that
// outlasts the colour flip on a loaded two-core machine through a link with
// 20 ms one way and 1 % loss (TCP gets a few hundred KB/s per flow there).
const (
	crossHosts   = 3
	crossMemMiB  = 128
	crossBytes   = 2_000_000 // per direction and peer
	crossDelay   = 20 * time.Millisecond
	crossLoss    = 0.01
	crossTunnel  = 4789 // each host has its own port space
	crossWarmup  = 100_000
	crossTimeout = 20 * time.Minute // a safety net; waits end on lack of progress
	// partitionFrames is how many frames each of two partitioned switches
	// sends into the partition before it heals.
	partitionFrames = 5
)

// TestSwitchesAcrossHosts runs one switch per host of a test cluster (three
// network namespaces joined by a link with 20 ms of delay and 1 % loss each
// way), each in a process of its own inside its namespace, tunnelling to the
// others' addresses over the cluster network. One real QEMU VM per host,
// itself run inside the namespace, is connected to its switch and runs the
// TCP workload against the two others (both directions with each). During
// the transfer each VM in turn is paused, its colour flipped through its
// switch's control socket, and resumed (a snapshot's colour change, without
// the image), while hosts 1 and 2 are partitioned from each other: the
// transfer completes with every byte verified, the tunnels carried it
// between the hosts' own addresses, and the consistency checker finds no
// orphan in the three frame logs. A second flip under the uncoordinated
// algorithm is the control: the checker must find its orphans in the same
// logs.
func TestSwitchesAcrossHosts(t *testing.T) {
	qh := qemutest.RequireQEMU(t)
	netnstest.Require(t)
	img := qemutest.GuestImage(t, "..")
	c := netnstest.New(t, netnstest.Config{Hosts: crossHosts, Delay: crossDelay, Loss: crossLoss, Seed: 1})
	t.Logf("cluster %v, impairment %s, QEMU %s", c.Subnet, c.Impairment, qh.Version)
	dir := shortDir(t)
	ctx := qemutest.Context(t, crossTimeout, progress.DirBytes(dir))

	tunnel := func(h netnstest.Host) string { return netip.AddrPortFrom(h.Addr, crossTunnel).String() }
	var procs []*switchProc
	var ips []string
	for i := range c.Hosts {
		ips = append(ips, fmt.Sprintf("10.0.0.%d", i+1))
	}
	for i, h := range c.Hosts {
		peers := map[string]string{}
		for j, o := range c.Hosts {
			if j != i {
				peers[fmt.Sprintf("h%d", j+1)] = tunnel(o)
			}
		}
		procs = append(procs, startSwitchProc(ctx, t, h, switchProcConfig{
			ID: uint16(i + 1), Algorithm: core.VNsnap.String(), Tunnel: tunnel(h), Peers: peers,
			Ports:    []PortConfig{{VM: core.VMID(i), Name: vmName(i), Path: filepath.Join(dir, vmName(i)+".sock")}},
			FrameLog: filepath.Join(dir, h.Name+".framelog"), Control: filepath.Join(dir, fmt.Sprintf("h%d.ctl", i+1)),
		}))
	}
	var vms []*qemubackend.VM
	for i, h := range c.Hosts {
		name := vmName(i)
		spec := qemubackend.Spec{
			Name: name, MemoryMiB: crossMemMiB, Kernel: img.Kernel, Initrd: img.Initrd,
			NetSocket: filepath.Join(dir, name+".sock"),
			Append: guestimg.KernelArgs(ips[i]+"/24", qemubackend.MACFor(name),
				guestimg.Program{Name: "heartbeat", Args: []string{"-interval=100ms"}},
				guestimg.Program{Name: "tcpstream", Args: []string{
					"-peers=" + strings.Join(ips, ","), "-self=" + ips[i],
					fmt.Sprintf("-bytes=%d", crossBytes), "-progress=250ms"}}),
			ConsoleLog: consoleFile(t, dir, name),
		}
		vm, err := qemubackend.Start(ctx, qemuIn(t, qh, h, dir), spec)
		if err != nil {
			t.Fatal(progress.Why(ctx, err))
		}
		t.Cleanup(vm.Kill)
		vms = append(vms, vm)
	}
	// Each host runs its own switch and QEMU: both are in its namespace.
	for _, h := range c.Hosts {
		ps, err := h.Processes()
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, p := range ps {
			names = append(names, p.Name)
		}
		sort.Strings(names)
		if want := []string{"qemu-system-x86", "vnet.test"}; !slices.Equal(names, want) {
			t.Errorf("processes in %s: %q, want %q", h.Name, names, want)
		}
	}
	for _, vm := range vms {
		if _, _, err := vm.Console.WaitFor(ctx, 0, func(l qemubackend.Line) bool {
			var rx, tx uint64
			_, err := fmt.Sscanf(l.Text, "TCPSTREAM PROGRESS rx=%d tx=%d", &rx, &tx)
			return err == nil && rx >= crossWarmup
		}); err != nil {
			t.Fatalf("%s: workload makes no progress: %v%s", vm.Spec.Name, progress.Why(ctx, err), stderrOf(vm))
		}
	}

	// The colour flip: each VM paused, its port's epoch set by its switch
	// process, resumed, one after the other while the others run.
	const epoch = core.Epoch(1)
	flip := func(i int, e core.Epoch) {
		t.Helper()
		vm := vms[i]
		if err := vm.Stop(ctx); err != nil {
			t.Fatalf("pause %s: %v", vm.Spec.Name, err)
		}
		if err := procs[i].ctl.SetEpoch(core.VMID(i), e); err != nil {
			t.Fatalf("set epoch %d of %s: %v", e, vm.Spec.Name, err)
		}
		if err := vm.Cont(ctx); err != nil {
			t.Fatalf("resume %s: %v", vm.Spec.Name, err)
		}
	}
	// Hosts 1 and 2 are cut apart across the flip (their tunnel drops every
	// frame both ways) until each has sent a few frames into the partition
	// (TCP retransmits), then joined again: TCP must recover.
	if err := c.Partition(0, 1); err != nil {
		t.Fatal(err)
	}
	tx12, tx21 := tunnelTx(t, procs[0], "h2"), tunnelTx(t, procs[1], "h1")
	for i := range vms {
		flip(i, epoch)
	}
	for tunnelTx(t, procs[0], "h2") < tx12+partitionFrames || tunnelTx(t, procs[1], "h1") < tx21+partitionFrames {
		if allDone(vms) {
			t.Fatalf("the transfer ended before the partition saw traffic: raise crossBytes")
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no frames sent into the partition: %v", progress.Why(ctx, ctx.Err()))
		case <-time.After(50 * time.Millisecond):
		}
	}
	if err := c.Heal(0, 1); err != nil {
		t.Fatal(err)
	}
	t.Logf("partition of h1 and h2: %d and %d frames sent into it", tunnelTx(t, procs[0], "h2")-tx12, tunnelTx(t, procs[1], "h1")-tx21)

	// The control: the same flip to epoch 2 under the uncoordinated
	// algorithm must leave orphans that the checker finds in these logs:
	// vm1 flips first, and the flip of the others waits until the logs show
	// a frame of vm1's new colour delivered to a VM of the old one.
	for i, p := range procs {
		if err := p.ctl.SetAlgorithm(core.Uncoordinated); err != nil {
			t.Fatalf("switch %d: %v", i+1, err)
		}
	}
	flip(0, epoch+1)
	for {
		for _, p := range procs {
			if err := p.ctl.FlushLog(); err != nil {
				t.Fatal(err)
			}
		}
		if orphansSoFar(t, c, dir, epoch+1) > 0 {
			break
		}
		if allDone(vms) {
			t.Fatalf("the transfer ended before an uncoordinated orphan was seen: raise crossBytes")
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no orphan after the uncoordinated flip of vm1: %v", progress.Why(ctx, ctx.Err()))
		case <-time.After(100 * time.Millisecond):
		}
	}
	for i := 1; i < len(vms); i++ {
		flip(i, epoch+1)
	}
	flipped := time.Now()

	for _, vm := range vms {
		l, _, err := vm.Console.WaitPrefix(ctx, 0, "TCPSTREAM DONE")
		if err != nil {
			t.Fatalf("%s: %v%s", vm.Spec.Name, progress.Why(ctx, err), stderrOf(vm))
		}
		if want := fmt.Sprintf("TCPSTREAM DONE ok=%d fail=0", 2*(crossHosts-1)); l.Text != want {
			t.Errorf("%s: %q, want %q", vm.Spec.Name, l.Text, want)
		}
		if l.At.Before(flipped) {
			t.Errorf("%s finished its transfer before the colour flips ended: raise crossBytes", vm.Spec.Name)
		}
		t.Logf("%s: %s, %v after the last flip", vm.Spec.Name, l.Text, l.At.Sub(flipped).Round(time.Millisecond))
		for _, l := range vm.Console.Lines() {
			if strings.Contains(l.Text, "FAIL") || strings.Contains(l.Text, "panic") {
				t.Errorf("%s console: %q", vm.Spec.Name, l.Text)
			}
		}
	}

	// Every tunnel carried frames, from the peer's own cluster address.
	for i, p := range procs {
		cs, err := p.ctl.Counters()
		if err != nil {
			t.Fatal(err)
		}
		if len(cs.Tunnels) != crossHosts-1 {
			t.Fatalf("switch %d: %d tunnels, want %d", i+1, len(cs.Tunnels), crossHosts-1)
		}
		for _, tc := range cs.Tunnels {
			ap, err := netip.ParseAddrPort(tc.Peer)
			if err != nil || !c.Subnet.Contains(ap.Addr()) || ap.Addr() == c.Hosts[i].Addr {
				t.Errorf("switch %d: tunnel %s peer %q, want another host's address in %v", i+1, tc.Name, tc.Peer, c.Subnet)
			}
			if tc.RxFrames == 0 || tc.TxFrames == 0 {
				t.Errorf("switch %d: tunnel %s rx %d tx %d frames, want both > 0", i+1, tc.Name, tc.RxFrames, tc.TxFrames)
			}
			t.Logf("switch %d tunnel %s (%s): rx %d tx %d frames", i+1, tc.Name, tc.Peer, tc.RxFrames, tc.TxFrames)
		}
		if cs.UnknownPeers != 0 || cs.BadHeaders != 0 {
			t.Errorf("switch %d: %d datagrams from unknown peers, %d bad headers, want 0", i+1, cs.UnknownPeers, cs.BadHeaders)
		}
	}
	if fw, lost, _ := c.WireStats(); c.Impairment == "wire" && (fw == 0 || lost == 0) {
		t.Errorf("wire forwarded %d and lost %d frames, want both > 0: the tunnels did not cross it", fw, lost)
	}

	// Stop the switches (flushing their logs) and check the cut.
	for _, p := range procs {
		if err := p.stop(); err != nil {
			t.Errorf("switch process: %v", err)
		}
	}
	res := checkLogs(t, c, dir, epoch)
	t.Logf("vnsnap cut: sent %d, orphans %d, in transit %d, recovered by TCP %d, lost %d, dropped by the network %d, dropped by colour %d",
		res.Sent, res.Orphans, res.InTransit, res.RecoveredByTCP, res.Lost, res.NetDropped, res.DroppedColour)
	if res.Sent == 0 {
		t.Errorf("the frame logs record no frame sent")
	}
	if !res.Consistent() {
		t.Errorf("vnsnap cut not consistent: %d orphans (%v), missing cuts %v", res.Orphans, res.OrphanFrames, res.MissingCuts)
	}
	un := checkLogs(t, c, dir, epoch+1)
	t.Logf("uncoordinated cut: orphans %d, in transit %d", un.Orphans, un.InTransit)
	if len(un.MissingCuts) != 0 || un.Orphans == 0 {
		t.Errorf("uncoordinated cut: %d orphans, missing cuts %v; want orphans and every cut", un.Orphans, un.MissingCuts)
	}
	fw, lost, ov := c.WireStats()
	t.Logf("wire: forwarded %d, lost %d, overflow %d", fw, lost, ov)
}

func vmName(i int) string { return fmt.Sprintf("vm%d", i+1) }

// qemuIn returns a copy of qh whose binary is a script that runs QEMU in
// host h's namespace (exec all the way, so the PID stays QEMU's).
func qemuIn(t *testing.T, qh *qemubackend.Host, h netnstest.Host, dir string) *qemubackend.Host {
	t.Helper()
	path := filepath.Join(dir, "qemu-"+h.Name)
	for _, v := range []string{h.Name, qh.Binary} {
		if strings.ContainsAny(v, "'\n") {
			t.Fatalf("cannot quote %q for sh", v)
		}
	}
	script := fmt.Sprintf("#!/bin/sh\nexec ip netns exec '%s' '%s' \"$@\"\n", h.Name, qh.Binary)
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	in := *qh
	in.Binary = path
	return &in
}

// consoleFile writes a VM's console to dir and shows its tail if t fails.
func consoleFile(t *testing.T, dir, name string) io.Writer {
	t.Helper()
	f, err := os.Create(filepath.Join(dir, name+".console"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		f.Close()
		if t.Failed() {
			b, _ := os.ReadFile(f.Name())
			if len(b) > 3000 {
				b = b[len(b)-3000:]
			}
			t.Logf("console of %s (tail):\n%s", name, b)
		}
	})
	return f
}

func stderrOf(vm *qemubackend.VM) string {
	if s := strings.TrimSpace(vm.Stderr()); s != "" {
		return "\nqemu stderr: " + s
	}
	return ""
}

// checkLogs reads the switches' frame logs and checks the cut of epoch e.
func checkLogs(t *testing.T, c *netnstest.Cluster, dir string, e core.Epoch) cut.Result {
	t.Helper()
	var rs []io.Reader
	for _, h := range c.Hosts {
		f, err := os.Open(filepath.Join(dir, h.Name+".framelog"))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		rs = append(rs, f)
	}
	recs, err := ReadLogs(rs...)
	if err != nil {
		t.Fatalf("read frame logs: %v", err)
	}
	ch := cut.NewChecker(e, len(c.Hosts))
	for _, r := range recs {
		if err := ch.Observe(r); err != nil {
			t.Fatalf("checker: %v", err)
		}
	}
	return ch.Result()
}

// allDone reports whether every VM has finished its transfer.
func allDone(vms []*qemubackend.VM) bool {
	for _, vm := range vms {
		done := false
		for _, l := range vm.Console.Lines() {
			done = done || strings.HasPrefix(l.Text, "TCPSTREAM DONE")
		}
		if !done {
			return false
		}
	}
	return true
}

// orphansSoFar counts the orphans of epoch e in the frame logs as far as
// they are flushed, while the switches still write them: each log is cut to
// whole records, and a receipt whose send another log has not flushed yet
// is skipped (the final check reads the complete logs strictly).
func orphansSoFar(t *testing.T, c *netnstest.Cluster, dir string, e core.Epoch) int {
	t.Helper()
	var rs []io.Reader
	for _, h := range c.Hosts {
		b, err := os.ReadFile(filepath.Join(dir, h.Name+".framelog"))
		if err != nil {
			t.Fatal(err)
		}
		if len(b) > LogHeaderSize {
			b = b[:LogHeaderSize+(len(b)-LogHeaderSize)/LogRecordSize*LogRecordSize]
		}
		rs = append(rs, bytes.NewReader(b))
	}
	recs, err := ReadLogs(rs...)
	if err != nil {
		t.Fatalf("read frame logs: %v", err)
	}
	ch := cut.NewChecker(e, len(c.Hosts))
	for _, r := range recs {
		_ = ch.Observe(r) // see above
	}
	return ch.Result().Orphans
}

// tunnelTx returns how many frames p's switch has sent into its tunnel name.
func tunnelTx(t *testing.T, p *switchProc, name string) uint64 {
	t.Helper()
	cs, err := p.ctl.Counters()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range cs.Tunnels {
		if tc.Name == name {
			return tc.TxFrames
		}
	}
	t.Fatalf("switch %d has no tunnel %s", cs.Switch, name)
	return 0
}
