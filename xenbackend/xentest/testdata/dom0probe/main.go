// Command dom0probe is the static test binary TestXenBoots runs in dom0: it
// shows that a Go program there sees dom0's privileges and can drive xl.
package main

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
)

func main() {
	caps, err := os.ReadFile("/proc/xen/capabilities")
	if err != nil {
		fmt.Println("VNSNAP-XEN-FAIL dom0probe:", err)
		os.Exit(1)
	}
	out, err := exec.Command("/usr/lib/xen-4.17/bin/xl", "list").Output()
	if err != nil {
		fmt.Println("VNSNAP-XEN-FAIL dom0probe: xl list:", err)
		os.Exit(1)
	}
	doms := strings.Count(string(out), "\n") - 1 // less the header
	fmt.Printf("VNSNAP-T-PROBE caps=%s domains=%d\n", strings.TrimSpace(string(caps)), doms)
}
