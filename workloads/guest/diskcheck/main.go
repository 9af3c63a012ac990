// Command diskcheck checks that a guest's disk and its memory come from the
// same moment. It keeps a generation counter in memory and in the disk's
// first block, and every interval reads that block (O_DIRECT: from the
// disk, not the guest's page cache), checks that it holds the generation
// the program last wrote, prints "DISK n" and writes generation n+1
// (O_DIRECT and O_SYNC: on the disk when the write returns).
//
// Restored from a snapshot, the program goes on from the snapshot point
// with the disk frozen there: a disk frozen before or after its memory
// holds another generation, and the program prints "DISK FAIL want N got
// M" and exits 1. A write in flight at the snapshot point is sent again by
// the restored guest's driver, so it is not a failure.
//
// A disk whose first block holds no record (a fresh disk) starts at
// generation 0.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

const (
	block = 4096
	magic = "vnsnap-diskcheck gen "
)

func main() {
	dev := flag.String("dev", "/dev/xvda", "the disk")
	interval := flag.Duration("interval", 200*time.Millisecond, "time between checks")
	wait := flag.Duration("wait", time.Minute, "how long to wait for the disk to appear")
	flag.Parse()
	if err := run(*dev, *interval, *wait, os.Stdout, nil); err != nil {
		fmt.Printf("DISK FAIL %v\n", err)
		os.Exit(1)
	}
}

// run checks dev until an error, or until stop is closed (nil: never).
func run(dev string, interval, wait time.Duration, out io.Writer, stop <-chan struct{}) error {
	var f *os.File
	for deadline := time.Now().Add(wait); ; {
		var err error
		f, err = os.OpenFile(dev, os.O_RDWR|syscall.O_DIRECT|syscall.O_SYNC, 0)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
	defer f.Close()
	// O_DIRECT wants an aligned buffer: an anonymous mapping is page
	// aligned.
	buf, err := unix.Mmap(-1, 0, block, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		return fmt.Errorf("buffer: %w", err)
	}
	defer unix.Munmap(buf)
	read := func() (uint64, bool, error) {
		if _, err := f.ReadAt(buf, 0); err != nil {
			return 0, false, fmt.Errorf("read %s: %w", dev, err)
		}
		rest, ok := bytes.CutPrefix(buf, []byte(magic))
		if !ok {
			return 0, false, nil
		}
		end := bytes.IndexByte(rest, '\n')
		if end < 0 {
			return 0, false, nil
		}
		n, err := strconv.ParseUint(string(rest[:end]), 10, 64)
		return n, err == nil, nil
	}
	write := func(n uint64) error {
		clear(buf)
		copy(buf, magic+strconv.FormatUint(n, 10)+"\n")
		if _, err := f.WriteAt(buf, 0); err != nil {
			return fmt.Errorf("write %s: %w", dev, err)
		}
		return nil
	}
	gen, ok, err := read()
	if err != nil {
		return err
	}
	if !ok {
		if err := write(0); err != nil {
			return err
		}
	}
	fmt.Fprintf(out, "DISK START dev=%s gen=%d\n", dev, gen)
	for {
		got, ok, err := read()
		switch {
		case err != nil:
			return err
		case !ok:
			return fmt.Errorf("want %d got no record", gen)
		case got != gen:
			return fmt.Errorf("want %d got %d", gen, got)
		}
		fmt.Fprintf(out, "DISK %d\n", gen)
		gen++
		if err := write(gen); err != nil {
			return err
		}
		select {
		case <-stop:
			return nil
		case <-time.After(interval):
		}
	}
}
