// Command xenreceive is the static test binary TestXenLiveSnapshotReceiver
// runs in dom0.
//
//	xenreceive SAVEFILE        as xl migrate's receiver command: stores the
//	                           stream in SAVEFILE and gives the domain back
//	xenreceive -parse FILE     parses a save file (e.g. from xl save -c)
//
// It reports on stderr (the dom0 console) in lines starting VNSNAP-RECV.
package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"

	"github.com/vnsnap/vnsnap/xenbackend"
)

func main() {
	if len(os.Args) == 3 && os.Args[1] == "-parse" {
		if err := parse(os.Args[2]); err != nil {
			fmt.Fprintln(os.Stderr, "VNSNAP-XEN-FAIL xenreceive -parse:", err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: xenreceive SAVEFILE | xenreceive -parse FILE")
		os.Exit(2)
	}
	if err := receive(os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, "VNSNAP-XEN-FAIL xenreceive:", err)
		os.Exit(1)
	}
}

// summary is one line about a stream and the distinct pages it carried.
func summary(info xenbackend.StreamInfo, distinct int) string {
	return fmt.Sprintf("bytes=%d pages=%d records=%d distinct=%d type=%d libxc=v%d xen=%d.%d config=%d",
		info.Bytes, info.Pages, info.PageRecords, distinct, info.DomainType, info.LibxcVersion,
		info.XenMajor, info.XenMinor, len(info.Config))
}

func parse(name string) error {
	f, err := os.Open(name)
	if err != nil {
		return err
	}
	defer f.Close()
	seen := map[uint64]bool{}
	info, err := xenbackend.ReadStream(bufio.NewReaderSize(f, 1<<20), func(pfn uint64, _ []byte) error {
		seen[pfn] = true
		return nil
	})
	if err != nil {
		return err
	}
	st, err := f.Stat()
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "VNSNAP-RECV-PARSED %s filesize=%d\n", summary(info, len(seen)), st.Size())
	return nil
}

func receive(name string) error {
	f, err := os.Create(name)
	if err != nil {
		return err
	}
	defer f.Close()
	seen := map[uint64]bool{}
	hooks := xenbackend.ReceiveHooks{
		Page: func(pfn uint64, _ []byte) error {
			seen[pfn] = true
			return nil
		},
		Stored: func(info xenbackend.StreamInfo) error {
			if err := f.Sync(); err != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, "VNSNAP-RECV-STORED %s\n", summary(info, len(seen)))
			return nil
		},
		Paused: func(ctx context.Context) error {
			// The source domain, paused and renamed: show its state.
			out, err := exec.CommandContext(ctx, "/usr/lib/xen-4.17/bin/xl", "list").Output()
			if err != nil {
				return fmt.Errorf("xl list: %w", err)
			}
			state := "absent"
			for _, l := range strings.Split(string(out), "\n") {
				if f := strings.Fields(l); len(f) >= 5 && f[0] == "domu1--migratedaway" {
					state = f[4]
				}
			}
			fmt.Fprintf(os.Stderr, "VNSNAP-RECV-PAUSED migratedaway=%s\n", state)
			return nil
		},
	}
	res, err := xenbackend.Receive(context.Background(), os.Stdin, os.Stdout, f, hooks)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "VNSNAP-RECV-DONE bytes=%d\n", res.Stream.Bytes)
	return f.Close()
}
