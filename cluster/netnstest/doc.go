// Package netnstest builds a test cluster on one Linux machine: each host is
// a network namespace with an address of its own, so the processes of a
// cluster test (switches, agents) talk over real, separate interfaces and
// the kernel's IP stack, never over loopback.
//
// A cluster test, e.g. one agent per host:
//
//	netnstest.Require(t) // the gate: skips outside CI without root, fails in CI
//	c := netnstest.New(t, netnstest.Config{Hosts: 3, Delay: 20 * time.Millisecond, Loss: 0.01, Seed: 1})
//	for _, h := range c.Hosts {
//		agent := h.Command(ctx, bin, "agent", "-listen", netip.AddrPortFrom(h.Addr, 7443).String())
//		...
//	}
//	c.Partition(0, 1) // hosts 1 and 2 lose each other; Heal(0, 1) ends it
//
// and its VNE file names each host's agent and tunnel address on the
// cluster network (vne: hosts[].agent, hosts[].address).
//
// # How the cluster is built
//
// New (Start outside tests) creates, with iproute2:
//
//   - a namespace of the run's own, <run>-net, that joins the hosts: a
//     bridge br0, or the user-space wire (below);
//   - per host i (1-based) a namespace <run>-h<i> with interface eth0 at
//     10.213.X.(i+1)/24 and lo up, the other end of its veth pair (h<i>) in
//     <run>-net.
//
// <run> is Prefix, the PID and a random tag ("vnt4242-1f3a"), so parallel
// test processes never share a namespace; interfaces are created directly
// inside their namespaces (`ip link add ... netns A type veth peer ...
// netns B`), so their short fixed names (eth0, br0, h1) never meet another
// run's, and the root namespace gains nothing. X is random per run (for
// people reading logs; runs are isolated anyway). A host has only its /24:
// nothing a test sends can leave the run's namespaces (the package's test
// checks a send beyond it fails with ENETUNREACH).
//
// # Latency and loss
//
// Config.Delay and Config.Loss impair every frame between two hosts, once
// per direction (so a round trip takes at least 2*Delay). With the kernel's
// sch_netem they are `tc qdisc add dev h<i> root netem delay D loss L%` on
// each host's peer end in <run>-net (Cluster.Impairment "netem"). Kernels
// built without sch_netem and without loadable modules (the CI machines'
// kernel: CONFIG_NET_SCH_NETEM unset, CONFIG_MODULES unset) get the wire
// instead ("wire"): <run>-net then has no bridge, and a user-space learning
// bridge in the test process reads every frame from each peer end (an
// AF_PACKET socket opened inside <run>-net), loses it with probability Loss
// (a PCG per port seeded from Config.Seed), holds it Delay and writes it to
// the destination host's peer end. Frames keep their virtio-net header
// (PACKET_VNET_HDR), so checksum offload and GSO work as through a bridge.
// Either way the hosts' own stacks, sockets and interfaces are untouched:
// the impairment sits between hosts, where a real network's would.
//
// # Partitions
//
// Partition(i, j) cuts hosts i and j apart, both ways, while every other
// pair still talks; Heal(i, j) joins them again. Each of the two gets a
// permanent neighbour entry mapping the other's address to a MAC no
// interface has, so frames between them are still sent, without an error
// at the sender, and are flooded and discarded by every host, as on a
// partitioned network; it works through the bridge, netem or the wire.
//
// # Running things inside a host
//
// Host.Command runs a program in a host (`ip netns exec`; its PID is the
// program's). Host.Do runs a function on an OS thread that entered the
// host's namespace (setns on a locked thread): a socket it creates belongs
// to the host for good, whichever goroutine uses it later. Files and unix
// sockets are shared with the caller: a switch run in a host serves its VM
// ports as unix sockets to a QEMU outside.
//
// # Cleaning up
//
// New registers Close with t.Cleanup, so a failed test tears down too:
// Close stops the wire and deletes every namespace it made (which deletes
// their interfaces); stop the processes you started in them first. A run
// killed before cleanup leaves namespaces behind; every New first runs
// Sweep, which deletes the namespaces whose name matches a run's and whose
// PID is not running. Nothing else is touched.
//
// # What it needs
//
// Root, iproute2 (ip, tc: scripts/setup-netns.sh installs it), and a kernel
// with network namespaces, veth and bridge; sch_netem is optional. Require is
// the gate: outside CI a machine without them skips the test with the
// reason, in CI (CI set) it fails it.
package netnstest
