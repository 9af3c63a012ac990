package xenbackend

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// fakeXL records every argv and answers from a function of it.
type fakeXL struct {
	mu     sync.Mutex
	calls  [][]string
	stdins []string
	answer func(args []string, stdin io.Reader, stdout io.Writer) (string, error)
}

func (f *fakeXL) Run(ctx context.Context, c Command) ([]byte, error) {
	f.mu.Lock()
	f.calls = append(f.calls, append([]string(nil), c.Args...))
	f.mu.Unlock()
	if f.answer == nil {
		return nil, nil
	}
	out, err := f.answer(c.Args, c.Stdin, c.Stdout)
	return []byte(out), err
}

func (f *fakeXL) argvs() [][]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([][]string(nil), f.calls...)
}

const listOut = `Name                                        ID   Mem VCPUs	State	Time(s)
Domain-0                                     0  1536     1     r-----      12.3
a                                            3   128     1     -b----       1.2
a--migratedaway                              4   128     1     --ps--       0.4
`

func TestXLArgv(t *testing.T) {
	f := &fakeXL{answer: func(args []string, _ io.Reader, _ io.Writer) (string, error) {
		switch args[0] {
		case "list":
			return listOut, nil
		case "domid":
			return "3\n", nil
		}
		return "", nil
	}}
	x := XL{R: f}
	ctx := context.Background()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(x.Create(ctx, "/run/v/a.cfg"))
	id, err := x.DomIDOf(ctx, "a")
	must(err)
	if id != 3 {
		t.Errorf("DomIDOf: got %d, want 3", id)
	}
	must(x.Pause(ctx, 3))
	must(x.Unpause(ctx, 3))
	must(x.Save(ctx, 3, "/run/v/a.save", LeavePaused))
	must(x.Save(ctx, 3, "/run/v/a.save", LeaveRunning))
	must(x.Restore(ctx, "/run/v/a.cfg", "/dev/stdin", nil))
	recv, err := ShellCommand("/usr/bin/vnsnap", "xen-receive", "/tmp/x y/a.sock")
	must(err)
	must(x.Migrate(ctx, 3, recv, nil))
	must(x.Destroy(ctx, 3))
	must(x.DestroyName(ctx, "a"))
	away, err := x.MigratedAwayOf(ctx, "a")
	must(err)
	want := [][]string{
		{"create", "-e", "/run/v/a.cfg"},
		{"domid", "a"},
		{"pause", "3"},
		{"unpause", "3"},
		{"save", "-p", "3", "/run/v/a.save"},
		{"save", "-c", "3", "/run/v/a.save"},
		{"restore", "-p", "-e", "/run/v/a.cfg", "/dev/stdin"},
		{"migrate", "-s", "", "3", `'/usr/bin/vnsnap' 'xen-receive' '/tmp/x y/a.sock'`},
		{"destroy", "3"},
		{"destroy", "a"},
		{"list"},
	}
	if d := cmp.Diff(want, f.argvs()); d != "" {
		t.Errorf("xl argv (-want +got):\n%s", d)
	}
	if len(away) != 1 || away[0].ID != 4 || !away[0].Paused() || !away[0].Shutdown() {
		t.Errorf("MigratedAwayOf(a): got %+v, want domain 4, paused and shut down", away)
	}
}

// Bad names and paths never reach xl.
func TestXLRefusesBadValues(t *testing.T) {
	f := &fakeXL{}
	x := XL{R: f}
	ctx := context.Background()
	for name, err := range map[string]error{
		"relative config":   x.Create(ctx, "a.cfg"),
		"dirty config":      x.Create(ctx, "/run/../a.cfg"),
		"newline save file": x.Save(ctx, 1, "/run/a\n.save", LeavePaused),
		"digits name":       func() error { _, err := x.DomIDOf(ctx, "12"); return err }(),
		"option-like name":  func() error { _, err := x.DomIDOf(ctx, "-h"); return err }(),
		"migratedaway name": func() error { _, err := x.DomIDOf(ctx, "a--migratedaway"); return err }(),
		"space name":        func() error { _, err := x.DomIDOf(ctx, "a b"); return err }(),
		"newline receiver":  x.Migrate(ctx, 1, "a\nb", nil),
		"empty receiver":    x.Migrate(ctx, 1, "", nil),
		"relative restore":  x.Restore(ctx, "/a.cfg", "img", nil),
	} {
		if !errors.Is(err, ErrBadValue) {
			t.Errorf("%s: got %v, want ErrBadValue", name, err)
		}
	}
	if c := f.argvs(); len(c) != 0 {
		t.Errorf("xl ran with bad values: %q", c)
	}
}

func TestParseList(t *testing.T) {
	doms, err := ParseList([]byte(listOut))
	if err != nil {
		t.Fatal(err)
	}
	want := []Domain{
		{Name: "Domain-0", ID: 0, MemMiB: 1536, VCPUs: 1, State: "r-----"},
		{Name: "a", ID: 3, MemMiB: 128, VCPUs: 1, State: "-b----"},
		{Name: "a--migratedaway", ID: 4, MemMiB: 128, VCPUs: 1, State: "--ps--"},
	}
	if d := cmp.Diff(want, doms); d != "" {
		t.Errorf("ParseList (-want +got):\n%s", d)
	}
	for _, bad := range []string{"", "garbage\n", "Name ID\nx 1 2\n", "Name\nx y 1 1 r----- 0\n"} {
		if _, err := ParseList([]byte(bad)); err == nil {
			t.Errorf("ParseList(%q): no error", bad)
		}
	}
}

// ShellCommand's quoting is checked by sh itself: every argument comes back
// exactly.
func TestShellCommandRoundTrip(t *testing.T) {
	args := []string{"/bin/printf", `%s|`, "a b", "it's", `"q"`, `$HOME`, "`x`", `\`, "; rm -rf /", ""}
	cmdline, err := ShellCommand(args...)
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("sh", "-c", cmdline).Output()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(out), strings.Join(args[2:], "|")+"|"; got != want {
		t.Errorf("sh -c %s: got %q, want %q", cmdline, got, want)
	}
	if _, err := ShellCommand("a\x00b"); !errors.Is(err, ErrBadValue) {
		t.Errorf("NUL: got %v, want ErrBadValue", err)
	}
}

func TestDomainConfig(t *testing.T) {
	c := DomainConfig{
		Name: "a", Kernel: "/k/vmlinuz", Ramdisk: "/k/initrd.gz", Extra: `console=hvc0 x="a\b"`,
		MemoryMiB: 128, VCPUs: 1, MAC: "52:54:00:12:34:0A", VifScript: "/run/v/vif-vnsnap",
		Disk: "/dev/loop3", DiskScript: "/run/v/block-vnsnap",
	}
	got, err := c.Render()
	if err != nil {
		t.Fatal(err)
	}
	want := `# written by vnsnap
name = "a"
type = "pvh"
kernel = "/k/vmlinuz"
ramdisk = "/k/initrd.gz"
extra = "console=hvc0 x=\"a\\b\""
memory = 128
maxmem = 128
vcpus = 1
vif = [ "mac=52:54:00:12:34:0a,script=/run/v/vif-vnsnap" ]
disk = [ "format=raw, vdev=xvda, access=rw, backendtype=phy, script=/run/v/block-vnsnap, target=/dev/loop3" ]
on_poweroff = "preserve"
on_reboot = "preserve"
on_crash = "preserve"
`
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("config (-want +got):\n%s", d)
	}
	bad := map[string]func(*DomainConfig){
		"name with quote":     func(c *DomainConfig) { c.Name = `a"b` },
		"name with newline":   func(c *DomainConfig) { c.Name = "a\nb" },
		"relative kernel":     func(c *DomainConfig) { c.Kernel = "vmlinuz" },
		"kernel newline":      func(c *DomainConfig) { c.Kernel = "/k/a\nkernel=\"/x\"" },
		"ramdisk dotdot":      func(c *DomainConfig) { c.Ramdisk = "/k/../etc/passwd" },
		"extra newline":       func(c *DomainConfig) { c.Extra = "a\nname=\"b\"" },
		"extra non-ascii":     func(c *DomainConfig) { c.Extra = "a\xffb" },
		"multicast mac":       func(c *DomainConfig) { c.MAC = "01:00:00:00:00:01" },
		"mac injection":       func(c *DomainConfig) { c.MAC = "52:54:00:12:34:01,bridge=xenbr0" },
		"script with comma":   func(c *DomainConfig) { c.VifScript = "/run/a,bridge=x" },
		"script with equals":  func(c *DomainConfig) { c.VifScript = "/run/a=b" },
		"mac without script":  func(c *DomainConfig) { c.VifScript = "" },
		"disk without script": func(c *DomainConfig) { c.DiskScript = "" },
		"disk with comma":     func(c *DomainConfig) { c.Disk = "/dev/loop3,vdev=xvdb" },
		"disk relative":       func(c *DomainConfig) { c.Disk = "loop3" },
		"disk script equals":  func(c *DomainConfig) { c.DiskScript = "/run/a=b" },
		"disk newline":        func(c *DomainConfig) { c.Disk = "/dev/loop3\ndisk=x" },
		"no memory":           func(c *DomainConfig) { c.MemoryMiB = 0 },
		"no vcpus":            func(c *DomainConfig) { c.VCPUs = 0 },
	}
	for name, mutate := range bad {
		t.Run(name, func(t *testing.T) {
			c := c
			mutate(&c)
			if out, err := c.Render(); !errors.Is(err, ErrBadValue) {
				t.Errorf("got %q, %v; want ErrBadValue", out, err)
			}
		})
	}
}

// The rendered config is read back by a tiny model of libxlu's string
// lexer: each setting is one line and each value comes back unchanged.
func FuzzDomainConfigQuoting(f *testing.F) {
	f.Add(`console=hvc0`, "/k/vmlinuz")
	f.Add(`a"b\c`, `/k/"x"`)
	f.Add(`\"`, `/k/\`)
	f.Fuzz(func(t *testing.T, extra, kernel string) {
		c := DomainConfig{Name: "a", Kernel: kernel, Extra: extra, MemoryMiB: 128, VCPUs: 1}
		out, err := c.Render()
		if err != nil {
			return
		}
		got := map[string]string{}
		for _, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
			if strings.HasPrefix(line, "#") {
				continue
			}
			k, v, ok := strings.Cut(line, " = ")
			if !ok {
				t.Fatalf("line %q is not KEY = VALUE", line)
			}
			if strings.HasPrefix(v, `"`) {
				s, err := dequote(v)
				if err != nil {
					t.Fatalf("line %q: %v", line, err)
				}
				v = s
			}
			got[k] = v
		}
		if got["extra"] != extra || got["kernel"] != kernel || got["name"] != "a" {
			t.Fatalf("read back extra=%q kernel=%q name=%q, wrote %q, %q, a", got["extra"], got["kernel"], got["name"], extra, kernel)
		}
	})
}

// dequote reads one double-quoted libxlu string that must fill v.
func dequote(v string) (string, error) {
	if len(v) < 2 || v[0] != '"' {
		return "", fmt.Errorf("not quoted: %q", v)
	}
	var b strings.Builder
	for i := 1; i < len(v); i++ {
		switch c := v[i]; c {
		case '\\':
			i++
			if i >= len(v)-1 {
				return "", fmt.Errorf("dangling backslash in %q", v)
			}
			b.WriteByte(v[i])
		case '"':
			if i != len(v)-1 {
				return "", fmt.Errorf("string ends before the line in %q", v)
			}
			return b.String(), nil
		default:
			b.WriteByte(c)
		}
	}
	return "", fmt.Errorf("unterminated %q", v)
}

// ExecRunner quotes xl's standard error when it fails.
func TestExecRunnerError(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "xl")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\necho \"$@\"\necho 'libxl: domain not found' >&2\nexit 3\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := ExecRunner{Path: bin}.Run(context.Background(), Command{Args: []string{"destroy", "7"}})
	if err == nil || !strings.Contains(err.Error(), "domain not found") || !strings.Contains(err.Error(), "xl destroy 7") {
		t.Errorf("got %v, want an error naming the command and quoting stderr", err)
	}
	if string(out) != "destroy 7\n" {
		t.Errorf("stdout: got %q", out)
	}
}
