// Package realbackend runs whole VNEs of real VMs joined by vnsnap's
// user-space switches, and takes and restores their consistent snapshots by
// driving the same core.Coordinator as the simulator.
//
// # The hypervisor port
//
// realbackend runs VMs only through its port, package hv (aliased here as
// Hypervisor and Machine): start a machine, restore one paused from an
// image, pause, resume (both idempotent), save with a callback per live pass
// (OnPass) and one at the snapshot point (AtSnapshotPoint, which the save
// waits for), kill. Optional capabilities are found by type assertion:
// hv.BackgroundSaver (copy-on-write, for cow), hv.DiskFreezer (disk guests)
// and hv.Heartbeats (the pause seen from outside). A machine never resumes
// on its own: a save leaves it paused, also when it fails or is cancelled,
// and only the core's ResumeVM lets it run (core/doc.go, rule 4).
// realbackend imports no backend (a test checks it): cmd/vnsnap picks one
// from the VNE file's hypervisor field (qemubackend.NewHypervisor for qemu).
// Each snapshot's manifest records the hypervisor, its version and image
// format (labels hypervisor, hypervisor-version, image-format); Restore
// refuses, before it starts anything, a snapshot made by another hypervisor
// or in another image format (ErrWrongHypervisor, naming the snapshot, its
// VMs and both hypervisors).
//
// # Pieces
//
//   - Boot starts a VNE from its description (vne.VNE): one vnet.Switch per
//     host with a UDP tunnel to every other host's switch (all in this
//     process: the "hosts" share a machine and talk over loopback), one port
//     per VM, and one machine per VM connected to its port (QEMU: -netdev
//     stream).
//     Built-in guests boot the project's image (qemubackend/guestimg) with
//     a heartbeat on the serial console, so pauses are measured from outside.
//   - Env.Snapshot runs one VNE snapshot. A single goroutine owns the
//     coordinator (core.Mode Observed): it feeds core.Started, then receives
//     events from one channel, calls Step and executes the commands in
//     order. Executing a command may start a goroutine (a save, a
//     memory-sink flush, the commit) that later posts an event into the
//     channel; no other goroutine touches the coordinator.
//   - Restore rebuilds a VNE from a stored snapshot: switches, tunnels and
//     ports (at the snapshot's epoch), every machine restored paused from
//     the store, the in-transit log replayed into the ports (vnsnap-log),
//     then every VM resumed together.
//
// # Commands
//
//   - StartLiveCopy: Machine.Save (Live) in a goroutine. Each live pass
//     (QEMU: MIGRATION_PASS n>1 before the pause) is a RoundCopied. At the
//     snapshot point (QEMU: pre-switchover) the hook posts VMPaused and
//     blocks until the loop has executed SetColour and FreezeDisk and
//     reaches CopyFinal for that VM; when the image is complete FinalCopied
//     is posted. The machine stays paused until the ResumeVM the core
//     orders after FinalCopied (for sync-freeze, after the barrier).
//   - PauseVM: Machine.Pause, then VMPaused. CopyFinal{All} of a paused VM:
//     Machine.Save (not Live), which leaves the VM paused.
//   - ProtectMemory: hv.BackgroundSaver.SaveBackground of the paused VM; the
//     executor returns once write protection is armed (QEMU: the migration
//     is active and has saved its first page, so its own stop is behind
//     us), and the ResumeVM the core orders next lets the VM run during the
//     copy.
//   - SetColour: Controller.SetEpoch on the switch of the VM's host.
//   - FreezeDisk: hv.DiskFreezer.FreezeDisk of a disk guest's image to a new
//     overlay VM.eN.FORMAT while the VM is paused (FORMAT is the
//     hypervisor's hv.DiskImages.DiskFormat; QEMU: qcow2 and
//     blockdev-snapshot-sync): the old image is the disk at the snapshot
//     point. realbackend makes no image itself: a disk guest boots on, and
//     restores onto, an image the hypervisor's hv.DiskImages.NewDisk made
//     (QEMU: a qcow2 overlay, qemu-img create -b). Kernel+initramfs guests
//     without a disk have nothing to freeze; the report records that
//     nothing was frozen.
//   - ResumeVM: Machine.Resume (a no-op for a running VM), then VMResumed.
//   - ThrottleVM: never issued in Observed mode (the hypervisor's own
//     auto-converge would do it); ignored.
//   - FlushImage: a goroutine stores the VM's memory-sink image, then
//     ImageFlushed. A machine that saves into a file (hv.FileSaver: QEMU's
//     mapped-ram, Xen's page file) is saved into a tmpfs file (/dev/shm, memory as the RAM
//     budget counts it), stored here as the page image "memory"
//     (store.Writer.ImageAt: fixed blocks, dedup across VMs and snapshots,
//     on every core through the writer's one pages.Ingester shared by all
//     VMs); otherwise the save's RAM buffer is copied into the stream
//     "memory". With the disk sink the file is in Options.Dir and stored
//     in the background after FinalCopied (before the commit, which waits
//     for it), or the stream goes straight into the store. The
//     copy-on-write save always writes the stream. Restore writes a page
//     image back into a tmpfs file and the hypervisor loads it from there
//     (hv.FileRestorer); the label image-file-format names the format. A
//     hypervisor that runs the machine with its memory on that file
//     (hv.RAMFileRestorer: QEMU) gets it unlinked, with a reader of the
//     image's headers from the store, and the write-back runs while it
//     starts; the file is then the machine's memory and goes with it.
//     (QEMU falls back to loading the whole file for an image whose
//     layout it does not take, and logs it: qemubackend's
//     Hypervisor.Logger, Machine.RestoreFallback.)
//   - CancelCopy: cancels the VM's save goroutine (QEMU: migrate_cancel; a
//     VM paused at its snapshot point stays paused) and waits for it to
//     return.
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
// # Progress
//
// SnapshotOptions.OnProgress and Options.OnRestoreProgress receive each
// VM's Progress: the Phase it reached (live-copy with its pass, paused,
// final-copy, background-copy, copied, resumed, flushing, flushed;
// restoring, loaded, resumed), the image bytes written to its sink or read
// from the store, the memory-sink flush, and timestamps. Bytes are counted
// by the writer the save writes into and the reader the restore reads from:
// hv.Machine.Save streams as it copies (QEMU; Xen's xl save -p goes through
// a file first, so its bytes move only at the end), so the hypervisor port
// needs no progress callback. The snapshot's loop emits an event when it steps a
// VM's event or carries out its command, and samples the counters every
// progressInterval; it never waits for the consumer: events go through a
// bounded queue (progressQueue) that merges a VM's newer bytes into its
// pending event of the same phase, and, when full, whatever the phase,
// counting the merges in Progress.Dropped. A goroutine of the queue calls
// the consumer; Snapshot and Restore return after its last call.
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
//   - The hypervisor and image format must be this one's (manifest labels),
//     and the machine type this hypervisor's pinned one.
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
//     FreezeDisk and Restore name them (VM.boot.F, VM.eN.F, or
//     VM.boot-N.F, VM.eN-M.F when an earlier run of the VNE left one,
//     VM.restore-eN-M.F, F the hypervisor's disk format: qcow2 for QEMU):
//     frozen images are this machine's own files, never a path the snapshot chooses. Restore runs on a fresh overlay of
//     that image, under a name no earlier restore used (an earlier restore's
//     overlay may be the image a later snapshot froze).
//   - Extras are read with bounds (layout.json MaxLayoutSize, the VNE file
//     vne.MaxFileSize, the in-transit log 1 GiB).
//
// The QEMU backend builds every option value through qemubackend.EscapeValue
// (commas doubled, control characters refused), so the paths of a state
// directory named "a,server=on" stay single values.
package realbackend
