// Package e2e holds the end-to-end test of cluster mode (TestCluster): a
// test cluster of network namespaces (cluster/netnstest) with 20 ms and 1 %
// loss between hosts, one `vnsnap agent` process per host (the binary built
// by the test, certificates from `vnsnap certs`), each running one real
// QEMU VM under TCG with the tcpstream workload, and the coordinator
// (realbackend with Options.Agents) in the test process.
//
// The test process lives in the root namespace, which has no route to the
// cluster network, so the coordinator reaches the agents through a
// forwarder: a loopback listener whose connections are dialled from inside
// a fourth host's namespace (netnstest.Host.Do). The coordinator's gRPC
// therefore crosses the impaired network to every agent, as the tunnels
// between the agents' switches do; TLS names the agent's host, not the
// address, so the forwarder is invisible to mutual TLS.
//
// One boot of the three VMs is shared by the steps (a snapshot checked on
// the agents' frame logs, a restore with every VM on another host, an
// agent killed mid-snapshot, the coordinator's lease running out, a
// snapshot after both), to keep the test to a few minutes of CI. Everything
// the test starts (agents with their QEMUs in process groups, namespaces)
// is stopped at cleanup, also on failure.
package e2e
