package guestimg

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseKernelArgs(t *testing.T) {
	progs := []Program{{Name: "heartbeat", Args: []string{"-interval=20ms"}}, {Name: "tcpstream", Args: []string{"-peers=10.0.0.1,10.0.0.2", "-self=10.0.0.1"}}, {Name: "idle", Args: []string{}}}
	for _, tc := range []struct {
		ip, mac string
		progs   []Program
	}{
		{"10.0.0.1/24", "52:54:00:00:00:01", progs},
		{"", "52:54:00:00:00:01", nil},
		{"", "", progs[:1]},
		{"", "", nil},
	} {
		s := KernelArgs(tc.ip, tc.mac, tc.progs...)
		ip, mac, ps, err := ParseKernelArgs(s)
		if err != nil || ip != tc.ip || mac != tc.mac {
			t.Errorf("ParseKernelArgs(%q) = %q, %q, %v; want %q, %q", s, ip, mac, err, tc.ip, tc.mac)
		}
		if diff := cmp.Diff(tc.progs, ps); diff != "" {
			t.Errorf("programs of %q (-want +got):\n%s", s, diff)
		}
	}
	good := KernelArgs("10.0.0.1/24", "52:54:00:00:00:01", progs[0])
	for name, s := range map[string]string{
		"init= at the end":   good + " init=/bin/sh",
		"init= first":        "init=/bin/sh " + good,
		"param in between":   strings.Replace(good, " vnsnap.ip=", " init=/bin/sh vnsnap.ip=", 1),
		"repeated key":       good + " vnsnap.mac=52:54:00:00:00:02",
		"order":              strings.Replace(KernelArgs("", "52:54:00:00:00:01", progs[0]), "vnsnap.mac=52:54:00:00:00:01 vnsnap.run", "vnsnap.run", 1) + " vnsnap.mac=52:54:00:00:00:01",
		"double space":       strings.Replace(good, " ", "  ", 1),
		"fixed param gone":   strings.Replace(good, "rdinit=/init ", "", 1),
		"rdinit changed":     strings.Replace(good, "rdinit=/init", "rdinit=/bin/sh", 1),
		"empty program":      KernelArgs("", "") + " vnsnap.run=heartbeat++idle",
		"empty ip":           KernelArgs("", "") + " vnsnap.ip=",
		"trailing space":     good + " ",
		"glued to the fixed": KernelArgs("", "") + "x",
	} {
		if ip, mac, ps, err := ParseKernelArgs(s); err == nil {
			t.Errorf("%s: ParseKernelArgs(%q) = %q, %q, %v, nil; want an error", name, s, ip, mac, ps)
		}
	}
}

// FuzzParseKernelArgs: what ParseKernelArgs accepts, KernelArgs writes back
// byte for byte.
func FuzzParseKernelArgs(f *testing.F) {
	f.Add(KernelArgs("10.0.0.1/24", "52:54:00:00:00:01", Program{Name: "heartbeat", Args: []string{"-interval=20ms"}}, Program{Name: "idle"}))
	f.Add(KernelArgs("", "") + " init=/bin/sh")
	f.Fuzz(func(t *testing.T, s string) {
		ip, mac, progs, err := ParseKernelArgs(s)
		if err != nil {
			return
		}
		if got := KernelArgs(ip, mac, progs...); got != s {
			t.Fatalf("ParseKernelArgs(%q) accepted, but KernelArgs gives %q", s, got)
		}
	})
}
