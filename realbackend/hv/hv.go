// Package hv is realbackend's hypervisor port: the few operations the real
// backend needs from a hypervisor to run a VNE and snapshot it, defined by
// their consumer (realbackend) and implemented by each hypervisor backend
// (qemubackend, xenbackend). It imports only the standard
// library, so a backend implements it without importing realbackend, and
// realbackend never imports a backend: cmd/vnsnap picks one.
//
// The port is small: Hypervisor starts or restores a Machine; a Machine
// pauses, resumes, saves and dies. What only some hypervisors can do is an
// optional capability found by type assertion on the Machine:
// BackgroundSaver (copy-on-write save), DiskFreezer (a disk image frozen at
// the snapshot point; its Hypervisor is a DiskImages) and Heartbeats (a
// console whose heartbeat lines measure the pause from outside).
//
// # Contract
//
// A Machine never resumes on its own (core/doc.go, rule 4): after a save,
// after a failed or cancelled save, after a restore, a machine that was
// paused stays paused until the caller calls Resume. Pause and Resume are
// idempotent: pausing a paused machine and resuming a running one change
// nothing and succeed.
package hv

import (
	"context"
	"io"
	"os"
	"time"
)

// Info identifies a hypervisor and the images it writes. A snapshot records
// it, and a restore refuses an image whose hypervisor or image format is not
// this one's.
type Info struct {
	// Name is the hypervisor's name as a VNE file gives it ("qemu", "xen").
	Name string
	// Version is the hypervisor's version ("10.0.2").
	Version string
	// ImageFormat names the format of the images Save writes and Restore
	// reads ("qemu-migration-v3").
	ImageFormat string
	// Machine is the machine type the hypervisor pins for every VM
	// ("pc-i440fx-10.0"); empty for a hypervisor without machine types.
	Machine string
}

// MachineSpec describes one VM to start or restore.
type MachineSpec struct {
	Name      string // used in errors and file names
	MemoryMiB int
	VCPUs     int
	// Machine is the machine type; empty means Info.Machine.
	Machine string
	// Kernel, Initrd and Append boot a kernel directly; Disk, when set, is
	// the disk image the VM runs on (both may be set).
	Kernel, Initrd, Append string
	Disk                   string
	// NetSocket is the unix stream socket of the VM's switch port: the VM's
	// one NIC sends and receives its frames there. Empty: no NIC.
	NetSocket string
	MAC       string
	// ConsoleLog, when set, receives every console line.
	ConsoleLog io.Writer
}

// Hypervisor starts machines.
type Hypervisor interface {
	// Info identifies the hypervisor.
	Info() Info
	// Start boots a machine from spec; it runs when Start returns.
	Start(ctx context.Context, spec MachineSpec) (Machine, error)
	// Restore starts a machine from spec (that of the saved machine) and
	// loads the image read from r, which Save wrote; it reads r as it
	// loads (the bytes read are the restore's progress). The machine is PAUSED
	// when Restore returns; the caller resumes it. On error nothing is left
	// running.
	Restore(ctx context.Context, spec MachineSpec, r io.Reader) (Machine, error)
}

// Machine is one running (or paused) VM.
type Machine interface {
	// Pause stops the machine's vCPUs; a paused machine stays paused.
	Pause(ctx context.Context) error
	// Resume lets the machine run, whatever pause it is in (paused by
	// Pause, at a snapshot point, after a save or a restore); a running
	// machine is left alone. It returns once the machine runs.
	Resume(ctx context.Context) error
	// Save writes the machine's memory and device state to w (see
	// SaveOptions) and returns when the image is complete. It should
	// write the image as it copies, not at the end: the bytes written to w
	// so far are the save's progress that realbackend shows people, so the
	// port needs no progress callback. (A hypervisor that saves to a file
	// first, as xl save does, shows no progress until it copies that file
	// to w.) The machine is
	// paused then, and stays paused until Resume: Save never resumes it,
	// nor does a failed or cancelled Save resume a machine it had paused.
	Save(ctx context.Context, w io.Writer, o SaveOptions) (SaveStats, error)
	// Kill stops the machine for good and removes its runtime files. It is
	// safe to call more than once.
	Kill()
}

// SaveOptions say how Save copies a machine.
type SaveOptions struct {
	// Live copies memory in passes while the machine runs, then pauses it
	// for the last dirty pages and the device state (the snapshot point).
	// Without Live the machine is paused first (if it runs) and copied
	// whole: the snapshot point is at the start.
	Live bool
	// OnPass, if set, is called when live pass n (from 1) has been copied
	// and the next one begins, while the machine still runs; the copy made
	// while the machine is paused is not a pass. It is called from the
	// goroutine running Save.
	OnPass func(n int, at time.Time)
	// AtSnapshotPoint, if set, is called while the machine is paused at its
	// snapshot point, before the rest of the image is written; Save waits
	// for it to return. An error aborts the save.
	AtSnapshotPoint func(ctx context.Context) error
	// Progress, if set, is told of the bytes a SaveFile moves as it moves
	// them (n since the last call; pages sent again in a later pass
	// count again), from the goroutine running SaveFile or one of the
	// hypervisor's own. A FileSaver whose hypervisor writes the file
	// itself may never call it: the caller watches the file grow then, and
	// a page written again in a later pass does not grow it. Save never
	// calls it: its bytes pass through its writer.
	Progress func(n int64)
}

// SaveStats are the hypervisor-neutral figures of one save.
type SaveStats struct {
	// Bytes is the size of the image written to w.
	Bytes int64
	// Passes is the number of passes over memory, the final one included.
	Passes int
	// MemoryCopied is the guest memory sent, as the hypervisor counts it
	// (pages with content and pages found empty).
	MemoryCopied int64
	// Downtime is the hypervisor's own figure of the pause (zero when it
	// reports none).
	Downtime time.Duration
	// Total is the hypervisor's own duration of the save.
	Total time.Duration
	// LiveBytes and LiveTime are the memory a live save had sent, and the
	// time it took, when the machine paused at its snapshot point: the
	// live passes (zero when the hypervisor does not say).
	LiveBytes int64
	LiveTime  time.Duration
}

// BackgroundSaver is a machine that can save copy-on-write: the snapshot
// point is at the start and the machine may run during the copy.
type BackgroundSaver interface {
	// SaveBackground saves the paused machine into w. It calls armed once
	// the device state is saved and write protection is armed (the
	// snapshot point is behind it): from then on the caller may resume the
	// machine, which SaveBackground never does itself. It returns when the
	// image is complete; if it fails before armed was called, armed is
	// never called.
	SaveBackground(ctx context.Context, w io.Writer, armed func()) (SaveStats, error)
}

// DiskImages is a hypervisor that runs disk guests (MachineSpec.Disk). It
// names the format of the images its machines run on and makes the image a
// machine runs on from one that must not change. realbackend never writes
// an image itself: a VM boots on NewDisk of the user's image, restores on
// NewDisk of the image frozen at the snapshot point, and DiskFreezer
// freezes it.
type DiskImages interface {
	// DiskFormat is the images' format, also their file extension
	// ("qcow2"); DiskFreezer's overlays are of this format.
	DiskFormat() string
	// NewDisk creates an image at path, which must not exist, for a
	// machine to run on and write, holding base's contents; base (an
	// absolute path) is never written.
	NewDisk(ctx context.Context, base, path string) error
}

// DiskFreezer is a machine whose disk can be frozen while it is paused.
type DiskFreezer interface {
	// FreezeDisk sends the machine's writes, from now on, to a new image
	// at overlay (created on top of the current one), so that the current
	// image stays the disk as it is at this moment. It returns the frozen
	// image's path. A machine without disk returns "".
	FreezeDisk(ctx context.Context, overlay string) (frozen string, err error)
}

// Heartbeat is one heartbeat line of a guest console, stamped on arrival.
type Heartbeat struct {
	At time.Time
	N  uint64 // the guest's counter
}

// HeartbeatGap is the largest gap between consecutive heartbeats in a
// window: the pause seen from outside.
type HeartbeatGap struct {
	Gap    time.Duration // largest gap; 0 with fewer than two heartbeats
	Before uint64        // counter of the heartbeat that opened the gap
	After  uint64        // counter of the heartbeat that closed it
	At     time.Time     // arrival of the heartbeat that opened the gap
	Count  int           // heartbeats in the window
}

// HeartbeatSilence is how long a pause measurement waits, with no console
// line at all, for the first heartbeat after a resume. A running guest
// prints every few tens of milliseconds of its time, so only a guest that
// does not run falls silent this long; the wait ends at the first
// heartbeat, so on an idle host it costs a few milliseconds.
const HeartbeatSilence = 10 * time.Second

// Heartbeats is a machine whose console carries the guest's heartbeat
// lines, stamped with the host clock as they arrive.
type Heartbeats interface {
	// LastHeartbeat returns the last heartbeat that arrived before t.
	LastHeartbeat(t time.Time) (Heartbeat, bool)
	// WaitHeartbeatAfter waits for a heartbeat that arrives after t; it
	// gives up after silence without any console line.
	WaitHeartbeatAfter(ctx context.Context, t time.Time, silence time.Duration) (Heartbeat, error)
	// MaxHeartbeatGap returns the largest gap between heartbeats that
	// arrived in [from, to].
	MaxHeartbeatGap(from, to time.Time) HeartbeatGap
}

// FileSaver is a machine that can save into a regular file in which its
// memory sits at fixed, page-aligned offsets (QEMU's mapped-ram): such a
// file is kept by a store as a page image (fixed blocks, deduplicated, zero
// pages free) rather than as a stream. The file's format is FileFormat of
// the machine's hypervisor (a FileRestorer).
type FileSaver interface {
	// SaveFile is Save into f, an empty regular file open for writing,
	// which the hypervisor writes at offsets itself; SaveStats.Bytes is
	// the file's size. The contract is Save's: the machine is paused
	// when it returns and stays paused.
	SaveFile(ctx context.Context, f *os.File, o SaveOptions) (SaveStats, error)
}

// FileRestorer is a hypervisor that restores machines from the files its
// FileSavers write.
type FileRestorer interface {
	// FileFormat names the format of those files ("qemu-mapped-ram-v1").
	FileFormat() string
	// RestoreFile is Restore from such a file, which the hypervisor reads
	// at offsets itself; the machine is PAUSED when it returns. open is
	// called from a goroutine of its own while the machine starts (so the
	// caller can write the file meanwhile) and returns the file, which the
	// caller closes after RestoreFile returns; an error from open is
	// returned as it is, with nothing left running.
	RestoreFile(ctx context.Context, spec MachineSpec, open func() (*os.File, error)) (Machine, error)
}

// RAMFileRestorer is a FileRestorer that can run a restored machine with
// its memory on the image's file itself, so that the pages are written
// once (by the caller, from a store) and never copied again by the
// hypervisor.
type RAMFileRestorer interface {
	// RestoreRAMFile is RestoreFile of img: the hypervisor reads the
	// image's layout through img.Image, starts the machine with its
	// memory mapped from img.File while img.Fill writes the image into
	// it, and loads the rest once Fill is done. The machine is PAUSED
	// when it returns; an error from Fill is returned as it is, with
	// nothing left running. The caller closes img.File after
	// RestoreRAMFile returns; the hypervisor keeps its own descriptor for
	// the machine's life.
	RestoreRAMFile(ctx context.Context, spec MachineSpec, img RAMImage) (Machine, error)
}

// RAMImage is an image to restore with the machine's memory on its file
// (RAMFileRestorer).
type RAMImage struct {
	// File is the empty regular file, open read-write, the image is
	// written into (best unlinked, in tmpfs: its pages are then the
	// machine's memory, freed with it).
	File *os.File
	// Image reads the image before File holds it, and Size is its length.
	Image io.ReaderAt
	Size  int64
	// Fill writes the image into File (called from a goroutine of its own).
	Fill func() error
}
