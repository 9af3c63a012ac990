package main

import (
	"errors"
	"fmt"

	"github.com/vnsnap/vnsnap/cluster/certs"
	"github.com/vnsnap/vnsnap/cluster/remote"
	"github.com/vnsnap/vnsnap/vne"
)

// connectAgents dials the agent of every host of a clustered VNE
// (hosts[].agent) as the coordinator whose certificate is in certDir
// (vnsnap certs). The connections are made at the first call; a refused
// certificate fails it.
func connectAgents(v *vne.VNE, certDir string) ([]*remote.Host, error) {
	if certDir == "" {
		return nil, fmt.Errorf("%s: its hosts name agents (cluster mode): --certs DIR with ca.pem and the coordinator's certificate is required", v.File)
	}
	id, err := certs.Load(certDir, certs.CoordinatorName)
	if err != nil {
		return nil, fmt.Errorf("--certs: %w", err)
	}
	var hosts []*remote.Host
	for i, h := range v.Hosts {
		rh, err := remote.Connect(h.Agent, h.Name, id)
		if err != nil {
			closeAgents(hosts)
			return nil, fmt.Errorf("%s: hosts[%d] (%s).agent: %w", v.File, i, h.Name, err)
		}
		hosts = append(hosts, rh)
	}
	return hosts, nil
}

// closeAgents closes the connections to the agents.
func closeAgents(hosts []*remote.Host) error {
	var errs []error
	for _, h := range hosts {
		errs = append(errs, h.Close())
	}
	return errors.Join(errs...)
}
