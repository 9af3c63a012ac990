package main

import (
	"context"
	"fmt"

	"github.com/vnsnap/vnsnap/qemubackend"
	"github.com/vnsnap/vnsnap/realbackend"
	"github.com/vnsnap/vnsnap/vne"
)

// hypervisorFor returns the backend that runs v's VMs, as its hypervisor
// field says: QEMU (the qemu binary given, or the one on PATH) or Xen, which
// this version does not have yet.
func hypervisorFor(ctx context.Context, v *vne.VNE, qemu string) (realbackend.Hypervisor, error) {
	switch v.Hypervisor {
	case "", "qemu":
		host, err := qemubackend.Probe(ctx, qemu)
		if err != nil {
			return nil, err
		}
		return qemubackend.NewHypervisor(host), nil
	case "xen":
		return nil, fmt.Errorf("%s: hypervisor: xen is not built yet in this version of vnsnap (the Xen backend is in progress); use hypervisor: qemu", v.File)
	default:
		// vne.Parse refuses any other value: a VNE built by hand.
		return nil, fmt.Errorf("%s: hypervisor: %v", v.File, vne.CheckHypervisor(v.Hypervisor))
	}
}
