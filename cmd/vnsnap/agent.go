package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/vnsnap/vnsnap/cluster/agent"
	"github.com/vnsnap/vnsnap/cluster/certs"
	"github.com/vnsnap/vnsnap/vne"
)

// runAgent serves one host's agent until SIGINT or SIGTERM: vnsnap agent
// --listen ADDR --certs D --state DIR --host NAME.
func runAgent(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "", "address to serve the coordinator on (host:port)")
	certDir := fs.String("certs", "", "certificate directory (vnsnap certs): ca.pem and agent-HOST.pem")
	state := fs.String("state", "", "state directory: sockets, consoles, snapshots, received images")
	host := fs.String("host", "", "this host's name, as the VNE file and the certificate name it (default: the short host name)")
	images := fs.String("images", "", "comma-separated directories kernels and initramfs images may come from")
	hyp := fs.String("hypervisor", "qemu", "hypervisor backend: qemu or xen")
	var bf backendFlags
	fs.StringVar(&bf.qemu, "qemu", "", "qemu-system-x86_64 binary (default: on PATH)")
	fs.StringVar(&bf.xl, "xl", "", "xl binary for --hypervisor xen (default: xenbackend's)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: vnsnap agent --listen ADDR --certs D --state DIR [--host NAME] [--images DIRS]")
		fs.PrintDefaults()
	}
	if err := noArgs(fs, args); err != nil {
		return err
	}
	if *listen == "" || *certDir == "" || *state == "" {
		fs.Usage()
		return errors.New("--listen, --certs and --state are required")
	}
	if *host == "" {
		h, err := os.Hostname()
		if err != nil {
			return err
		}
		*host, _, _ = strings.Cut(h, ".")
	}
	if err := vne.CheckName("host", *host); err != nil {
		return fmt.Errorf("--host: %w", err)
	}
	stateDir, err := filepath.Abs(*state)
	if err != nil {
		return err
	}
	var dirs []string
	if *images != "" {
		for _, d := range strings.Split(*images, ",") {
			if err := vne.CheckPath(d); err != nil {
				return fmt.Errorf("--images: %w", err)
			}
			dirs = append(dirs, d)
		}
	}
	id, err := certs.Load(*certDir, certs.AgentName(*host))
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(stderr, nil))
	h, err := hypervisorFor(ctx, &vne.VNE{File: "--hypervisor", Hypervisor: *hyp}, bf, filepath.Join(stateDir, "xen"), log)
	if err != nil {
		return err
	}
	a, removed, err := agent.New(agent.Config{Host: *host, State: stateDir, Hypervisor: h, ImageDirs: dirs, Logger: log})
	if err != nil {
		return err
	}
	defer a.Close()
	for _, d := range removed {
		log.Info("removed a partial snapshot left by a crash", "dir", d)
	}
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	s := agent.NewServer(a, certs.ServerConfig(id))
	fmt.Fprintf(stdout, "vnsnap agent %s: listening on %s\n", *host, l.Addr())
	go func() {
		<-ctx.Done()
		s.GracefulStop()
	}()
	if err := s.Serve(l); err != nil {
		return exitError{1, err}
	}
	return nil
}
