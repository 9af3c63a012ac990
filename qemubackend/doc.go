// Package qemubackend runs VMs as QEMU processes and takes and restores their
// snapshots over QMP: the real backend of vnsnap.
//
// # Pieces
//
//   - Probe finds qemu-system-x86_64, refuses versions older than MinQEMU
//     (QEMU 7.2 corrupts pre-copy snapshots under TCG) and pins the machine
//     type (PreferredMachine, else the newest pc-i440fx).
//   - Spec and Start build the command line (TCG, -nodefaults, direct kernel
//     boot or a qcow2 disk, one NIC on `-netdev stream` with reconnect-ms,
//     serial console on a pipe, QMP on a unix socket) and run QEMU in its own
//     process group; VM.Kill kills the group. Every option value (paths,
//     names, MACs) is built by Option through EscapeValue, QEMU's rule of
//     a doubled comma, so a state directory named "a,server=on" stays one
//     path; values with control characters are refused (ErrBadValue).
//   - Console stamps every serial line with the host clock on arrival; the
//     guest heartbeat (workloads/guest/heartbeat) makes the largest gap
//     between heartbeat lines the pause seen from outside.
//   - VM.Snapshot captures memory and device state into an io.Writer by
//     pre-copy (live, auto-converge on request, and pause-before-switchover giving the caller a hook
//     at the snapshot point), stop-and-copy, or background-snapshot
//     (copy-on-write), reporting typed SnapshotEvents and measured Stats.
//   - Restore starts a VM with `-incoming defer -S`, feeds the stream from an
//     io.Reader through migrate-incoming (exit-on-error off, so a load error
//     is read over QMP) and leaves the VM paused for the caller's Cont.
//   - With Options.MappedRAM (mappedram.go) pre-copy and stop-and-copy
//     write QEMU's mapped-ram format instead (MappedRAMFormat): each
//     RAMBlock's pages at fixed, 1 MiB-aligned offsets of a regular file,
//     zero pages left as holes, pages of later passes written over earlier
//     ones; the pre-switchover pause and its hook work as for the stream.
//     QEMU refuses mapped-ram on an `fd:` descriptor (not seekable for
//     it), so the file goes to QEMU as an fd set (add-fd, write-only to
//     save, read-only to load) and the URI is file:/dev/fdset/N: no path
//     reaches QEMU. The save and the load run QEMU's multifd with 4
//     channels: without it QEMU writes the file a page at a time, and a
//     stop-and-copy save of a 256 MiB guest took 1.8-2.2 s against the
//     stream's 0.45-1.3 s; with it 0.3-0.6 s against 0.35-4 s (loaded
//     machine; BenchmarkRestoreVsQEMUFile logs both). RestoreFile loads
//     such a file, RestoreFileFrom while the file is still being prepared
//     (QEMU starts meanwhile); realbackend stores it as a page image
//     (hv.FileSaver, hv.FileRestorer).
//   - RestoreOnFile (ramfile.go) restores such a file with the guest's RAM
//     on the file itself: ParseMappedRAM (ramlayout.go) reads and checks
//     the file's RAMBlock list and mapped-ram headers (the file comes from
//     a store: every field is checked against the format and the file's
//     size), QEMU starts with `-machine memory-backend=pc.ram` and a
//     shared memory-backend-file at pc.ram's pages offset on a descriptor
//     it inherits (mem-path=/proc/self/fd/3, a constant: no path reaches
//     the command line) while the caller writes the file, then pc.ram's
//     bitmap is cleared and QEMU loads the file, reading the small blocks
//     and the device state alone. The pages are written once, and QEMU's
//     copy of them is gone; the file (unlinked) lives as long as QEMU.
//     realbackend restores page images this way (hv.RAMFileRestorer).
//     An image whose layout it refuses before the start (ErrBadMappedRAM,
//     ErrNoGuestRAM) is loaded by QEMU whole instead (RestoreFileFrom);
//     Hypervisor.RestoreRAMFile logs that fallback with its reason as a
//     warning (Hypervisor.Logger), Machine.RestoreFallback returns it, and
//     VM.RAMOnFile tells which way a VM's RAM went.
//   - Guest images are built by the guestimg subpackage.
//   - Hypervisor and Machine (port.go) put QEMU behind realbackend's
//     hypervisor port (package realbackend/hv), with the capabilities
//     background save, disk freeze (blockdev-snapshot-sync) and heartbeats.
//     Through the port QEMU never resumes a VM on its own: VM.Snapshot
//     resumes only with Options.Resume, and without it a cancelled
//     migration that QEMU resumes by itself is paused again.
//
// The migration stream travels through a pipe handed to QEMU with getfd and
// the `fd:` URI; a pipe, unlike a plain file, is not affected by the QEMU 10
// deprecation of `fd:` on seekable files, and lets the caller's Writer (the
// store, a RAM sink) see the bytes as QEMU produces them.
//
// # Why our own QMP client
//
// We evaluated github.com/digitalocean/go-qemu/qmp (SocketMonitor) and wrote a
// thin client (QMP) instead. In SocketMonitor one reader goroutine delivers
// both command replies and events over unbuffered channels: once Events has
// been called, an event nobody is reading at that moment blocks the reader,
// and with it the reply to the command in flight. A snapshot issues commands
// (migrate-continue, query-migrate, cont) while MIGRATION, MIGRATION_PASS,
// STOP and RESUME events stream in, so this back-pressure deadlocks or stalls
// exactly when timing matters. Before Events is called, or after all
// listeners are gone, events are silently dropped, so a STOP that arrives
// between two calls is lost. The context passed to Events is ignored, Run has
// no timeout or cancellation, replies are matched by order rather than id, a
// closed connection surfaces as "unexpected end of JSON input", and lines
// longer than bufio.Scanner's 64 KiB limit kill the connection. Our client
// matches replies by id, gives each Subscription an unbounded ordered queue
// (a slow reader delays nobody and loses nothing), stamps every event with
// the host time it arrived, takes a context per command, passes file
// descriptors with SCM_RIGHTS (getfd, add-fd) and reports a vanished QEMU as
// ErrClosed. It is about 350 lines and is unit-tested against a fake QMP
// server over a socketpair.
package qemubackend
