package qemubackend

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
)

// MinQEMU is the oldest QEMU the backend accepts. QEMU 7.2 (Debian bookworm)
// silently corrupts pre-copy snapshots under TCG: the dirty bitmap misses
// writes made by TCG (fixed by "physmem: Fix migration dirty bitmap coherency
// with TCG memory access"). Install 9.0 or newer with scripts/setup-qemu.sh.
var MinQEMU = QEMUVersion{Major: 9, Minor: 0}

// PreferredMachine is the machine type pinned for all VMs when the installed
// QEMU has it; otherwise Probe picks the newest pc-i440fx it has. A snapshot
// can only be restored with the machine type it was taken with.
const PreferredMachine = "pc-i440fx-10.0"

// QEMUVersion is a QEMU release number.
type QEMUVersion struct {
	Major int `json:"major"`
	Minor int `json:"minor"`
	Micro int `json:"micro"`
}

// String returns "major.minor.micro".
func (v QEMUVersion) String() string { return fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Micro) }

// Less reports whether v is older than w.
func (v QEMUVersion) Less(w QEMUVersion) bool {
	if v.Major != w.Major {
		return v.Major < w.Major
	}
	if v.Minor != w.Minor {
		return v.Minor < w.Minor
	}
	return v.Micro < w.Micro
}

// ErrQEMUTooOld is returned when the installed QEMU is older than MinQEMU.
var ErrQEMUTooOld = errors.New("QEMU too old: need >= 9.0 (7.2 corrupts pre-copy snapshots under TCG); run scripts/setup-qemu.sh")

// ErrNoQEMU is returned when the QEMU binary cannot be found.
var ErrNoQEMU = errors.New("qemu-system-x86_64 not found; run scripts/setup-qemu.sh")

var versionRE = regexp.MustCompile(`QEMU emulator version (\d+)\.(\d+)(?:\.(\d+))?`)

// ParseVersion extracts the version from the output of `qemu-system-x86_64
// --version`.
func ParseVersion(out []byte) (QEMUVersion, error) {
	m := versionRE.FindSubmatch(out)
	if m == nil {
		return QEMUVersion{}, fmt.Errorf("no QEMU version in %q", firstLine(out))
	}
	var v QEMUVersion
	v.Major, _ = strconv.Atoi(string(m[1]))
	v.Minor, _ = strconv.Atoi(string(m[2]))
	if len(m[3]) > 0 {
		v.Micro, _ = strconv.Atoi(string(m[3]))
	}
	return v, nil
}

var i440fxRE = regexp.MustCompile(`(?m)^pc-i440fx-(\d+)\.(\d+)\s`)

// PickMachine returns PreferredMachine if the output of `-machine help` lists
// it, else the newest pc-i440fx-X.Y it lists.
func PickMachine(help []byte) (string, error) {
	best, bestV := "", QEMUVersion{Major: -1}
	for _, m := range i440fxRE.FindAllSubmatch(help, -1) {
		name := "pc-i440fx-" + string(m[1]) + "." + string(m[2])
		if name == PreferredMachine {
			return name, nil
		}
		var v QEMUVersion
		v.Major, _ = strconv.Atoi(string(m[1]))
		v.Minor, _ = strconv.Atoi(string(m[2]))
		if bestV.Less(v) {
			best, bestV = name, v
		}
	}
	if best == "" {
		return "", errors.New("no pc-i440fx machine type in -machine help")
	}
	return best, nil
}

func firstLine(b []byte) []byte {
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		return b[:i]
	}
	return b
}

// Host describes the QEMU installation VMs run with.
type Host struct {
	Binary  string      // path of qemu-system-x86_64
	Version QEMUVersion // checked >= MinQEMU
	Machine string      // machine type pinned for every VM
}

// Probe finds binary (default "qemu-system-x86_64" on PATH), checks its
// version and picks the machine type. It returns ErrNoQEMU or ErrQEMUTooOld
// (wrapped) when the installation is unusable.
func Probe(ctx context.Context, binary string) (*Host, error) {
	if binary == "" {
		binary = "qemu-system-x86_64"
	}
	path, err := exec.LookPath(binary)
	if err != nil {
		return nil, fmt.Errorf("probe %s: %w", binary, ErrNoQEMU)
	}
	out, err := exec.CommandContext(ctx, path, "--version").Output()
	if err != nil {
		return nil, fmt.Errorf("probe %s --version: %w", path, err)
	}
	v, err := ParseVersion(out)
	if err != nil {
		return nil, fmt.Errorf("probe %s: %w", path, err)
	}
	if v.Less(MinQEMU) {
		return nil, fmt.Errorf("probe %s: found %s: %w", path, v, ErrQEMUTooOld)
	}
	help, err := exec.CommandContext(ctx, path, "-machine", "help").Output()
	if err != nil {
		return nil, fmt.Errorf("probe %s -machine help: %w", path, err)
	}
	m, err := PickMachine(help)
	if err != nil {
		return nil, fmt.Errorf("probe %s: %w", path, err)
	}
	return &Host{Binary: path, Version: v, Machine: m}, nil
}
