package netnstest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Command returns a command that runs name with args inside h's namespace
// (through `ip netns exec`, which execs name: the process's PID is that of
// name, so killing it kills the program). Only the network namespace (and
// /sys, /etc/netns) differ from the caller's: files and unix sockets are
// shared, so a process in h can serve a unix socket to a process outside.
func (h Host) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", h.Name, name}, args...)...)
}

// Do runs fn on an OS thread that has entered h's network namespace. A
// socket fn creates belongs to h for its whole life, whichever goroutine
// uses it later; fn must not rely on goroutines it starts being in h.
func (h Host) Do(fn func() error) error { return inNetNS(h.Name, fn) }

func inNetNS(ns string, fn func() error) error {
	target, err := os.Open("/run/netns/" + ns)
	if err != nil {
		return fmt.Errorf("netns %s: %w", ns, err)
	}
	defer target.Close()
	errc := make(chan error, 1)
	// A thread of its own, so a thread that cannot return to the original
	// namespace dies with its goroutine instead of serving others.
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %w", ns, err)
			runtime.UnlockOSThread()
			return
		}
		ferr := fn()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns back from %s: %w", ns, err) // thread stays locked: it exits
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// Processes returns the PIDs and names (/proc/PID/comm) of the processes
// that run in h's network namespace, sorted by PID: a test checks with it
// where its processes run, and that none is left.
func (h Host) Processes() ([]Process, error) {
	var want unix.Stat_t
	if err := unix.Stat("/run/netns/"+h.Name, &want); err != nil {
		return nil, fmt.Errorf("netns %s: %w", h.Name, err)
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var out []Process
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		var st unix.Stat_t
		if unix.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &st) != nil || st.Ino != want.Ino || st.Dev != want.Dev {
			continue // gone, or elsewhere
		}
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		out = append(out, Process{PID: pid, Name: strings.TrimSpace(string(comm))})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].PID < out[j].PID })
	return out, nil
}

// Process is a process found in a namespace.
type Process struct {
	PID  int
	Name string
}
