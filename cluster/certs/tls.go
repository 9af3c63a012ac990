package certs

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
)

// ErrRole is returned (wrapped) when a peer's certificate, though signed by
// the CA, has another role than the one required.
var ErrRole = errors.New("certs: peer certificate has the wrong role")

// Identity is one party's certificate and the CA it trusts.
type Identity struct {
	Cert tls.Certificate
	CA   *x509.CertPool
}

// Load reads the CA certificate and the certificate and key named stem
// (CoordinatorName, AgentName(host)) from dir.
func Load(dir, stem string) (Identity, error) {
	caPEM, err := os.ReadFile(filepath.Join(dir, CAFile))
	if err != nil {
		return Identity{}, fmt.Errorf("certs: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return Identity{}, fmt.Errorf("certs: %s/%s: no certificate", dir, CAFile)
	}
	c, err := tls.LoadX509KeyPair(CertFile(dir, stem), KeyFile(dir, stem))
	if err != nil {
		return Identity{}, fmt.Errorf("certs: %s: %w", stem, err)
	}
	return Identity{Cert: c, CA: pool}, nil
}

// RoleOf returns the role a verified certificate names.
func RoleOf(c *x509.Certificate) Role {
	if len(c.Subject.OrganizationalUnit) != 1 {
		return ""
	}
	return Role(c.Subject.OrganizationalUnit[0])
}

// requireRole checks the verified peer certificate's role.
func requireRole(cs tls.ConnectionState, roles ...Role) error {
	if len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return errors.New("certs: peer certificate not verified")
	}
	leaf := cs.VerifiedChains[0][0]
	if r := RoleOf(leaf); !slices.Contains(roles, r) {
		return fmt.Errorf("%w: %q is %q, want %v", ErrRole, leaf.Subject.CommonName, r, roles)
	}
	return nil
}

// ServerConfig is an agent's TLS configuration: TLS 1.3 only, a client
// certificate signed by id.CA is required, of role coordinator or agent
// (the service restricts what an agent may call).
func ServerConfig(id Identity) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		MaxVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{id.Cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    id.CA,
		VerifyConnection: func(cs tls.ConnectionState) error {
			return requireRole(cs, Coordinator, Agent)
		},
	}
}

// ClientConfig is the TLS configuration to call the agent of host: TLS 1.3
// only, its certificate must be signed by id.CA, name host (or the address
// dialled, when host is an address) and have the agent role.
func ClientConfig(id Identity, host string) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		MaxVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{id.Cert},
		RootCAs:      id.CA,
		ServerName:   host,
		VerifyConnection: func(cs tls.ConnectionState) error {
			return requireRole(cs, Agent)
		},
	}
}
