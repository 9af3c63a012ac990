package xenbackend

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/vnsnap/vnsnap/vne"
)

// DomainConfig is the xl domain config vnsnap writes for a PVH domU booted
// from a kernel and an initramfs.
type DomainConfig struct {
	Name      string
	Kernel    string
	Ramdisk   string // may be empty
	Extra     string // the kernel command line
	MemoryMiB int
	VCPUs     int
	// MAC and VifScript, both set, give the domain one vif whose hotplug
	// script is VifScript; both empty: no vif.
	MAC, VifScript string
	// Disk and DiskScript, both set, give the domain one disk, xvda: the
	// block device Disk (a loop device on the image, attached by the
	// backend) through blkback, whose hotplug script is DiskScript; both
	// empty: no disk.
	Disk, DiskScript string
}

// CheckDomainName accepts a VM name of the VNE rules (vne.CheckName) that
// xl cannot mistake for one of its own: not all digits (xl would read a
// domain ID) and not ending in "--migratedaway" or "--incoming" (the names
// xl migrate gives a domain while it moves).
func CheckDomainName(name string) error {
	if err := vne.CheckName("VM", name); err != nil {
		return fmt.Errorf("domain name: %w: %w", err, ErrBadValue)
	}
	if _, err := strconv.ParseUint(name, 10, 64); err == nil {
		return fmt.Errorf("domain name %q: all digits reads as a domain ID: %w", name, ErrBadValue)
	}
	for _, s := range []string{MigratedAway, "--incoming"} {
		if strings.HasSuffix(name, s) {
			return fmt.Errorf("domain name %q ends in xl's %q: %w", name, s, ErrBadValue)
		}
	}
	return nil
}

// checkPath accepts an absolute clean path (vne.CheckPath) for what.
func checkPath(what, p string) error {
	if err := vne.CheckPath(p); err != nil {
		return fmt.Errorf("%s: %w: %w", what, err, ErrBadValue)
	}
	return nil
}

// xlString writes s as an xl config string (tools/libs/util/libxlu_cfg_l.l):
// in double quotes, where a backslash escapes the character after it, so
// '\' and '"' are escaped. A control character is refused: a line break
// would end the setting, and no value of ours needs one.
func xlString(what, s string) (string, error) {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < ' ' || c == 0x7f {
			return "", fmt.Errorf("%s %q holds the control character %q: %w", what, s, c, ErrBadValue)
		}
	}
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`)
	return `"` + r.Replace(s) + `"`, nil
}

// specItem checks a value that goes inside a vif or disk spec
// ("mac=...,script=..."), which libxl splits at commas and '=' with no
// escape: neither may appear.
func specItem(what, s string) error {
	if strings.ContainsAny(s, ",=") {
		return fmt.Errorf("vif %s %q holds ',' or '=', which a vif spec cannot carry: %w", what, s, ErrBadValue)
	}
	return nil
}

// Render returns the config file's text. Every value is validated and
// quoted; an invalid one is an error naming its field.
func (c DomainConfig) Render() (string, error) {
	if err := CheckDomainName(c.Name); err != nil {
		return "", err
	}
	if err := checkPath("kernel", c.Kernel); err != nil {
		return "", err
	}
	if c.Ramdisk != "" {
		if err := checkPath("ramdisk", c.Ramdisk); err != nil {
			return "", err
		}
	}
	if err := vne.CheckCmdline(c.Extra); err != nil {
		return "", fmt.Errorf("kernel command line: %w: %w", err, ErrBadValue)
	}
	if c.MemoryMiB < 1 || c.VCPUs < 1 || c.VCPUs > vne.MaxVCPUs {
		return "", fmt.Errorf("domain %s: memory %d MiB, %d vCPUs: %w", c.Name, c.MemoryMiB, c.VCPUs, ErrBadValue)
	}
	var b strings.Builder
	set := func(key, what, v string) error {
		q, err := xlString(what, v)
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "%s = %s\n", key, q)
		return nil
	}
	b.WriteString("# written by vnsnap\n")
	if err := set("name", "name", c.Name); err != nil {
		return "", err
	}
	b.WriteString("type = \"pvh\"\n")
	if err := set("kernel", "kernel", c.Kernel); err != nil {
		return "", err
	}
	if c.Ramdisk != "" {
		if err := set("ramdisk", "ramdisk", c.Ramdisk); err != nil {
			return "", err
		}
	}
	if err := set("extra", "kernel command line", c.Extra); err != nil {
		return "", err
	}
	fmt.Fprintf(&b, "memory = %d\nmaxmem = %d\nvcpus = %d\n", c.MemoryMiB, c.MemoryMiB, c.VCPUs)
	switch {
	case c.MAC == "" && c.VifScript == "":
	case c.MAC == "" || c.VifScript == "":
		return "", fmt.Errorf("domain %s: a vif needs both a MAC and a script: %w", c.Name, ErrBadValue)
	default:
		if _, err := vne.ParseMAC(c.MAC); err != nil {
			return "", fmt.Errorf("vif mac: %w: %w", err, ErrBadValue)
		}
		if err := checkPath("vif script", c.VifScript); err != nil {
			return "", err
		}
		if err := specItem("script", c.VifScript); err != nil {
			return "", err
		}
		q, err := xlString("vif", "mac="+strings.ToLower(c.MAC)+",script="+c.VifScript)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "vif = [ %s ]\n", q)
	}
	switch {
	case c.Disk == "" && c.DiskScript == "":
	case c.Disk == "" || c.DiskScript == "":
		return "", fmt.Errorf("domain %s: a disk needs both a device and a script: %w", c.Name, ErrBadValue)
	default:
		for _, v := range []struct{ what, p string }{{"disk", c.Disk}, {"disk script", c.DiskScript}} {
			if err := checkPath(v.what, v.p); err != nil {
				return "", err
			}
			// libxl splits a disk spec at commas; target= comes last and
			// takes the rest, but the script must not hold one either.
			if err := specItem(v.what, v.p); err != nil {
				return "", err
			}
		}
		q, err := xlString("disk", "format=raw, vdev=xvda, access=rw, backendtype=phy, script="+c.DiskScript+", target="+c.Disk)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "disk = [ %s ]\n", q)
	}
	// vnsnap owns the domain's life: a domain that stops stays for
	// vnsnap to see and destroy.
	b.WriteString("on_poweroff = \"preserve\"\non_reboot = \"preserve\"\non_crash = \"preserve\"\n")
	return b.String(), nil
}
