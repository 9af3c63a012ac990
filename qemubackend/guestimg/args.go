package guestimg

import (
	"fmt"
	"strings"
)

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

// ParseKernelArgs is the inverse of KernelArgs: it accepts exactly the
// command lines KernelArgs produces (the fixed parameters in their order,
// then vnsnap.ip, vnsnap.mac and vnsnap.run, each optional, in that order)
// and returns their parts. Anything else (an extra parameter such as
// init=, a repeated key, doubled spaces) is an error. It checks the form
// only; the caller validates the address, MAC and programs.
func ParseKernelArgs(s string) (ip, mac string, progs []Program, err error) {
	base := KernelArgs("", "")
	rest, ok := strings.CutPrefix(s, base)
	if !ok {
		return "", "", nil, fmt.Errorf("kernel command line %q does not start with the built-in image's %q", s, base)
	}
	if rest == "" {
		return "", "", nil, nil
	}
	toks := strings.Split(strings.TrimPrefix(rest, " "), " ")
	if !strings.HasPrefix(rest, " ") {
		return "", "", nil, fmt.Errorf("kernel command line %q: unexpected %q after the fixed parameters", s, rest)
	}
	i := 0
	take := func(key string) (string, bool) {
		if i < len(toks) {
			if v, ok := strings.CutPrefix(toks[i], key+"="); ok {
				i++
				return v, true
			}
		}
		return "", false
	}
	ip, _ = take("vnsnap.ip")
	mac, _ = take("vnsnap.mac")
	run, haveRun := take("vnsnap.run")
	if i != len(toks) {
		return "", "", nil, fmt.Errorf("kernel command line %q: unexpected parameter %q (want only vnsnap.ip, vnsnap.mac and vnsnap.run after the fixed ones)", s, toks[i])
	}
	if haveRun {
		for _, p := range strings.Split(run, "+") {
			f := strings.Split(p, ":")
			if f[0] == "" {
				return "", "", nil, fmt.Errorf("kernel command line %q: empty program name in vnsnap.run", s)
			}
			progs = append(progs, Program{Name: f[0], Args: f[1:]})
		}
	}
	if ip == "" && strings.Contains(s, "vnsnap.ip=") || mac == "" && strings.Contains(s, "vnsnap.mac=") {
		return "", "", nil, fmt.Errorf("kernel command line %q: empty vnsnap.ip or vnsnap.mac", s)
	}
	if got := KernelArgs(ip, mac, progs...); got != s {
		return "", "", nil, fmt.Errorf("kernel command line %q is not in the built-in image's form (want %q)", s, got)
	}
	return ip, mac, progs, nil
}
