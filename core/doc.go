// Package core is the VNsnap snapshot protocol as pure, deterministic logic.
//
// Everything in core is a state machine: an event goes in (Coordinator.Step), a
// list of commands comes out. Time is read from an injected Clock, timers are
// commands (SetTimer) answered later by events (TimerFired), and every side
// effect a command asks for reports back as an event. core never starts a
// goroutine, never sleeps, never reads the OS clock and never touches a file,
// socket or process, so the discrete-event simulator (simbackend) and the real
// backends (QEMU, Xen) drive exactly the same code.
//
// The package holds:
//   - the per-VM live copy (vm.go): pre-copy rounds with a pluggable stop
//     policy (policy.go), the final pause, the snapshot point, resume, and the
//     stop-and-copy and copy-on-write methods. It runs in two modes: Driven,
//     where core orders every copy round (the simulator), and Observed, where
//     the hypervisor runs its own pre-copy loop and reports passes (QEMU's
//     migration thread, Xen's libxc);
//   - the two sinks (disk and memory) and the per-host RAM budget of the
//     memory sink (budget.go);
//   - the Coordinator of one VNE snapshot (coordinator.go), with clean abort;
//   - the algorithms (algorithm.go) and the switch's colour rule with epoch
//     numbers (rule.go).
//
// The consistency checker lives in core/cut.
package core
