package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/vnsnap/vnsnap/cluster/certs"
)

// runCerts creates a cluster's CA and certificates: vnsnap certs --dir D
// --hosts a,b=10.0.0.2,c.
func runCerts(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("certs", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", "", "directory for the CA and the certificates (must not hold a CA)")
	hosts := fs.String("hosts", "", "agent hosts, comma-separated: NAME or NAME=IP[+IP...] (the IPs the agent listens on)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: vnsnap certs --dir D --hosts a,b,c")
		fs.PrintDefaults()
	}
	if err := noArgs(fs, args); err != nil {
		return err
	}
	if *dir == "" || *hosts == "" {
		fs.Usage()
		return errors.New("--dir and --hosts are required")
	}
	hs, err := certs.ParseHosts(*hosts)
	if err != nil {
		return err
	}
	if err := certs.Create(*dir, hs, time.Now()); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: CA %s, coordinator %s", *dir, certs.CAFile, certs.CoordinatorName+".pem")
	for _, h := range hs {
		fmt.Fprintf(stdout, ", %s.pem", certs.AgentName(h.Name))
	}
	fmt.Fprintln(stdout)
	return nil
}
