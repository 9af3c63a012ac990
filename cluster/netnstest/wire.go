package netnstest

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// wire is a user-space learning bridge between the hosts' veth peers in the
// cluster's own namespace, for kernels without sch_netem: it reads every
// frame a host sends (an AF_PACKET socket per peer), loses it with
// probability Config.Loss, holds it for Config.Delay and writes it to the
// peer of the destination host (flooding broadcast and unknown unicast).
// Frames keep their virtio-net header (PACKET_VNET_HDR) from read to write,
// so checksum offload and GSO packets pass unchanged.
type wire struct {
	delay time.Duration
	ports []*wirePort

	mu   sync.Mutex
	macs map[[6]byte]int // source MAC -> port it was last seen on

	done                      chan struct{}
	wg                        sync.WaitGroup
	forwarded, lost, overflow atomic.Uint64
}

type wirePort struct {
	f *os.File
	q chan wireFrame
}

type wireFrame struct {
	due time.Time
	b   []byte // virtio-net header + Ethernet frame
}

const (
	vnetHdrLen = 10 // struct virtio_net_hdr
	wireQueue  = 4096
	wireRcvBuf = 16 << 20
	// Linux socket options of SOL_PACKET not in x/sys under these names on
	// every version.
	packetVnetHdr        = 15
	packetIgnoreOutgoing = 23
)

func startWire(ns string, cfg Config) (*wire, error) {
	w := &wire{delay: cfg.Delay, macs: map[[6]byte]int{}, done: make(chan struct{})}
	err := inNetNS(ns, func() error {
		for i := 0; i < cfg.Hosts; i++ {
			p, err := openPort(fmt.Sprintf("h%d", i+1))
			if err != nil {
				return err
			}
			w.ports = append(w.ports, p)
		}
		return nil
	})
	if err != nil {
		w.close()
		return nil, err
	}
	for i, p := range w.ports {
		rnd := rand.New(rand.NewPCG(cfg.Seed, uint64(i)))
		w.wg.Add(2)
		go w.read(p, rnd, cfg.Loss)
		go w.send(i, p)
	}
	return w, nil
}

func openPort(dev string) (*wirePort, error) {
	ifc, err := net.InterfaceByName(dev)
	if err != nil {
		return nil, err
	}
	proto := htons(unix.ETH_P_ALL)
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, int(proto))
	if err != nil {
		return nil, fmt.Errorf("packet socket on %s: %w", dev, err)
	}
	for _, o := range []int{packetVnetHdr, packetIgnoreOutgoing} {
		if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, o, 1); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("packet socket on %s: option %d: %w", dev, o, err)
		}
	}
	// A receive buffer far above rmem_max (we are root), so a reader the
	// scheduler holds back on a loaded machine loses nothing the wire did
	// not mean to lose.
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, wireRcvBuf); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("packet socket on %s: receive buffer: %w", dev, err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: proto, Ifindex: ifc.Index}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("bind packet socket to %s: %w", dev, err)
	}
	// Non-blocking, so the runtime poller serves it and Close wakes Read.
	return &wirePort{f: os.NewFile(uintptr(fd), dev), q: make(chan wireFrame, wireQueue)}, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// read reads p's frames until the wire closes, drops the lost ones and
// queues the others with their due time.
func (w *wire) read(p *wirePort, rnd *rand.Rand, loss float64) {
	defer w.wg.Done()
	defer close(p.q)
	buf := make([]byte, vnetHdrLen+1<<16)
	for {
		n, err := p.f.Read(buf)
		if err != nil {
			if errors.Is(err, os.ErrClosed) {
				return
			}
			select {
			case <-w.done:
				return
			case <-time.After(time.Millisecond): // a down link: do not spin
				continue
			}
		}
		if n < vnetHdrLen+14 {
			continue
		}
		if loss > 0 && rnd.Float64() < loss {
			w.lost.Add(1)
			continue
		}
		fr := wireFrame{due: time.Now().Add(w.delay), b: append([]byte(nil), buf[:n]...)}
		select {
		case p.q <- fr:
		default:
			w.overflow.Add(1)
		}
	}
}

// send forwards the frames that came in on port in, each at its due time;
// the delay is the same for all, so the queue is in due order.
func (w *wire) send(in int, p *wirePort) {
	defer w.wg.Done()
	for fr := range p.q {
		if d := time.Until(fr.due); d > 0 {
			select {
			case <-time.After(d):
			case <-w.done:
				continue // drain until read closes the queue
			}
		}
		w.forward(in, fr.b)
	}
}

func (w *wire) forward(in int, b []byte) {
	eth := b[vnetHdrLen:]
	var dst, src [6]byte
	copy(dst[:], eth[0:6])
	copy(src[:], eth[6:12])
	w.mu.Lock()
	w.macs[src] = in
	out, known := w.macs[dst]
	w.mu.Unlock()
	w.forwarded.Add(1)
	if known && dst[0]&1 == 0 {
		if out != in {
			w.ports[out].f.Write(b) // a frame the peer refuses is lost, as on a wire
		}
		return
	}
	for i, p := range w.ports {
		if i != in {
			p.f.Write(b)
		}
	}
}

func (w *wire) close() error {
	close(w.done)
	var errs []error
	for _, p := range w.ports {
		errs = append(errs, p.f.Close())
	}
	w.wg.Wait()
	return errors.Join(errs...)
}
