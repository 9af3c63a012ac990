// Command vnsnap takes consistent live snapshots of virtual networked
// environments, and simulates them.
//
//	vnsnap sim [flags]         simulate one VNE snapshot (and restore)
//	vnsnap up VNE.yaml         boot a VNE of QEMU VMs and supervise it
//	vnsnap snapshot NAME       snapshot the running VNE into the store
//	vnsnap restore NAME        replace the running VNE by a snapshot
//	vnsnap verify NAME         check a stored snapshot
//	vnsnap ls                  list stored snapshots
//	vnsnap rm NAME...          remove stored snapshots
//	vnsnap gc                  free unreferenced chunks and crashed writers' debris
//	vnsnap down                stop the running VNE
//	vnsnap xen-receive SOCKET  xl migrate's receiver command for a Xen live snapshot
//	vnsnap agent [flags]       serve one host of a cluster to its coordinator
//	vnsnap certs [flags]       create a cluster's CA and certificates
//	vnsnap version             print the version
//
// Run `vnsnap CMD -h` for a command's flags.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"

	"github.com/vnsnap/vnsnap/results"
)

// command is one subcommand: run gets the arguments after its name.
type command struct {
	summary string
	run     func(args []string, stdout, stderr io.Writer) error
}

func commands() map[string]command {
	return map[string]command{
		"sim":         {"simulate one VNE snapshot and print a summary", runSim},
		"calibrate":   {"measure the simulator's calibration on this machine's QEMU", runCalibrate},
		"experiment":  {"run the paper's experiments (vnsnap experiment list)", runExperiment},
		"version":     {"print the version", runVersion},
		"up":          {"boot a VNE of QEMU or Xen VMs and supervise it (foreground)", runUp},
		"snapshot":    {"take a consistent snapshot of the running VNE", runSnapshot},
		"restore":     {"replace the running VNE by a stored snapshot", runRestore},
		"verify":      {"check every byte of a stored snapshot", runVerify},
		"ls":          {"list the stored snapshots", runLs},
		"rm":          {"remove stored snapshots", runRm},
		"gc":          {"free chunks no snapshot uses, and debris of crashed writers", runGc},
		"down":        {"stop the running VNE", runDown},
		"xen-receive": {"(run by xl migrate) relay a Xen live snapshot's stream to the supervisor", runXenReceive},
		"agent":       {"serve one host of a cluster to its coordinator (mutual TLS)", runAgent},
		"certs":       {"create a cluster's CA and certificates", runCerts},
	}
}

// errUsage marks an error already explained by a flag set's own message.
var errUsage = errors.New("usage")

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	cmds := commands()
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stderr, cmds)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	c, ok := cmds[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "vnsnap: unknown command %q\n", args[0])
		usage(stderr, cmds)
		return 2
	}
	if err := c.run(args[1:], stdout, stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		if !errors.Is(err, errUsage) {
			fmt.Fprintf(stderr, "vnsnap %s: %v\n", args[0], err)
		}
		var ee exitError
		if errors.As(err, &ee) {
			return ee.code
		}
		return 2
	}
	return 0
}

// exitError is a command's failure with its own exit status: 1 for a run
// that went wrong (a snapshot aborted, a restore failed), where 2 means the
// command was used wrongly.
type exitError struct {
	code int
	err  error
}

func (e exitError) Error() string { return e.err.Error() }
func (e exitError) Unwrap() error { return e.err }

func usage(w io.Writer, cmds map[string]command) {
	fmt.Fprintln(w, "usage: vnsnap COMMAND [flags]\n\ncommands:")
	names := make([]string, 0, len(cmds))
	for n := range cmds {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-12s %s\n", n, cmds[n].summary)
	}
}

func runVersion(args []string, stdout, stderr io.Writer) error {
	fmt.Fprintln(stdout, "vnsnap", results.Version())
	return nil
}
