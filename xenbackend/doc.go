// Package xenbackend runs VMs on Xen behind realbackend's hypervisor port
// (realbackend/hv): PVH domUs booted from a kernel and an initramfs, driven
// through xl from dom0.
//
// # Pieces
//
//   - xl.go: the xl adapter. XL builds one argv per operation (create,
//     list, domid, pause, unpause, destroy, save -c/-p, restore -p, migrate)
//     from validated values and runs it through a Runner, the adapter's own
//     port (ExecRunner runs the binary; tests use a fake that checks the
//     exact argv). The receiver command that xl migrate hands to sh is
//     quoted by ShellCommand.
//
//   - config.go: the domain config we generate (DomainConfig.Render):
//     every value is validated (VNE names, clean absolute paths, canonical
//     unicast MACs, printable command lines) and quoted for libxlu's string
//     syntax; a vif spec cannot escape ',' or '=', so values holding them
//     are refused.
//
//   - machine.go: Hypervisor and Machine. Start is xl create -e of our
//     config (no xl left waiting for the domain: vnsnap destroys its
//     domains itself); Restore is xl restore -p -e of our config (the config
//     inside an image is not trusted) with the image parsed on its way to
//     xl; Pause and Resume count Xen's pauses so that both are idempotent;
//     stop-and-copy Save is xl save -p; Kill destroys the domain and any
//     NAME--migratedaway.
//
//   - live.go: live Save through xl's own live migration to our receiver
//     (see the comment at its top): the receiver process only relays bytes
//     to Save, which speaks the protocol (receiver.go) and keeps the domain
//     suspended at its snapshot point until Resume, as the port wants.
//
//   - receiver.go, stream.go: the receiver's side of xl's migration
//     handshake, and a parser of the stream (xl header, libxl v2, libxc v3)
//     that finds its end from the framing and bounds every length it reads.
//
//   - pagefile.go: the page file (PageFileFormat, "xen-pfn-file-v2", its
//     layout documented there): SaveFile (hv.FileSaver) writes the stream
//     into it at offsets as it arrives, live (ReceiveFile) or from xl save's
//     file; RestoreFile (hv.FileRestorer, FileFormat) checks it, every
//     field untrusted, rebuilds a stream with the pages in one pass and
//     restores from that. realbackend thus stores a Xen VM's memory as a
//     page image, as it does QEMU's.
//
//   - relay.go, offload.go: a domain's vif (vifN.0 in dom0) joined to its
//     vnet switch port: an AF_PACKET socket on the vif with virtio-net
//     headers, the port's "-netdev stream" framing on the other side, and
//     in between the checksum and TCP segmentation offloads netfront leaves
//     to dom0. While a machine is paused the relay drops what it sends and
//     keeps what is sent to it, so a domain that must run a moment to
//     suspend itself (xl save of a paused domain) sends nothing meanwhile.
//
//   - disk.go: a domU's disk, a raw image on a loop device given to the
//     domain through blkback (hv.DiskImages, hv.DiskFreezer): frozen at the
//     snapshot point by a clone under the running image's name (a reflink
//     where the filesystem has them), the running file renamed the next
//     overlay; see the notes there on consistency and on why not
//     device-mapper. A disk needs a kernel beside it (PVH).
package xenbackend
