package xenbackend

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// requireVeth makes a veth pair for a relay test, removed when the test
// ends. It needs root and ip: outside CI a machine without them skips the
// test with the reason; in CI it fails.
func requireVeth(t *testing.T) (a, b string) {
	t.Helper()
	a, b = fmt.Sprintf("vxr%da", os.Getpid()%100000), fmt.Sprintf("vxr%db", os.Getpid()%100000)
	var err error
	if os.Geteuid() != 0 {
		err = fmt.Errorf("not root")
	} else if out, e := exec.Command("ip", "link", "add", a, "type", "veth", "peer", "name", b).CombinedOutput(); e != nil {
		err = fmt.Errorf("ip link add veth: %v %s", e, bytes.TrimSpace(out))
	}
	if err != nil {
		if os.Getenv("CI") == "" {
			t.Skipf("relay test needs a veth pair: %v", err)
		}
		t.Fatalf("relay test needs a veth pair (run as root with iproute2): %v", err)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "link", "del", a).Run() })
	for _, n := range []string{a, b} {
		if out, err := exec.Command("ip", "link", "set", n, "up").CombinedOutput(); err != nil {
			t.Fatalf("ip link set %s up: %v %s", n, err, out)
		}
	}
	return a, b
}

// rawSocket is a plain packet socket on an interface, the far end of a
// veth pair: what a domU's netfront would be behind a vif.
func rawSocket(t *testing.T, ifname string) int {
	t.Helper()
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		t.Fatal(err)
	}
	fd, err := syscall.Socket(syscall.AF_PACKET, syscall.SOCK_RAW, int(htons(ethPAll)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrLinklayer{Protocol: htons(ethPAll), Ifindex: ifi.Index}); err != nil {
		t.Fatal(err)
	}
	tv := syscall.Timeval{Sec: 0, Usec: 100_000}
	if err := syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &tv); err != nil {
		t.Fatal(err)
	}
	return fd
}

// testFrame is an Ethernet frame of an ethertype nothing in the kernel
// answers, tagged with n.
func testFrame(src byte, n int) []byte {
	f := make([]byte, 60)
	copy(f, []byte{0x02, 0, 0, 0, 0, 0xee, 0x02, 0, 0, 0, 0, src, 0x88, 0xb5})
	copy(f[14:], fmt.Sprintf("vnsnap relay test %03d", n))
	return f
}

// recvTagged reads frames on fd until one carries the test text, or the
// socket's timeouts add up to give.
func recvTagged(t *testing.T, fd int, give time.Duration) ([]byte, bool) {
	t.Helper()
	buf := make([]byte, 2048)
	for end := time.Now().Add(give); time.Now().Before(end); {
		n, _, err := syscall.Recvfrom(fd, buf, 0)
		if err != nil {
			continue
		}
		if bytes.Contains(buf[:n], []byte("vnsnap relay test")) {
			return append([]byte(nil), buf[:n]...), true
		}
	}
	return nil, false
}

// The relay carries frames both ways between an interface and a switch
// port's stream socket, in QEMU's framing, and while held drops the
// guest's frames and keeps the switch's.
func TestRelayCarriesFrames(t *testing.T) {
	vif, guest := requireVeth(t)
	gfd := rawSocket(t, guest)
	sock := filepath.Join(t.TempDir(), "port.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	r, err := startRelay(vif, sock)
	if err != nil {
		t.Fatal(err)
	}
	defer r.close()
	port, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer port.Close()
	in := bufio.NewReader(port)
	readRecord := func(give time.Duration) ([]byte, error) {
		port.SetReadDeadline(time.Now().Add(give))
		for {
			var lb [4]byte
			if _, err := io.ReadFull(in, lb[:]); err != nil {
				return nil, err
			}
			f := make([]byte, binary.BigEndian.Uint32(lb[:]))
			if _, err := io.ReadFull(in, f); err != nil {
				return nil, err
			}
			if bytes.Contains(f, []byte("vnsnap relay test")) {
				return f, nil
			}
			// IPv6 router solicitations and the like from the new link
		}
	}
	writeRecord := func(f []byte) {
		if _, err := port.Write(append(binary.BigEndian.AppendUint32(nil, uint32(len(f))), f...)); err != nil {
			t.Fatal(err)
		}
	}

	// Held (as it starts): the guest's frame is dropped, the switch's waits.
	if _, err := syscall.Write(gfd, testFrame(1, 1)); err != nil {
		t.Fatal(err)
	}
	writeRecord(testFrame(2, 2))
	if f, ok := recvTagged(t, gfd, 500*time.Millisecond); ok {
		t.Fatalf("held relay delivered %q to the guest", f[14:40])
	}
	r.release()
	f, ok := recvTagged(t, gfd, 3*time.Second)
	if !ok || !bytes.Equal(f, testFrame(2, 2)) {
		t.Fatalf("after release: guest got %q (%v), want the switch's frame 2 that waited", f, ok)
	}
	if _, err := syscall.Write(gfd, testFrame(1, 3)); err != nil {
		t.Fatal(err)
	}
	got, err := readRecord(3 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, testFrame(1, 3)) {
		t.Errorf("switch got %q, want the guest's frame 3 (frame 1 was sent while held)", got)
	}
	if d := r.stats.dropped.Load(); d < 1 {
		t.Errorf("dropped %d guest frames while held, want at least 1", d)
	}
	// Nothing the relay sends to the guest comes back to the switch.
	writeRecord(testFrame(2, 4))
	if _, ok := recvTagged(t, gfd, 3*time.Second); !ok {
		t.Fatal("guest did not get frame 4")
	}
	if got, err := readRecord(3 * time.Second); err == nil {
		t.Errorf("switch got %q back: the relay's own frame was looped", got)
	} else if !strings.Contains(err.Error(), "timeout") {
		t.Fatal(err)
	}
}
