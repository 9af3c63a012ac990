// Package guestimg builds the guest images the QEMU backend boots: the host's
// Debian kernel plus an initramfs (newc cpio, gzip) holding busybox-static,
// the NIC and disk modules with their dependencies, an /init script, and the
// static guest programs of workloads/guest.
//
// Images are cached: Build hashes every input (kernel, modules, busybox, the
// init script, the freshly compiled guest programs) and rewrites the cache
// only when the hash changes. The guest is configured entirely from the kernel
// command line (see KernelArgs), so one image serves every VM.
package guestimg
