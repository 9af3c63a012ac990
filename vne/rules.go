package vne

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/vnsnap/vnsnap/internal/units"
)

// The rules below are the single definition of what a VNE file may hold.
// Validate applies them to a parsed file; backends apply the same functions
// to anything they read back from elsewhere (a snapshot's layout is
// untrusted input), so a value a VNE file could not hold never reaches a
// command line or a file name. Each returns nil or an error whose text is
// the problem without the field ("…is not a valid VM name…").

var (
	vneName  = regexp.MustCompile(`^[a-z0-9-]+$`)
	itemName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)
)

// Limits of the format beyond those in vne.go.
const (
	// MaxNameLen is the longest VNE, host, network or VM name. Names become
	// parts of unix socket paths, which are limited to 107 bytes.
	MaxNameLen = 48
	// MaxMemory is the largest VM memory (16 TiB).
	MaxMemory = 16 << 40
	// MaxCmdline is the longest kernel command line (x86 COMMAND_LINE_SIZE
	// is 2048 bytes including the terminating NUL).
	MaxCmdline = 2047
	// MaxFileSize is the largest VNE file Load reads.
	MaxFileSize = 16 << 20
	// MaxPathLen is the longest guest file path (PATH_MAX less the NUL).
	MaxPathLen = 4095
)

// CheckVNEName reports whether s is a valid VNE name: lower-case letters,
// digits and -, at most MaxNameLen bytes.
func CheckVNEName(s string) error {
	switch {
	case s == "":
		return errors.New("required")
	case !vneName.MatchString(s):
		return fmt.Errorf("%q is not a valid VNE name (want lower-case letters, digits and -)", s)
	case len(s) > MaxNameLen:
		return fmt.Errorf("%q is longer than %d bytes", s, MaxNameLen)
	}
	return nil
}

// CheckName reports whether s is a valid name of a host, network or VM
// (what says which, for the message): letters, digits, ., _ and -, not
// starting with . _ or -, at most MaxNameLen bytes. A valid name has no
// path separator and is never "." or "..", so it can name a file.
func CheckName(what, s string) error {
	switch {
	case s == "":
		return errors.New("required")
	case !itemName.MatchString(s):
		return fmt.Errorf("%q is not a valid %s name (want letters, digits, ., _ and -, not starting with . _ or -)", s, what)
	case len(s) > MaxNameLen:
		return fmt.Errorf("%q is longer than %d bytes", s, MaxNameLen)
	}
	return nil
}

// ParseMAC parses a MAC address written as six colon-separated hex bytes
// (52:54:00:12:34:01) and checks it with CheckMAC. Other notations that
// net.ParseMAC accepts are refused, so the text of a valid MAC is exactly
// its canonical form.
func ParseMAC(s string) (net.HardwareAddr, error) {
	mac, err := net.ParseMAC(s)
	if err != nil || len(mac) != 6 || !strings.EqualFold(mac.String(), s) {
		return nil, fmt.Errorf("%q is not a MAC address (want e.g. 52:54:00:12:34:01)", s)
	}
	if err := CheckMAC(mac); err != nil {
		return nil, err
	}
	return mac, nil
}

// CheckMAC reports whether mac is usable for a VM: 6 bytes, unicast, not
// all zero.
func CheckMAC(mac net.HardwareAddr) error {
	switch {
	case len(mac) != 6:
		return fmt.Errorf("%s is not a 6-byte MAC address", mac)
	case mac[0]&1 != 0:
		return fmt.Errorf("%s is a multicast address (want unicast: the lowest bit of the first byte clear)", mac)
	case string(mac) == "\x00\x00\x00\x00\x00\x00":
		return fmt.Errorf("%s is not a usable address", mac)
	}
	return nil
}

// CheckAddress reports whether s is a host's switch address: an IP address
// or host:port with a numeric port 1..65535, where host is an IP address or
// a DNS name.
func CheckAddress(s string) error {
	if a, err := netip.ParseAddr(s); err == nil && a.Zone() == "" {
		return nil
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil || host == "" || !validHost(host) {
		return fmt.Errorf("%q is not an IP address or host:port", s)
	}
	n, err := strconv.Atoi(port)
	if err != nil || strconv.Itoa(n) != port || n < 1 || n > 65535 {
		return fmt.Errorf("%q has a bad port (want 1..65535)", s)
	}
	return nil
}

// CheckAgent reports whether s is a host's agent address: host:port with a
// numeric port 1..65535 (an agent has no default port), where host is an IP
// address without zone or a DNS name.
func CheckAgent(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil || host == "" || !validHost(host) {
		return fmt.Errorf("%q is not host:port", s)
	}
	n, err := strconv.Atoi(port)
	if err != nil || strconv.Itoa(n) != port || n < 1 || n > 65535 {
		return fmt.Errorf("%q has a bad port (want 1..65535)", s)
	}
	return nil
}

var dnsName = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*\.?$`)

func validHost(h string) bool {
	if a, err := netip.ParseAddr(h); err == nil {
		return a.Zone() == ""
	}
	return len(h) <= 253 && dnsName.MatchString(h)
}

// CheckMemory reports whether b bytes is a valid VM memory: a multiple of
// PageSize, MinMemory..MaxMemory.
func CheckMemory(b int64) error {
	switch {
	case b == 0:
		return errors.New("required")
	case b < 0:
		return fmt.Errorf("%d bytes is negative", b)
	case b < MinMemory:
		return fmt.Errorf("%d bytes is less than the minimum 16MiB", b)
	case b > MaxMemory:
		return fmt.Errorf("%d bytes is more than the maximum 16TiB", b)
	case b%PageSize != 0:
		return fmt.Errorf("%d bytes is not a multiple of the 4KiB page size", b)
	}
	return nil
}

// CheckVCPUs reports whether n is a valid vCPU count, 1..MaxVCPUs.
func CheckVCPUs(n int) error {
	if n < 1 || n > MaxVCPUs {
		return fmt.Errorf("%d is out of range (want 1..%d)", n, MaxVCPUs)
	}
	return nil
}

// CheckRAMBudget reports whether b is a valid memory-sink budget: 0 (unset)
// or positive.
func CheckRAMBudget(b int64) error {
	if b < 0 {
		return errors.New("must not be negative")
	}
	return nil
}

// CheckBuiltin reports whether name is a program of the built-in image.
func CheckBuiltin(name string) error {
	for _, b := range Builtins() {
		if b == name {
			return nil
		}
	}
	return fmt.Errorf("unknown program %q (want one of %s)", name, strings.Join(Builtins(), ", "))
}

// CheckArg reports whether s can be an argument of a built-in program. The
// arguments travel on the kernel command line joined by ':' and '+', so
// they hold printable ASCII other than space, ':' and '+'.
func CheckArg(s string) error {
	if s == "" {
		return errors.New("empty argument")
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f || c == ':' || c == '+' {
			return fmt.Errorf("%q holds %q (want printable characters other than space, ':' and '+')", s, c)
		}
	}
	return nil
}

// CheckCmdline reports whether s can be a kernel command line: printable
// ASCII (space included), at most MaxCmdline bytes.
func CheckCmdline(s string) error {
	if len(s) > MaxCmdline {
		return fmt.Errorf("%d bytes is longer than the kernel's limit of %d", len(s), MaxCmdline)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < ' ' || c >= 0x7f {
			return fmt.Errorf("holds the byte %q (want printable ASCII)", c)
		}
	}
	return nil
}

// CheckPath reports whether p is a usable guest file path: absolute,
// clean (no "." or ".." elements, no repeated separators), at most
// MaxPathLen bytes and free of control characters. It does not look at the
// file system; CheckFile does.
func CheckPath(p string) error {
	switch {
	case p == "":
		return errors.New("required")
	case len(p) > MaxPathLen:
		return fmt.Errorf("path of %d bytes is longer than %d", len(p), MaxPathLen)
	case !filepath.IsAbs(p):
		return fmt.Errorf("%q is not an absolute path", p)
	case filepath.Clean(p) != p:
		return fmt.Errorf("%q is not a clean path (want %q)", p, filepath.Clean(p))
	}
	for i := 0; i < len(p); i++ {
		if c := p[i]; c < ' ' || c == 0x7f {
			return fmt.Errorf("%q holds the control character %q", p, c)
		}
	}
	return nil
}

// CheckFile reports whether p passes CheckPath and names an existing
// regular file (after following symbolic links).
func CheckFile(p string) error {
	if err := CheckPath(p); err != nil {
		return err
	}
	fi, err := os.Stat(p)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%s does not exist", p)
	case err != nil:
		return err
	case !fi.Mode().IsRegular():
		return fmt.Errorf("%s is not a regular file", p)
	}
	return nil
}

// ParseSize parses a byte count as a VNE file writes it (the units of
// internal/units: 512MiB, 1.5GB, 4096) into a whole number of bytes, saying
// precisely what is wrong with negative, NaN, infinite, fractional and
// overflowing values.
func ParseSize(s string) (int64, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	f, err := units.ParseSize(s)
	switch {
	case strings.HasPrefix(t, "-"):
		return 0, fmt.Errorf("%q is negative", s)
	case strings.Contains(t, "nan") || strings.Contains(t, "inf"):
		return 0, fmt.Errorf("%q is not a finite size", s)
	case err != nil:
		return 0, fmt.Errorf("%q is not a size (want e.g. 512MiB)", s)
	case f >= 1<<63:
		return 0, fmt.Errorf("%q is too large", s)
	case f != math.Trunc(f):
		return 0, fmt.Errorf("%q is not a size (want a whole number of bytes, e.g. 512MiB)", s)
	}
	return int64(f), nil
}
