// Package vne reads the description of a VNE, a group of VMs joined by a
// virtual network, from the YAML file that `vnsnap up VNE.yaml` takes.
//
// Load reads a file; Parse decodes bytes. Both apply the defaults below and
// validate the result, returning every problem at once (errors.Join of
// *Error), each naming the file, line and field:
//
//	vne.yaml:12: vms[2].memory: "lots" is not a size (want e.g. 512MiB)
//
// # Format
//
//	name: lab                  # required; lower-case letters, digits and -
//	algorithm: vnsnap          # optional default snapshot algorithm (core.ParseAlgorithm):
//	                           #   vnsnap, vnsnap-log, sync-freeze, stop-copy, cow, uncoordinated
//	sink: memory               # optional default sink (core.ParseSink): memory or disk
//	hypervisor: qemu           # optional: qemu (default) or xen; vnsnap up picks the backend
//	hosts:                     # required, at least one
//	  - name: h1               # required, unique among hosts
//	    address: 127.0.0.1     # where the host's switch tunnel listens: IP or host:port;
//	                           #   default the agent's IP if it has one, else 127.0.0.1
//	    agent: 10.213.1.2:7443 # cluster mode: where the host's agent serves the coordinator,
//	                           #   host:port; all hosts name their agent or none does; unique
//	    ram_budget: 4GiB       # optional memory-sink budget
//	networks:                  # optional; default: one network "lan", 10.0.0.0/24
//	  - name: lan              # required, unique among networks
//	    subnet: 10.0.0.0/24    # required; no host bits set; subnets must not overlap
//	vms:                       # required, at least one
//	  - name: vm1              # required, unique among VMs
//	    host: h1               # required; names a host
//	    memory: 256MiB         # required; a multiple of 4KiB, at least 16MiB
//	    vcpus: 1               # 1..64; default 1
//	    mac: 52:54:00:12:34:01 # optional, unique, unicast; default MACFor(name, vm name)
//	    ip: 10.0.0.1/24        # optional, unique; inside the network's subnet, not its network
//	                           #   or broadcast address; a /N must equal the subnet's
//	    network: lan           # names a network; optional when there is only one
//	    guest:                 # required; exactly one of the three kinds below
//	      builtin: tcpstream   # the built-in image running one program:
//	                           #   tcpstream, npb, swarm, dirtier, heartbeat
//	                           #   or idle
//	      args: ["-bytes=100MiB"]  # optional, builtin only
//
// A file whose hosts name their agents describes a VNE spread over real
// hosts (Clustered): the coordinator reaches each host's agent at agent, and
// the host's switch tunnels to the other hosts' switches from address, which
// must then be an address the other hosts can reach (not the loopback
// default): give it, or let it default to the agent's IP with a free port.
//
//	hosts:
//	  - {name: a, agent: "10.213.1.2:7443"}                     # tunnel on 10.213.1.2, free port
//	  - {name: b, agent: "10.213.1.3:7443", address: "10.213.1.3:4789"}
//
// The other two guest kinds boot the user's own software. Paths are resolved
// against the directory of the YAML file (Load and Parse make every path
// absolute and clean, so a qcow2 overlay's backing file and a snapshot's
// record of it do not depend on the working directory) and must name
// existing regular files:
//
//	guest:
//	  kernel: images/vmlinuz       # required for this kind
//	  initrd: images/initramfs.gz  # optional
//	  cmdline: "console=ttyS0"     # optional
//	  disk: images/data.raw        # optional: the kernel guest's disk
//
//	guest:
//	  disk: images/debian.qcow2    # a disk the VM boots from
//
// A disk is in the hypervisor's format (qcow2 for QEMU, raw for Xen). A Xen
// PVH domU boots from a kernel, so its disk comes with one.
//
// Built-in program arguments are printable ASCII without space, ':' or '+'
// (they travel on the kernel command line); a cmdline is printable ASCII of
// at most MaxCmdline bytes. Names are at most MaxNameLen bytes; memory is at
// most MaxMemory. Sizes that are NaN, infinite, negative, fractional or
// beyond int64 are errors that say which. Load reads only regular files of
// at most MaxFileSize bytes (not /dev/zero, not a FIFO). Validation is
// linear in the size of the file (overlapping subnets are found by one
// sort and sweep). The rules are exported (CheckName, ParseMAC, CheckPath,
// ...) so that backends check what they read back, a snapshot's layout
// for one, with the same rules.
//
// Sizes take the units of internal/units (KiB, MiB, GiB, KB, MB, GB, ...; a
// bare number is bytes). Fields not listed above are errors, as are fields
// given twice. A field with an empty (null) value counts as absent.
//
// # Example
//
// testdata/example.yaml:
//
//	name: lab
//	algorithm: vnsnap
//	sink: memory
//	hosts:
//	  - name: h1
//	    address: 127.0.0.1
//	    ram_budget: 4GiB
//	  - name: h2
//	    address: 127.0.0.1:7002
//	networks:
//	  - name: lan
//	    subnet: 10.0.0.0/24
//	  - name: back
//	    subnet: 10.0.1.0/24
//	vms:
//	  - name: vm1
//	    host: h1
//	    memory: 256MiB
//	    vcpus: 1
//	    mac: 52:54:00:12:34:01
//	    ip: 10.0.0.1/24
//	    network: lan
//	    guest:
//	      builtin: tcpstream
//	      args: ["-bytes=100MiB"]
//	  - name: vm2
//	    host: h2
//	    memory: 512MiB
//	    vcpus: 2
//	    ip: 10.0.0.2
//	    network: lan
//	    guest:
//	      builtin: tcpstream
//	  - name: vm3
//	    host: h2
//	    memory: 128MiB
//	    network: back
//	    guest:
//	      builtin: dirtier
package vne
