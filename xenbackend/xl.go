package xenbackend

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strconv"
	"strings"
)

// DefaultXL is where Debian's xen-utils-4.17 installs xl.
const DefaultXL = "/usr/lib/xen-4.17/bin/xl"

// Command is one run of xl: its arguments (after the binary), and where its
// standard streams go. A nil Stdin reads nothing; nil Stdout or Stderr are
// collected into the error of a failed run (Stdout is returned by Run).
type Command struct {
	Args   []string
	Stdin  io.Reader
	Stdout io.Writer
}

// Runner runs xl; it is the adapter's port, so that its tests check the exact
// argv against a fake. Run returns xl's standard output (unless
// Command.Stdout took it) and an error that quotes xl's standard error when
// xl fails. ctx ending kills xl.
type Runner interface {
	Run(ctx context.Context, c Command) ([]byte, error)
}

// ExecRunner runs the xl binary at Path.
type ExecRunner struct {
	Path string
}

// Run starts Path with c.Args and waits for it.
func (r ExecRunner) Run(ctx context.Context, c Command) ([]byte, error) {
	cmd := exec.CommandContext(ctx, r.Path, c.Args...)
	var out, errb bytes.Buffer
	cmd.Stdin = c.Stdin
	cmd.Stdout = &out
	if c.Stdout != nil {
		cmd.Stdout = c.Stdout
	}
	cmd.Stderr = &errb
	err := cmd.Run()
	if err != nil {
		msg := strings.TrimSpace(errb.String())
		if len(msg) > 2000 {
			msg = "..." + msg[len(msg)-2000:]
		}
		return out.Bytes(), fmt.Errorf("xl %s: %w: %s", strings.Join(c.Args, " "), err, msg)
	}
	return out.Bytes(), nil
}

// MigratedAway is the suffix xl migrate gives the source domain's name from
// the sender's go until the receiver's report: a domain still named
// NAME--migratedaway after a migration ended was left behind by a failure.
const MigratedAway = "--migratedaway"

// XL is the typed adapter over xl: every method builds one argv from
// validated values (names by CheckDomainName, paths by checkPath, domain IDs
// as numbers) and runs it through the Runner.
type XL struct {
	R Runner
}

// ErrBadValue is returned (wrapped) for a value that cannot be passed to xl
// or written into a domain config.
var ErrBadValue = errors.New("value cannot be passed to xl")

// DomID is a Xen domain ID.
type DomID uint32

func (d DomID) arg() string { return strconv.FormatUint(uint64(d), 10) }

// Domain is one line of "xl list".
type Domain struct {
	Name   string
	ID     DomID
	MemMiB int
	VCPUs  int
	// State is xl's six-letter state: running, blocked, paused, shutdown,
	// crashed, dying ("r-----", "--p---", "---ss-"...).
	State string
}

// Paused says whether the domain is paused by its controller (xl pause,
// xl restore -p, xl save -p).
func (d Domain) Paused() bool { return len(d.State) == 6 && d.State[2] == 'p' }

// Shutdown says whether the domain has shut down (for suspend, too).
func (d Domain) Shutdown() bool { return len(d.State) == 6 && d.State[3] == 's' }

// Create runs "xl create -e CONFIG": the domain is built from the config
// file and runs; -e leaves no xl process behind waiting for its death
// (vnsnap destroys its domains itself).
func (x XL) Create(ctx context.Context, config string) error {
	if err := checkPath("config", config); err != nil {
		return err
	}
	_, err := x.R.Run(ctx, Command{Args: []string{"create", "-e", config}})
	return err
}

// List runs "xl list" and parses every domain.
func (x XL) List(ctx context.Context) ([]Domain, error) {
	out, err := x.R.Run(ctx, Command{Args: []string{"list"}})
	if err != nil {
		return nil, err
	}
	return ParseList(out)
}

// Lookup finds the domain with this ID in "xl list"; ok is false when there
// is none.
func (x XL) Lookup(ctx context.Context, id DomID) (d Domain, ok bool, err error) {
	doms, err := x.List(ctx)
	if err != nil {
		return Domain{}, false, err
	}
	for _, d := range doms {
		if d.ID == id {
			return d, true, nil
		}
	}
	return Domain{}, false, nil
}

// DomIDOf runs "xl domid NAME".
func (x XL) DomIDOf(ctx context.Context, name string) (DomID, error) {
	if err := CheckDomainName(name); err != nil {
		return 0, err
	}
	out, err := x.R.Run(ctx, Command{Args: []string{"domid", name}})
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(out)), 10, 32)
	if err != nil {
		return 0, fmt.Errorf("xl domid %s: got %q, want a domain ID", name, bytes.TrimSpace(out))
	}
	return DomID(n), nil
}

// Pause runs "xl pause ID". Xen counts pauses: each needs an Unpause.
func (x XL) Pause(ctx context.Context, id DomID) error {
	_, err := x.R.Run(ctx, Command{Args: []string{"pause", id.arg()}})
	return err
}

// Unpause runs "xl unpause ID"; Xen refuses it for a domain not paused.
func (x XL) Unpause(ctx context.Context, id DomID) error {
	_, err := x.R.Run(ctx, Command{Args: []string{"unpause", id.arg()}})
	return err
}

// Destroy runs "xl destroy ID". It refuses domain 0, dom0 itself.
func (x XL) Destroy(ctx context.Context, id DomID) error {
	if id == 0 {
		return fmt.Errorf("xl destroy 0 (dom0): %w", ErrBadValue)
	}
	_, err := x.R.Run(ctx, Command{Args: []string{"destroy", id.arg()}})
	return err
}

// DestroyName runs "xl destroy NAME", for a domain whose ID is not known
// (a create that failed half-way).
func (x XL) DestroyName(ctx context.Context, name string) error {
	if err := CheckDomainName(name); err != nil {
		return err
	}
	_, err := x.R.Run(ctx, Command{Args: []string{"destroy", name}})
	return err
}

// After says what "xl save" does with the domain once its image is written.
type After int

const (
	// LeaveRunning: "xl save -c", the domain runs on.
	LeaveRunning After = iota
	// LeavePaused: "xl save -p", the domain stays paused (until Unpause).
	LeavePaused
)

// Save runs "xl save -c|-p ID FILE": stop-and-copy, the domain is suspended
// for the whole save.
func (x XL) Save(ctx context.Context, id DomID, file string, after After) error {
	if err := checkPath("save file", file); err != nil {
		return err
	}
	flag := "-c"
	if after == LeavePaused {
		flag = "-p"
	}
	_, err := x.R.Run(ctx, Command{Args: []string{"save", flag, id.arg(), file}})
	return err
}

// Restore runs "xl restore -p -e CONFIG FILE": the domain is rebuilt from the
// image in FILE with the config file CONFIG (ours: the config stored in the
// image is not trusted) and left paused.
func (x XL) Restore(ctx context.Context, config, file string, stdin io.Reader) error {
	if err := checkPath("config", config); err != nil {
		return err
	}
	if err := checkPath("image", file); err != nil {
		return err
	}
	_, err := x.R.Run(ctx, Command{Args: []string{"restore", "-p", "-e", config, file}, Stdin: stdin})
	return err
}

// Migrate runs `xl migrate -s "" ID RECEIVER`: with an empty ssh command xl
// runs RECEIVER itself through sh, its stdin the migration stream and its
// stdout the replies (see Receive). RECEIVER must come from ShellCommand.
// xl's standard output goes to stdout if set.
func (x XL) Migrate(ctx context.Context, id DomID, receiver string, stdout io.Writer) error {
	if receiver == "" || strings.ContainsAny(receiver, "\x00\n\r") {
		return fmt.Errorf("migrate receiver %q: %w", receiver, ErrBadValue)
	}
	_, err := x.R.Run(ctx, Command{Args: []string{"migrate", "-s", "", id.arg(), receiver}, Stdout: stdout})
	return err
}

// MigratedAwayOf returns the domains "xl list" shows under name+MigratedAway.
func (x XL) MigratedAwayOf(ctx context.Context, name string) ([]Domain, error) {
	doms, err := x.List(ctx)
	if err != nil {
		return nil, err
	}
	var out []Domain
	for _, d := range doms {
		if d.Name == name+MigratedAway {
			out = append(out, d)
		}
	}
	return out, nil
}

// ParseList parses the output of "xl list": a header, then one line per
// domain "NAME ID MEM VCPUS STATE TIME".
func ParseList(out []byte) ([]Domain, error) {
	lines := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
	if len(lines) == 0 || !strings.HasPrefix(lines[0], "Name") {
		return nil, fmt.Errorf("xl list: no header in %q", firstLine(out))
	}
	var doms []Domain
	for _, l := range lines[1:] {
		f := strings.Fields(l)
		if len(f) != 6 || len(f[4]) != 6 {
			return nil, fmt.Errorf("xl list: cannot parse %q", l)
		}
		id, err1 := strconv.ParseUint(f[1], 10, 32)
		mem, err2 := strconv.Atoi(f[2])
		vcpus, err3 := strconv.Atoi(f[3])
		if err := errors.Join(err1, err2, err3); err != nil {
			return nil, fmt.Errorf("xl list: cannot parse %q: %w", l, err)
		}
		doms = append(doms, Domain{Name: f[0], ID: DomID(id), MemMiB: mem, VCPUs: vcpus, State: f[4]})
	}
	return doms, nil
}

func firstLine(b []byte) string {
	s, _, _ := strings.Cut(string(b), "\n")
	return s
}

// ShellCommand quotes argv for sh: xl migrate hands its receiver command to
// "sh -c". Every argument is put in single quotes (a single quote inside
// becomes '\”); arguments with NUL or line breaks are refused.
func ShellCommand(argv ...string) (string, error) {
	if len(argv) == 0 {
		return "", fmt.Errorf("empty command: %w", ErrBadValue)
	}
	q := make([]string, len(argv))
	for i, a := range argv {
		if strings.ContainsAny(a, "\x00\n\r") {
			return "", fmt.Errorf("command argument %q: %w", a, ErrBadValue)
		}
		q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return strings.Join(q, " "), nil
}
