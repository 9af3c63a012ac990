package realbackend

import (
	"errors"
	"fmt"
	"strings"

	"github.com/vnsnap/vnsnap/realbackend/hv"
)

// Hypervisor is the port through which realbackend runs VMs (package hv
// defines it and its optional capabilities, so that a backend implements
// it without importing realbackend). realbackend imports no hypervisor
// backend: its caller (cmd/vnsnap) picks one.
type Hypervisor = hv.Hypervisor

// Machine is one VM behind the port.
type Machine = hv.Machine

// Manifest labels that say which hypervisor made a snapshot's images.
const (
	LabelHypervisor        = "hypervisor"
	LabelHypervisorVersion = "hypervisor-version"
	LabelImageFormat       = "image-format"
)

// legacyQEMUFormat is the image format of snapshots written before the
// manifest named its hypervisor: vnsnap ran only on QEMU then, and labelled
// the QEMU version as "qemu".
const legacyQEMUFormat = "qemu-migration-v3"

func hypervisorLabels(in hv.Info) map[string]string {
	return map[string]string{
		LabelHypervisor: in.Name, LabelHypervisorVersion: in.Version, LabelImageFormat: in.ImageFormat,
	}
}

// ErrWrongHypervisor is returned (wrapped) by Restore when a snapshot's
// images were made by another hypervisor, or are in an image format this
// one does not read.
var ErrWrongHypervisor = errors.New("snapshot made by another hypervisor")

// checkHypervisor refuses a snapshot whose manifest labels name another
// hypervisor or image format than in's. The error names the snapshot, its
// VMs and both hypervisors.
func checkHypervisor(snapshot string, labels map[string]string, vms []VMLayout, in hv.Info) error {
	name, version, format := labels[LabelHypervisor], labels[LabelHypervisorVersion], labels[LabelImageFormat]
	if name == "" && format == "" && labels["qemu"] != "" {
		name, version, format = "qemu", labels["qemu"], legacyQEMUFormat
	}
	if name == in.Name && format == in.ImageFormat {
		return nil
	}
	names := make([]string, len(vms))
	for i, vm := range vms {
		names[i] = vm.Name
	}
	made := "an unknown hypervisor"
	if name != "" {
		made = strings.TrimSpace(name + " " + version)
	}
	if format == "" {
		format = "unknown"
	}
	return fmt.Errorf("%w: snapshot %s (VMs %s) was made by %s (image format %s); this backend is %s %s (image format %s)",
		ErrWrongHypervisor, snapshot, strings.Join(names, ", "), made, format, in.Name, in.Version, in.ImageFormat)
}
