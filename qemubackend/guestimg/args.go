package guestimg

import "strings"

// Program is a guest program to start at boot: a name from /bin and its
// arguments. Arguments must not contain spaces, ':' or '+' (they travel on the
// kernel command line); use the -flag=value form.
type Program struct {
	Name string
	Args []string
}

// KernelArgs returns the kernel command line for a guest with the given eth0
// address (CIDR, e.g. "10.0.0.1/24"; empty for no network), MAC (may be empty)
// and programs.
func KernelArgs(ip, mac string, progs ...Program) string {
	args := []string{"console=ttyS0", "quiet", "panic=-1", "rdinit=/init",
		"i8042.noaux", "i8042.nokbd", "mitigations=off", "no_timer_check", "random.trust_cpu=on"}
	if ip != "" {
		args = append(args, "vnsnap.ip="+ip)
	}
	if mac != "" {
		args = append(args, "vnsnap.mac="+mac)
	}
	if len(progs) > 0 {
		var ps []string
		for _, p := range progs {
			ps = append(ps, strings.Join(append([]string{p.Name}, p.Args...), ":"))
		}
		args = append(args, "vnsnap.run="+strings.Join(ps, "+"))
	}
	return strings.Join(args, " ")
}
