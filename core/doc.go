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
//
// # The failure contract between the core and a backend
//
// Every backend (the simulator, QEMU, Xen, a cluster agent) keeps these
// rules, and the core relies on nothing else:
//
//  1. A backend carries out the commands of one Step in order. At the first
//     command that fails it stops: the rest of the batch is not carried out,
//     and the failure is reported as an event, Failed{VM} for a command that
//     concerns one VM (core.VMCommand), SnapshotFailed for one that concerns
//     the whole VNE (Commit, SetTimer) and for failures that belong to no VM
//     (a cancelled context).
//  2. A batch that ends with Abort is the abort's cleanup: the backend
//     carries out every command of it even if one fails, and reports such
//     failures to its caller, not to the core (which has ended).
//  3. Commands that the abort may re-issue are idempotent: SetColour to the
//     epoch a port already has changes nothing; ResumeVM of a running VM
//     changes nothing and still answers VMResumed; ThrottleVM 0 of an
//     unthrottled VM and CancelCopy or CancelTimer of nothing are no-ops.
//  4. A backend never resumes, recolours or throttles a VM on its own: only
//     the core's commands move a VM, so what a test sees is what the core did.
//
// On abort the core cannot know which commands of a failed batch were carried
// out, so it re-issues every colour change, unthrottle and resume each VM may
// still need: after the abort batch every VM runs, unthrottled, on the
// snapshot's epoch, whatever the algorithm (TestCoordinatorProperties checks
// this with failures injected in the middle of batches).
package core
