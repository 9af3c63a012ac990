package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/vnsnap/vnsnap/qemubackend"
	"github.com/vnsnap/vnsnap/realbackend"
	"github.com/vnsnap/vnsnap/vne"
	"github.com/vnsnap/vnsnap/xenbackend"
)

// backendFlags are the flags that pick and reach a hypervisor.
type backendFlags struct {
	qemu string // qemu-system-x86_64 (default: on PATH)
	xl   string // xl (default xenbackend.DefaultXL)
}

// hypervisorFor returns the backend that runs v's VMs, as its hypervisor
// field says: QEMU (the qemu binary given, or the one on PATH), or Xen
// through xl, which then keeps its runtime files in xenDir (created) and
// runs this very binary's xen-receive as its live-snapshot receiver. QEMU's
// diagnostics (a restore not on its image's file) go to log.
func hypervisorFor(ctx context.Context, v *vne.VNE, f backendFlags, xenDir string, log *slog.Logger) (realbackend.Hypervisor, error) {
	switch v.Hypervisor {
	case "", "qemu":
		host, err := qemubackend.Probe(ctx, f.qemu)
		if err != nil {
			return nil, err
		}
		h := qemubackend.NewHypervisor(host)
		h.Logger = log
		return h, nil
	case "xen":
		xl := f.xl
		if xl == "" {
			xl = xenbackend.DefaultXL
		}
		r := xenbackend.ExecRunner{Path: xl}
		version, err := xenbackend.Probe(ctx, r)
		if err != nil {
			return nil, fmt.Errorf("%s: hypervisor: xen: %w (run vnsnap in a Xen dom0, as root; --xl names xl)", v.File, err)
		}
		self, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("hypervisor: xen: the live-snapshot receiver is this binary: %w", err)
		}
		if err := os.MkdirAll(xenDir, 0o755); err != nil {
			return nil, fmt.Errorf("hypervisor: xen: %w", err)
		}
		return xenbackend.New(xenbackend.Config{Runner: r, Dir: xenDir, Receiver: []string{self, "xen-receive"}, Version: version})
	default:
		// vne.Parse refuses any other value: a VNE built by hand.
		return nil, fmt.Errorf("%s: hypervisor: %v", v.File, vne.CheckHypervisor(v.Hypervisor))
	}
}

// runXenReceive is the command xl migrate runs for a live snapshot of a Xen
// VM (xenbackend.RelayReceiver): the process's stdin and stdout are xl's
// pipes, handed to the supervisor's save, which listens at SOCKET.
func runXenReceive(args []string, _, stderr io.Writer) error {
	if len(args) != 1 {
		fmt.Fprintln(stderr, "usage: vnsnap xen-receive SOCKET (run by xl migrate during a snapshot)")
		return errUsage
	}
	return xenbackend.RelayReceiver(args[0], os.Stdin, os.Stdout)
}
