// Package realbackend runs whole VNEs of real QEMU VMs joined by vnsnap's
// user-space switches, and takes and restores their consistent snapshots by
// driving the same core.Coordinator as the simulator.
//
// # Pieces
//
//   - Boot starts a VNE from its description (vne.VNE): one vnet.Switch per
//     host with a UDP tunnel to every other host's switch (all in this
//     process: the "hosts" share a machine and talk over loopback), one port
//     per VM, and one QEMU per VM connected to its port with -netdev stream.
//     Built-in guests boot the project's image (qemubackend/guestimg) with
//     a heartbeat on the serial console, so pauses are measured from outside.
//   - Env.Snapshot runs one VNE snapshot. A single goroutine owns the
//     coordinator (core.Mode Observed): it feeds core.Started, then receives
//     events from one channel, calls Step and executes the commands in
//     order. Executing a command may start a goroutine (a QEMU migration, a
//     memory-sink flush, the commit) that later posts an event into the
//     channel; no other goroutine touches the coordinator.
//   - Restore rebuilds a VNE from a stored snapshot: switches, tunnels and
//     ports (at the snapshot's epoch), every QEMU started with -incoming
//     defer and loaded from the store, the in-transit log replayed into the
//     ports (vnsnap-log), then every VM resumed together.
//
// # Commands
//
//   - StartLiveCopy: VM.Snapshot(Precopy) in a goroutine. QEMU's
//     MIGRATION_PASS n>1 is reported as RoundCopied{Round: n-1}. At
//     pre-switchover the snapshot-point hook posts VMPaused and blocks until
//     the loop has executed SetColour and FreezeDisk and reaches CopyFinal
//     for that VM; when the stream is complete FinalCopied is posted. QEMU's
//     own `cont` at the end makes the following ResumeVM a no-op.
//   - PauseVM: `stop`, then VMPaused. CopyFinal{All} of a paused VM:
//     VM.Snapshot(StopCopy), which leaves the VM paused (postmigrate).
//   - ProtectMemory: VM.Snapshot(Background) of the paused VM. Since QEMU 10
//     the background snapshot of a paused VM leaves it paused, so the
//     executor waits until QEMU has saved the device state and armed write
//     protection (the migration is active and has started saving pages)
//     before it returns; the ResumeVM the core orders next sends `cont`.
//   - SetColour: Controller.SetEpoch on the switch of the VM's host.
//   - FreezeDisk: blockdev-snapshot-sync of a disk guest's image to a new
//     qcow2 overlay while the VM is paused: the old image is the disk at the
//     snapshot point. Kernel+initramfs guests have no disk; the report
//     records that nothing was frozen.
//   - ResumeVM: `cont` unless the VM runs, until QEMU reports it running,
//     then VMResumed.
//   - ThrottleVM: never issued in Observed mode (QEMU's own auto-converge
//     would do it); ignored.
//   - FlushImage: a goroutine copies the VM's RAM buffer (VNsnap-memory)
//     into its store stream, then ImageFlushed. With the disk sink QEMU's
//     stream goes straight into the store stream (paced by the store).
//   - CancelCopy: cancels the VM's migration goroutine (migrate_cancel) and
//     waits for it to return.
//   - SetTimer/CancelTimer: time.AfterFunc posting TimerFired.
//   - Commit: writes the extras (layout, frame logs of every switch, the
//     in-transit log for vnsnap-log, the VNE file), then store.Writer.Commit
//     (manifest last), then Committed.
//   - Abort: store.Writer.Abort.
//
// The loop keeps the core's failure contract (core/doc.go): a batch stops at
// its first failed command, reported as core.Failed (a VM's command) or
// core.SnapshotFailed (the commit, a cancelled context, a protocol error);
// the coordinator then aborts, and its abort batch, which re-issues every
// colour change and resume a VM may still need, runs whole on a context of
// its own. Nothing else resumes a VM: the tests see what the core did.
//
// # Restoring untrusted snapshots
//
// A snapshot's checksums prove that it is intact, not who wrote it: a store
// may be copied from elsewhere or edited, so Restore treats everything it
// reads back as untrusted input, and an operator can restore a snapshot of
// unknown origin without it choosing host files or QEMU options:
//
//   - layout.json is decoded strictly (DecodeLayout: at most MaxLayoutSize
//     bytes, one object, no unknown fields) and checked with the rules of a
//     VNE file (Layout.Check, the functions of package vne): VNE, host and
//     VM names (so no "../" and no comma ever becomes a file name), unique
//     names and MACs (canonical aa:bb:cc:dd:ee:ff only), host indexes,
//     addresses, budgets, memory, vCPUs, the machine type's form, absolute
//     clean paths and printable kernel command lines. Every problem is named
//     by field. No file is placed, and nothing is started, before this
//     passes; runtime files are named only through Env.file, which refuses
//     an unchecked name.
//   - The machine type must be this QEMU's pinned one.
//   - Built-in guests (heartbeat set) run this machine's built-in image
//     (Options.Image), whatever kernel and initramfs the snapshot names. Their
//     command line must be exactly of the form guestimg.KernelArgs produces
//     (guestimg.ParseKernelArgs): the image's fixed parameters, the VM's own
//     MAC, an address, and built-in programs whose arguments pass
//     vne.CheckArg. Any other parameter (init=, rdinit=...) is refused.
//   - Guests with the user's own kernel take kernel and initramfs from the VM
//     of the same name in the VNE file the user runs (Options.VNE; `vnsnap
//     up FILE` passes it), never from the snapshot, and the snapshot's
//     command line must equal that file's. Without the file such a snapshot
//     is refused: a snapshot alone never picks a host file to load into a
//     guest (-kernel /etc/passwd).
//   - Disk images must be regular files (not symbolic links) directly in the
//     state directory (Options.Dir), named after their VM as Boot,
//     FreezeDisk and Restore name them (VM.boot.qcow2, VM.eN.qcow2,
//     VM.restore-eN-M.qcow2): frozen images are this machine's own files,
//     never a path the snapshot chooses. Restore runs on a fresh overlay of
//     that image, under a name no earlier restore used (an earlier restore's
//     overlay may be the image a later snapshot froze).
//   - Extras are read with bounds (layout.json MaxLayoutSize, the VNE file
//     vne.MaxFileSize, the in-transit log 1 GiB).
//
// Every QEMU option value is built through qemubackend.EscapeValue (commas
// doubled, control characters refused), so the paths of a state directory
// named "a,server=on" stay single values.
package realbackend
