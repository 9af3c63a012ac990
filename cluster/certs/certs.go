// Package certs makes and loads the certificates of a vnsnap cluster: one
// certificate authority, one coordinator certificate and one certificate per
// agent host, all ECDSA P-256, and the mutual-TLS configurations (TLS 1.3
// only) that let an agent accept only a coordinator its CA signed and a
// coordinator only agents its CA signed. A certificate's role (coordinator
// or agent) is its subject's organizational unit; both sides check it, so an
// agent's certificate never passes for a coordinator's.
package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/vnsnap/vnsnap/vne"
)

// Role is what a certificate may do in a cluster.
type Role string

const (
	// Coordinator is the role of the coordinator's client certificate.
	Coordinator Role = "coordinator"
	// Agent is the role of an agent's certificate: it serves, and is a
	// client of other agents for image transfers.
	Agent Role = "agent"
)

// Validity is how long certificates made by Create are valid.
const Validity = 5 * 365 * 24 * time.Hour

// File names in a certificate directory.
const (
	CAFile     = "ca.pem"
	CAKeyFile  = "ca-key.pem"
	coordName  = "coordinator"
	agentPrefx = "agent-"
)

// Host is one agent host: its name (a VNE host name) and the addresses
// its certificate names (IP SANs); the name is its DNS SAN.
type Host struct {
	Name  string
	Addrs []netip.Addr
}

// ParseHosts parses a --hosts list: comma-separated entries NAME or
// NAME=IP[+IP...], each name a valid VNE host name, each given once.
func ParseHosts(s string) ([]Host, error) {
	var hs []Host
	seen := map[string]bool{}
	for _, e := range strings.Split(s, ",") {
		name, addrs, _ := strings.Cut(e, "=")
		if err := vne.CheckName("host", name); err != nil {
			return nil, fmt.Errorf("hosts: %q: %w", e, err)
		}
		if seen[name] {
			return nil, fmt.Errorf("hosts: %s given twice", name)
		}
		seen[name] = true
		h := Host{Name: name}
		if addrs != "" {
			for _, a := range strings.Split(addrs, "+") {
				ip, err := netip.ParseAddr(a)
				if err != nil {
					return nil, fmt.Errorf("hosts: %s: address %q: %w", name, a, err)
				}
				h.Addrs = append(h.Addrs, ip)
			}
		}
		hs = append(hs, h)
	}
	return hs, nil
}

// CertFile and KeyFile name the certificate and key of a coordinator (name
// "coordinator") or of an agent host in a certificate directory.
func CertFile(dir, name string) string { return filepath.Join(dir, name+".pem") }

// KeyFile names the private key beside CertFile.
func KeyFile(dir, name string) string { return filepath.Join(dir, name+"-key.pem") }

// AgentName is the file name stem of host's agent certificate.
func AgentName(host string) string { return agentPrefx + host }

// CoordinatorName is the file name stem of the coordinator's certificate.
const CoordinatorName = coordName

// Create makes a new CA in dir (created if missing) and signs a coordinator
// certificate and one agent certificate per host, valid from now. It
// refuses a dir that already holds a CA, and writes every file through a
// temporary name, so a failure leaves no half-written certificate.
func Create(dir string, hosts []Host, now time.Time) error {
	if len(hosts) == 0 {
		return errors.New("certs: no hosts")
	}
	if _, err := os.Stat(filepath.Join(dir, CAFile)); err == nil {
		return fmt.Errorf("certs: %s already holds a CA (%s); use a new directory", dir, CAFile)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	caTmpl := &x509.Certificate{
		Subject:               pkix.Name{Organization: []string{"vnsnap"}, CommonName: "vnsnap cluster CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(Validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	if caTmpl.SerialNumber, err = serial(); err != nil {
		return err
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return fmt.Errorf("certs: CA: %w", err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return err
	}
	files := map[string][]byte{}
	files[CAFile] = pemCert(caDER)
	if files[CAKeyFile], err = pemKey(caKey); err != nil {
		return err
	}
	issue := func(stem string, role Role, h Host) error {
		der, key, err := sign(ca, caKey, role, h, now)
		if err != nil {
			return fmt.Errorf("certs: %s: %w", stem, err)
		}
		files[stem+".pem"] = pemCert(der)
		files[stem+"-key.pem"] = key
		return nil
	}
	if err := issue(coordName, Coordinator, Host{Name: coordName}); err != nil {
		return err
	}
	for _, h := range hosts {
		if err := issue(AgentName(h.Name), Agent, h); err != nil {
			return err
		}
	}
	return writeAll(dir, files)
}

// sign issues a leaf certificate for role and h, signed by ca.
func sign(ca *x509.Certificate, caKey *ecdsa.PrivateKey, role Role, h Host, now time.Time) ([]byte, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	t := &x509.Certificate{
		Subject:     pkix.Name{Organization: []string{"vnsnap"}, OrganizationalUnit: []string{string(role)}, CommonName: h.Name},
		NotBefore:   now.Add(-time.Hour),
		NotAfter:    now.Add(Validity),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		DNSNames:    []string{h.Name},
	}
	if role == Agent {
		t.ExtKeyUsage = append(t.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
		for _, a := range h.Addrs {
			t.IPAddresses = append(t.IPAddresses, a.AsSlice())
		}
	}
	if t.SerialNumber, err = serial(); err != nil {
		return nil, nil, err
	}
	der, err := x509.CreateCertificate(rand.Reader, t, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, nil, err
	}
	k, err := pemKey(key)
	return der, k, err
}

func serial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

func pemCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func pemKey(k *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// writeAll writes every file to a temporary name, then renames them all:
// keys mode 0600, certificates 0644. It refuses to replace any file of dir
// (a key of another CA, say), and makes each temporary file afresh
// (O_EXCL), so a stale one of another mode never carries a key.
func writeAll(dir string, files map[string][]byte) error {
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		if _, err := os.Lstat(filepath.Join(dir, n)); !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("certs: %s already holds %s; use a new directory", dir, n)
		}
	}
	var tmps []string
	defer func() {
		for _, t := range tmps {
			os.Remove(t)
		}
	}()
	for _, n := range names {
		mode := os.FileMode(0o644)
		if strings.HasSuffix(n, "-key.pem") {
			mode = 0o600
		}
		t := filepath.Join(dir, "."+n+".tmp")
		os.Remove(t) // a crashed run's: never reused (its mode may be 0644)
		if err := writeNew(t, files[n], mode); err != nil {
			return fmt.Errorf("certs: %w", err)
		}
		tmps = append(tmps, t)
	}
	for i, n := range names {
		if err := os.Rename(tmps[i], filepath.Join(dir, n)); err != nil {
			return fmt.Errorf("certs: %w", err)
		}
	}
	tmps = nil
	return nil
}

// writeNew creates path with mode (it must not exist) and writes b to it.
func writeNew(path string, b []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, mode)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
