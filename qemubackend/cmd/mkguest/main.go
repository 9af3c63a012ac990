// Command mkguest builds (or finds cached) the guest kernel and initramfs used
// by the QEMU backend and prints their paths.
//
//	go run ./qemubackend/cmd/mkguest [-cache .cache/guest]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/vnsnap/vnsnap/qemubackend/guestimg"
)

func main() {
	cache := flag.String("cache", ".cache/guest", "cache directory")
	root := flag.String("root", ".", "root of the vnsnap module")
	flag.Parse()
	img, err := guestimg.Build(context.Background(), guestimg.Config{CacheDir: *cache, ModuleRoot: *root})
	if err != nil {
		fmt.Fprintln(os.Stderr, "mkguest:", err)
		os.Exit(1)
	}
	fmt.Printf("kernel=%s\ninitrd=%s\nversion=%s\nrebuilt=%v\n", img.Kernel, img.Initrd, img.KernelVersion, img.Rebuilt)
}
