package xenbackend

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"time"
)

// A live snapshot runs "xl migrate" with our receiver (Receive). xl leaves
// the source domain in one of three states when that goes wrong:
//
//   - the receiver dies or fails before the sender's go (mid-stream, never
//     sending the banner, a failed sink): xl resumes the domain itself
//     (suspend_cancel if it was suspended already) and exits non-zero; the
//     domain runs under its own name;
//   - the receiver never sends the banner and never exits: xl waits for it
//     forever without touching the domain; the caller must kill xl (ending
//     its context), and the domain runs on;
//   - the receiver fails after the go without its report (it dies, or its
//     pipe breaks): xl has renamed the domain NAME--migratedaway and leaves
//     it suspended ("---ss-": shut down for suspend), says "Domain state is
//     now undefined" and exits non-zero. This one RecoverDomain repairs.
//
// xl has no command to resume a suspended domain; libxl_domain_resume (with
// suspend_cancel, so that the guest sees its suspend hypercall fail and
// carries on without reconnecting its devices) is reached from xl only
// after "xl save -c". A save of a domain that is already suspended first
// asks the guest to suspend through xenstore (control/shutdown = "suspend")
// and waits up to 60 s for an acknowledgement a suspended guest cannot
// give; clearing that node for it, as the guest would, lets the save go on
// at once, and its resume brings the domain back.

// Recovery says what RecoverDomain did.
type Recovery struct {
	// Before is the domain as "xl list" showed it first (its name may end
	// in MigratedAway).
	Before Domain
	// Renamed: the domain was NAME--migratedaway and was renamed NAME.
	Renamed bool
	// Resumed: the domain was suspended and was resumed (suspend_cancel).
	Resumed bool
	// After is the domain as "xl list" showed it at the end.
	After Domain
}

// Suspended says whether the domain has shut down for suspend: the state a
// save or migration leaves it in, from which only a resume brings it back.
func (d Domain) Suspended() bool { return d.Shutdown() && d.State[4] == 's' }

// Xenstore reads and writes xenstore paths (in dom0: xenstore-read and
// xenstore-write). RecoverDomain uses it to acknowledge a suspend request
// for a guest that is already suspended.
type Xenstore interface {
	Read(ctx context.Context, path string) (string, error)
	Write(ctx context.Context, path, value string) error
}

// ErrNoDomain is returned by RecoverDomain when neither NAME nor
// NAME--migratedaway exists.
var ErrNoDomain = errors.New("no such domain")

// ErrAmbiguous is returned by RecoverDomain when both NAME and
// NAME--migratedaway exist: one of them came from elsewhere, and which one
// should run is not RecoverDomain's to guess.
var ErrAmbiguous = errors.New("both the domain and its migrated-away copy exist")

// ErrNotRecovered is returned by RecoverDomain when the domain still does
// not run after the repair.
var ErrNotRecovered = errors.New("domain not running after recovery")

// RecoverDomain brings the domain name back to running under its own name
// after a live snapshot failed, whatever xl left it as: it renames
// NAME--migratedaway back to NAME ("xl rename") and resumes a suspended
// domain (see above; xs may be nil, and the resume then waits for libxl's
// 60 s timeout). A domain running already is left alone, and so is one
// paused by its controller (xl pause): a pause is the caller's to undo.
// Call it after every failed "xl migrate" of a live snapshot, once xl has
// exited (or been killed).
func RecoverDomain(ctx context.Context, r Runner, xs Xenstore, name string) (Recovery, error) {
	var rec Recovery
	if err := CheckDomainName(name); err != nil {
		return rec, err
	}
	x := XL{R: r}
	d, err := findRecoverable(ctx, x, name)
	if err != nil {
		return rec, err
	}
	rec.Before = d
	if d.Name != name {
		if _, err := r.Run(ctx, Command{Args: []string{"rename", d.ID.arg(), name}}); err != nil {
			return rec, fmt.Errorf("recover %s: %w", name, err)
		}
		rec.Renamed = true
	}
	if d.Suspended() {
		if err := resumeSuspended(ctx, x, xs, d.ID); err != nil {
			return rec, fmt.Errorf("recover %s: resume: %w", name, err)
		}
		rec.Resumed = true
	}
	after, ok, err := x.Lookup(ctx, d.ID)
	if err != nil {
		return rec, fmt.Errorf("recover %s: %w", name, err)
	}
	if !ok {
		return rec, fmt.Errorf("recover %s: domain %d is gone: %w", name, d.ID, ErrNotRecovered)
	}
	rec.After = after
	if after.Name != name || after.Shutdown() || strings.ContainsAny(after.State, "cd") {
		return rec, fmt.Errorf("recover %s: domain %d is %s in state %s: %w", name, d.ID, after.Name, after.State, ErrNotRecovered)
	}
	return rec, nil
}

// findRecoverable returns the one domain named name or
// name+MigratedAway.
func findRecoverable(ctx context.Context, x XL, name string) (Domain, error) {
	doms, err := x.List(ctx)
	if err != nil {
		return Domain{}, fmt.Errorf("recover %s: %w", name, err)
	}
	var own, away []Domain
	for _, d := range doms {
		switch d.Name {
		case name:
			own = append(own, d)
		case name + MigratedAway:
			away = append(away, d)
		}
	}
	switch {
	case len(own)+len(away) == 0:
		return Domain{}, fmt.Errorf("recover %s: %w", name, ErrNoDomain)
	case len(own)+len(away) > 1:
		return Domain{}, fmt.Errorf("recover %s: %w", name, ErrAmbiguous)
	case len(away) == 1:
		return away[0], nil
	}
	return own[0], nil
}

// suspendPoll is how often resumeSuspended looks for libxl's suspend
// request in xenstore while "xl save -c" runs.
const suspendPoll = 10 * time.Millisecond

// resumeSuspended resumes the suspended domain id through "xl save -c ID
// /dev/null", acknowledging (with xs) the suspend request libxl writes
// first, as the guest would if it could run.
func resumeSuspended(ctx context.Context, x XL, xs Xenstore, id DomID) error {
	done := make(chan error, 1)
	go func() { done <- x.Save(ctx, id, "/dev/null", LeaveRunning) }()
	if xs == nil {
		return <-done
	}
	path := fmt.Sprintf("/local/domain/%d/control/shutdown", id)
	tick := time.NewTicker(suspendPoll)
	defer tick.Stop()
	acked := false
	for {
		select {
		case err := <-done:
			return err
		case <-tick.C:
			if acked {
				continue
			}
			// An error (the node not there yet) is not worth stopping
			// for: the save ends on its own at libxl's timeout.
			if v, err := xs.Read(ctx, path); err == nil && v == "suspend" {
				acked = xs.Write(ctx, path, "") == nil
			}
		}
	}
}

// ExecXenstore runs dom0's xenstore-read and xenstore-write.
type ExecXenstore struct {
	// Dir holds the two programs; "" means /usr/bin (Debian's
	// xenstore-utils).
	Dir string
}

func (e ExecXenstore) bin(name string) string {
	if e.Dir == "" {
		return "/usr/bin/" + name
	}
	return strings.TrimRight(e.Dir, "/") + "/" + name
}

// Read runs "xenstore-read PATH" and returns the value.
func (e ExecXenstore) Read(ctx context.Context, path string) (string, error) {
	if err := checkXenstorePath(path); err != nil {
		return "", err
	}
	out, err := exec.CommandContext(ctx, e.bin("xenstore-read"), path).Output()
	if err != nil {
		return "", fmt.Errorf("xenstore-read %s: %w", path, err)
	}
	return strings.TrimSuffix(string(out), "\n"), nil
}

// Write runs "xenstore-write PATH VALUE".
func (e ExecXenstore) Write(ctx context.Context, path, value string) error {
	if err := checkXenstorePath(path); err != nil {
		return err
	}
	if strings.ContainsAny(value, "\x00\n") {
		return fmt.Errorf("xenstore value %q: %w", value, ErrBadValue)
	}
	if out, err := exec.CommandContext(ctx, e.bin("xenstore-write"), path, value).CombinedOutput(); err != nil {
		return fmt.Errorf("xenstore-write %s: %w: %s", path, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// checkXenstorePath accepts an absolute xenstore path of the characters
// xenstore allows (letters, digits, "-/_@") that no program reads as an
// option.
func checkXenstorePath(p string) error {
	if !strings.HasPrefix(p, "/") || strings.Contains(p, "//") {
		return fmt.Errorf("xenstore path %q: %w", p, ErrBadValue)
	}
	for _, c := range p {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("-/_@", c)) {
			return fmt.Errorf("xenstore path %q: %w", p, ErrBadValue)
		}
	}
	return nil
}
