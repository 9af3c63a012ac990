// Command vnetd runs one vnet switch on a host: ports for the local QEMU VMs,
// UDP tunnels to the switches on other hosts, a frame log, and the control
// socket a snapshot coordinator drives (see package vnet for the protocols).
//
// Usage:
//
//	vnetd -config switch.json
//
// The configuration is a JSON object:
//
//	{
//	  "id": 1,
//	  "algorithm": "vnsnap",
//	  "tunnel_addr": "0.0.0.0:4790",
//	  "frame_log": "/var/lib/vnsnap/sw1.vnlog",
//	  "control": "unix:/run/vnsnap/sw1.ctl",
//	  "max_macs": 16384,
//	  "ports": [{"vm": 0, "name": "vm0", "path": "/run/vnsnap/vm0.sock"}],
//	  "tunnels": [{"name": "host2", "peer": "10.0.0.2:4790"}]
//	}
//
// "control" is "unix:PATH" or "tcp:HOST:PORT" (no authentication: trusted
// networks only). "max_macs" bounds the MAC learning table (0: vnet's
// default), whose addresses come from frames that peers send. vnetd runs until SIGINT or SIGTERM, then closes the switch
// and flushes the frame log.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/vnsnap/vnsnap/core"
	"github.com/vnsnap/vnsnap/vnet"
)

type config struct {
	ID         uint16 `json:"id"`
	Algorithm  string `json:"algorithm"`
	TunnelAddr string `json:"tunnel_addr"`
	FrameLog   string `json:"frame_log"`
	Control    string `json:"control"`
	MaxMACs    int    `json:"max_macs"`
	Ports      []struct {
		VM   core.VMID `json:"vm"`
		Name string    `json:"name"`
		Path string    `json:"path"`
	} `json:"ports"`
	Tunnels []struct {
		Name string `json:"name"`
		Peer string `json:"peer"`
	} `json:"tunnels"`
}

func main() {
	path := flag.String("config", "", "switch configuration (JSON)")
	debug := flag.Bool("debug", false, "log every drop")
	flag.Parse()
	level := slog.LevelInfo
	if *debug {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	if err := run(*path, log); err != nil {
		fmt.Fprintln(os.Stderr, "vnetd:", err)
		os.Exit(1)
	}
}

func run(path string, log *slog.Logger) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	var cfg config
	if err := json.Unmarshal(raw, &cfg); err != nil {
		return fmt.Errorf("parse config %s: %w", path, err)
	}
	alg := core.VNsnap
	if cfg.Algorithm != "" {
		if alg, err = core.ParseAlgorithm(cfg.Algorithm); err != nil {
			return fmt.Errorf("config %s: %w", path, err)
		}
	}
	scfg := vnet.Config{ID: cfg.ID, Algorithm: alg, TunnelAddr: cfg.TunnelAddr, MaxMACs: cfg.MaxMACs, Logger: log}
	if cfg.FrameLog != "" {
		f, err := os.Create(cfg.FrameLog)
		if err != nil {
			return fmt.Errorf("create frame log: %w", err)
		}
		defer f.Close()
		scfg.FrameLog = f
	}
	sw, err := vnet.New(scfg)
	if err != nil {
		return err
	}
	defer sw.Close()
	for _, p := range cfg.Ports {
		if err := sw.AddPort(vnet.PortConfig{VM: p.VM, Name: p.Name, Path: p.Path}); err != nil {
			return err
		}
	}
	for _, t := range cfg.Tunnels {
		peer, err := netip.ParseAddrPort(t.Peer)
		if err != nil {
			return fmt.Errorf("tunnel %s: %w", t.Name, err)
		}
		if err := sw.AddTunnel(t.Name, peer); err != nil {
			return err
		}
	}
	served := make(chan error, 1)
	if cfg.Control != "" {
		network, addr, ok := strings.Cut(cfg.Control, ":")
		if !ok || (network != "unix" && network != "tcp") {
			return fmt.Errorf("control %q: want unix:PATH or tcp:HOST:PORT", cfg.Control)
		}
		if network == "unix" {
			os.Remove(addr) // a stale socket from an earlier run
		}
		l, err := net.Listen(network, addr)
		if err != nil {
			return fmt.Errorf("control: %w", err)
		}
		go func() { served <- sw.ServeControl(l) }()
	}
	log.Info("vnetd running", "id", cfg.ID, "tunnel", sw.TunnelAddr(), "ports", len(cfg.Ports), "tunnels", len(cfg.Tunnels))
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	select {
	case s := <-sig:
		log.Info("stopping", "signal", s)
	case err := <-served:
		return err
	}
	return sw.Close()
}
