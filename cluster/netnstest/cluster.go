package netnstest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Config describes a test cluster.
type Config struct {
	// Hosts is the number of host namespaces, 1..MaxHosts.
	Hosts int
	// Delay is added to every frame from one host to another (one way).
	Delay time.Duration
	// Loss is the probability, 0..1, that such a frame is lost.
	Loss float64
	// Seed seeds the user-space wire's loss draws (see doc.go).
	Seed uint64
}

// MaxHosts is the largest number of hosts of one cluster (one /24).
const MaxHosts = 200

// Prefix starts the name of every namespace this package creates; Sweep
// removes those of dead runs.
const Prefix = "vnt"

// Host is one host of a cluster: a network namespace with one interface,
// Dev, at Addr/24.
type Host struct {
	// Name is the host's namespace (ip netns).
	Name string
	// Addr is the host's address on the cluster network.
	Addr netip.Addr
	// Dev is the interface inside the namespace that carries Addr.
	Dev string
}

// Cluster is a running test cluster; New removes it when the test ends.
type Cluster struct {
	// Hosts are the host namespaces, in order.
	Hosts []Host
	// Subnet is the cluster network, 10.213.X.0/24 with X picked per run.
	Subnet netip.Prefix
	// Impairment says how Delay and Loss are applied: "none", "netem" or
	// "wire" (see doc.go).
	Impairment string

	cfg  Config
	run  string // Prefix + pid + "-" + random
	net  string // the namespace of the bridge or the wire
	made []string
	wire *wire
}

// New builds a cluster for t and tears it down at t's cleanup, also when t
// fails. It first sweeps namespaces left by dead runs. It needs root and
// iproute2: call Require first for the gate.
func New(t testing.TB, cfg Config) *Cluster {
	t.Helper()
	c, err := Start(cfg)
	if err != nil {
		t.Fatalf("netnstest: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("netnstest: teardown: %v", err)
		}
	})
	return c
}

// Start builds a cluster; the caller must Close it. New is the form for tests.
func Start(cfg Config) (*Cluster, error) {
	if cfg.Hosts < 1 || cfg.Hosts > MaxHosts {
		return nil, fmt.Errorf("Config.Hosts: %d is out of range 1..%d", cfg.Hosts, MaxHosts)
	}
	if cfg.Delay < 0 || cfg.Delay > 10*time.Second {
		return nil, fmt.Errorf("Config.Delay: %v is out of range 0..10s", cfg.Delay)
	}
	if !(cfg.Loss >= 0 && cfg.Loss <= 1) {
		return nil, fmt.Errorf("Config.Loss: %v is out of range 0..1", cfg.Loss)
	}
	if err := Sweep(); err != nil {
		return nil, err
	}
	var rnd [2]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return nil, err
	}
	run := fmt.Sprintf("%s%d-%s", Prefix, os.Getpid(), hex.EncodeToString(rnd[:]))
	// The third octet only has to differ between runs for people reading
	// addresses: each run's namespaces are joined to each other only.
	x := int(rnd[0])%250 + 1
	c := &Cluster{
		cfg: cfg, run: run, net: run + "-net",
		Subnet: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 213, byte(x), 0}), 24),
	}
	if err := c.build(); err != nil {
		return nil, errors.Join(err, c.Close())
	}
	return c, nil
}

func (c *Cluster) build() error {
	if err := c.addNS(c.net); err != nil {
		return err
	}
	impaired := c.cfg.Delay > 0 || c.cfg.Loss > 0
	c.Impairment = "none"
	if impaired {
		c.Impairment = "wire"
		if netemWorks(c.net) {
			c.Impairment = "netem"
		}
	}
	if c.Impairment != "wire" {
		if err := ipIn(c.net, "link", "add", "br0", "type", "bridge"); err != nil {
			return err
		}
		if err := ipIn(c.net, "link", "set", "br0", "up"); err != nil {
			return err
		}
	}
	for i := 0; i < c.cfg.Hosts; i++ {
		h := Host{
			Name: fmt.Sprintf("%s-h%d", c.run, i+1),
			Addr: hostAddr(c.Subnet, i),
			Dev:  "eth0",
		}
		peer := fmt.Sprintf("h%d", i+1) // the wire side, inside c.net
		if err := c.addNS(h.Name); err != nil {
			return err
		}
		if err := ip("link", "add", h.Dev, "netns", h.Name, "type", "veth", "peer", "name", peer, "netns", c.net); err != nil {
			return err
		}
		for _, args := range [][]string{
			{"addr", "add", netip.PrefixFrom(h.Addr, 24).String(), "dev", h.Dev},
			{"link", "set", h.Dev, "up"},
			{"link", "set", "lo", "up"},
		} {
			if err := ipIn(h.Name, args...); err != nil {
				return err
			}
		}
		if c.Impairment != "wire" {
			if err := ipIn(c.net, "link", "set", peer, "master", "br0"); err != nil {
				return err
			}
		}
		if err := ipIn(c.net, "link", "set", peer, "up"); err != nil {
			return err
		}
		if c.Impairment == "netem" {
			if err := run("ip", "netns", "exec", c.net, "tc", "qdisc", "add", "dev", peer, "root", "netem",
				"delay", c.cfg.Delay.String(), "loss", strconv.FormatFloat(c.cfg.Loss*100, 'f', -1, 64)+"%"); err != nil {
				return err
			}
		}
		c.Hosts = append(c.Hosts, h)
	}
	if c.Impairment == "wire" {
		w, err := startWire(c.net, c.cfg)
		if err != nil {
			return err
		}
		c.wire = w
	}
	return nil
}

// hostAddr is the address of host i: .2, .3, ... of the subnet (.1 is left
// for a gateway a later test may want).
func hostAddr(subnet netip.Prefix, i int) netip.Addr {
	a := subnet.Addr().As4()
	a[3] = byte(i + 2)
	return netip.AddrFrom4(a)
}

func (c *Cluster) addNS(name string) error {
	if err := ip("netns", "add", name); err != nil {
		return err
	}
	c.made = append(c.made, name)
	return nil
}

// Close stops the wire and deletes every namespace of the cluster (which
// deletes their interfaces and kills nothing: stop the processes you started
// in them first). It is safe to call more than once.
func (c *Cluster) Close() error {
	var errs []error
	if c.wire != nil {
		errs = append(errs, c.wire.close())
		c.wire = nil
	}
	for i := len(c.made) - 1; i >= 0; i-- {
		errs = append(errs, ip("netns", "delete", c.made[i]))
	}
	c.made = nil
	return errors.Join(errs...)
}

// WireStats returns the frames the user-space wire forwarded and dropped
// (lost by Config.Loss, or queue overflow); zero without a wire.
func (c *Cluster) WireStats() (forwarded, lost, overflow uint64) {
	if c.wire == nil {
		return 0, 0, 0
	}
	return c.wire.forwarded.Load(), c.wire.lost.Load(), c.wire.overflow.Load()
}

// staleName matches the namespaces New creates: Prefix, the creating
// process's PID, a random tag, and the role.
var staleName = regexp.MustCompile(`^` + Prefix + `([0-9]+)-[0-9a-f]{4}-(net|h[0-9]+)$`)

// Sweep deletes the namespaces that New created in processes that no longer
// run (a crashed or killed test leaves them behind). Namespaces of live
// processes, and every other namespace, are left alone.
//
// Sweeps hold a machine-wide lock (lockNetns): one that ran while a
// namespace of a dead process's name was being made on purpose (TestSweep)
// deleted it under `ip netns add`, which then failed ("Bind
// /proc/self/ns/net -> /run/netns/NAME failed: No such file or directory",
// a fresh machine's CI).
func Sweep() error {
	unlock, err := lockNetns()
	if err != nil {
		return err
	}
	defer unlock()
	return sweep()
}

// sweep is Sweep for a caller that holds the lock.
func sweep() error {
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip netns list: %w: %s", err, strings.TrimSpace(string(out)))
	}
	var errs []error
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		m := staleName.FindStringSubmatch(f[0])
		if m == nil {
			continue
		}
		pid, err := strconv.Atoi(m[1])
		if err != nil || alive(pid) {
			continue
		}
		// Another process may sweep the same namespace at once: only a
		// namespace that is still there after a failed delete is an error.
		if err := ip("netns", "delete", f[0]); err != nil {
			if _, serr := os.Stat("/run/netns/" + f[0]); serr == nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

func alive(pid int) bool {
	_, err := os.Stat("/proc/" + strconv.Itoa(pid))
	return err == nil
}

// netemWorks reports whether the kernel has the netem qdisc, by adding one
// to the loopback of namespace ns and removing it again.
func netemWorks(ns string) bool {
	if err := run("ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"); err != nil {
		return false
	}
	_ = run("ip", "netns", "exec", ns, "tc", "qdisc", "del", "dev", "lo", "root")
	return true
}

func ip(args ...string) error { return run("ip", args...) }

// lockNetns takes /run/lock/vnsnap-netns.lock, the lock every process of
// ours holds while it sweeps namespaces (Sweep), so that a sweep never
// deletes a namespace that `ip netns add` is still making. It blocks;
// unlock releases it. Two calls in one process exclude each other too (each
// opens the file anew).
func lockNetns() (unlock func(), err error) {
	if err := os.MkdirAll("/run/lock", 0o755); err != nil {
		return nil, fmt.Errorf("netns lock: %w", err)
	}
	f, err := os.OpenFile("/run/lock/vnsnap-netns.lock", os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("netns lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("netns lock: %w", err)
	}
	return func() { f.Close() }, nil // closing the file releases the lock
}

func ipIn(ns string, args ...string) error { return run("ip", append([]string{"-n", ns}, args...)...) }

func run(name string, args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Partition cuts the link between hosts i and j (indexes in Hosts) both
// ways, leaving every other pair alone: each of the two namespaces gets a
// permanent neighbour entry that maps the other's address to a MAC no
// interface has (nowhereMAC), so what one sends to the other is sent,
// flooded and discarded by every host, without an error at the sender, as
// on a partitioned network. Heal undoes it.
func (c *Cluster) Partition(i, j int) error {
	return c.neighbours(i, j, func(h Host, peer netip.Addr) error {
		return ipIn(h.Name, "neigh", "replace", peer.String(), "lladdr", nowhereMAC, "dev", h.Dev, "nud", "permanent")
	})
}

// Heal restores the link between hosts i and j that Partition cut (the
// hosts resolve each other's MAC again).
func (c *Cluster) Heal(i, j int) error {
	return c.neighbours(i, j, func(h Host, peer netip.Addr) error {
		return ipIn(h.Name, "neigh", "del", peer.String(), "dev", h.Dev)
	})
}

// nowhereMAC is a locally administered unicast MAC that no interface of a
// cluster has (veth MACs are random; one in 2^46 would collide).
const nowhereMAC = "02:00:00:00:00:01"

func (c *Cluster) neighbours(i, j int, set func(h Host, peer netip.Addr) error) error {
	if i < 0 || j < 0 || i >= len(c.Hosts) || j >= len(c.Hosts) || i == j {
		return fmt.Errorf("netnstest: hosts %d and %d: want two different hosts of 0..%d", i, j, len(c.Hosts)-1)
	}
	a, b := c.Hosts[i], c.Hosts[j]
	return errors.Join(set(a, b.Addr), set(b, a.Addr))
}
