package calib

import (
	_ "embed"
	"fmt"
)

// qemuTCG is the calibration shipped with vnsnap: measured by `vnsnap
// calibrate` on the project's build machine (QEMU with TCG; the machine and
// versions are in the file).
//
//go:embed qemu-tcg.json
var qemuTCG []byte

// Default returns the shipped calibration.
func Default() (*File, error) {
	f, err := Parse(qemuTCG)
	if err != nil {
		return nil, fmt.Errorf("calibration qemu-tcg.json (shipped): %w", err)
	}
	return f, nil
}
