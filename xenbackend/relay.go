package xenbackend

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
)

// The relay joins a domU's vif in dom0 to its vnet switch port, so that the
// switch (its colour rule and frame log) sees a Xen VM exactly as it sees a
// QEMU one: frames from the vif, read from an AF_PACKET socket bound to it,
// go to the port's unix stream socket as QEMU's "-netdev stream" sends them
// (a 4-byte big-endian length, then the frame), and frames from the port are
// sent out of the vif to the domU. No bridge is involved: the vif script of
// this package only brings the interface up.
//
// While the machine is held (paused, or not yet resumed after a restore),
// the relay drops the frames the domU sends and keeps the ones for it in
// the switch's queue: a Xen domain must run for a moment to suspend itself
// (xl save of a paused domain unpauses it for that), and what it sends then
// must not leave it, as nothing leaves a paused QEMU VM.

const (
	ethPAll          = 0x0003 // ETH_P_ALL
	solPacket        = 263    // SOL_PACKET
	packetVnetHdr    = 15     // PACKET_VNET_HDR
	packetIgnoreOut  = 23     // PACKET_IGNORE_OUTGOING
	relayMaxPacket   = 64<<10 + vnetHdrLen + ethHdrLen
	relayMaxFrameOut = 1 << 16
)

// relayStats counts what a relay did.
type relayStats struct {
	toSwitch, toGuest, dropped, bad atomic.Int64
}

type relay struct {
	vif  string
	pkt  *os.File // the AF_PACKET socket, non-blocking, on Go's poller
	conn net.Conn

	mu     sync.Mutex
	held   bool
	resume chan struct{} // closed when the hold ends

	stats relayStats
	wg    sync.WaitGroup
	once  sync.Once
	err   atomic.Value // first error that ended a direction
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// startRelay opens a packet socket on the interface vif and connects to the
// switch port's socket at port. The relay starts held.
func startRelay(vif, port string) (*relay, error) {
	ifi, err := net.InterfaceByName(vif)
	if err != nil {
		return nil, fmt.Errorf("relay %s: %w", vif, err)
	}
	fd, err := syscall.Socket(syscall.AF_PACKET, syscall.SOCK_RAW|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, int(htons(ethPAll)))
	if err != nil {
		return nil, fmt.Errorf("relay %s: packet socket: %w", vif, err)
	}
	fail := func(what string, err error) (*relay, error) {
		syscall.Close(fd)
		return nil, fmt.Errorf("relay %s: %s: %w", vif, what, err)
	}
	if err := syscall.SetsockoptInt(fd, solPacket, packetVnetHdr, 1); err != nil {
		return fail("PACKET_VNET_HDR", err)
	}
	// What we send out of the vif must not come back to us.
	if err := syscall.SetsockoptInt(fd, solPacket, packetIgnoreOut, 1); err != nil {
		return fail("PACKET_IGNORE_OUTGOING", err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrLinklayer{Protocol: htons(ethPAll), Ifindex: ifi.Index}); err != nil {
		return fail("bind", err)
	}
	conn, err := net.Dial("unix", port)
	if err != nil {
		return fail("switch port", err)
	}
	r := &relay{vif: vif, pkt: os.NewFile(uintptr(fd), "packet:"+vif), conn: conn, held: true, resume: make(chan struct{})}
	r.wg.Add(2)
	go r.fromGuest()
	go r.toGuestLoop()
	return r, nil
}

// hold starts dropping the domU's frames and keeping those for it.
func (r *relay) hold() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.held {
		r.held = true
		r.resume = make(chan struct{})
	}
}

// release ends a hold.
func (r *relay) release() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.held {
		r.held = false
		close(r.resume)
	}
}

// holding returns whether the relay is held and, if so, the channel closed
// when the hold ends.
func (r *relay) holding() (bool, chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.held, r.resume
}

func (r *relay) fail(err error) {
	if err != nil && !errors.Is(err, os.ErrClosed) && !errors.Is(err, net.ErrClosed) && !errors.Is(err, io.EOF) {
		r.err.CompareAndSwap(nil, err)
	}
}

// fromGuest carries the domU's frames to the switch.
func (r *relay) fromGuest() {
	defer r.wg.Done()
	buf := make([]byte, relayMaxPacket)
	out := bufio.NewWriterSize(r.conn, 256<<10)
	var lb [4]byte
	for {
		n, err := r.pkt.Read(buf)
		if err != nil {
			r.fail(err)
			return
		}
		if n < vnetHdrLen+ethHdrLen {
			r.stats.bad.Add(1)
			continue
		}
		if held, _ := r.holding(); held {
			r.stats.dropped.Add(1)
			continue
		}
		frames, err := wireFrames(parseVnetHdr(buf[:vnetHdrLen]), buf[vnetHdrLen:n])
		if err != nil {
			r.stats.bad.Add(1)
			continue
		}
		for _, f := range frames {
			binary.BigEndian.PutUint32(lb[:], uint32(len(f)))
			out.Write(lb[:])
			out.Write(f)
			r.stats.toSwitch.Add(1)
		}
		if err := out.Flush(); err != nil {
			r.fail(err)
			return
		}
	}
}

// toGuestLoop carries the switch's frames to the domU.
func (r *relay) toGuestLoop() {
	defer r.wg.Done()
	in := bufio.NewReaderSize(r.conn, 256<<10)
	buf := make([]byte, vnetHdrLen+relayMaxFrameOut) // a zero header: no offload
	var lb [4]byte
	for {
		if _, err := io.ReadFull(in, lb[:]); err != nil {
			r.fail(err)
			return
		}
		n := int(binary.BigEndian.Uint32(lb[:]))
		if n > relayMaxFrameOut {
			r.fail(fmt.Errorf("relay %s: switch sent a %d-byte record", r.vif, n))
			return
		}
		if _, err := io.ReadFull(in, buf[vnetHdrLen:vnetHdrLen+n]); err != nil {
			r.fail(err)
			return
		}
		if held, resume := r.holding(); held {
			<-resume // the frame waits, and the switch's queue behind it
		}
		if _, err := r.pkt.Write(buf[:vnetHdrLen+n]); err != nil {
			if errors.Is(err, os.ErrClosed) {
				return
			}
			r.stats.bad.Add(1) // e.g. the vif is down for a moment: the frame is lost
			continue
		}
		r.stats.toGuest.Add(1)
	}
}

// close stops the relay and waits for its goroutines.
func (r *relay) close() error {
	r.once.Do(func() {
		r.pkt.Close()
		r.conn.Close()
		r.release()
	})
	r.wg.Wait()
	if err, _ := r.err.Load().(error); err != nil {
		return err
	}
	return nil
}
