// Command xenreceive is the static test binary TestXenLiveSnapshotReceiver
// runs in dom0.
//
//	xenreceive SAVEFILE        as xl migrate's receiver command: stores the
//	                           stream in SAVEFILE and gives the domain back
//	xenreceive -parse FILE     parses a save file (e.g. from xl save -c)
//	xenreceive -seed FILE      prints FILE without its pages but one
//	                           (gzip, base64), a fuzz seed from a real stream
//
// It reports on stderr (the dom0 console) in lines starting VNSNAP-RECV.
package main

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"io"
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
	if len(os.Args) == 3 && os.Args[1] == "-seed" {
		if err := seed(os.Args[2]); err != nil {
			fmt.Fprintln(os.Stderr, "VNSNAP-XEN-FAIL xenreceive -seed:", err)
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

// seed walks a save file's framing on its own (a second reading of the
// specs, not the parser under test) and prints it with every PAGE_DATA
// record dropped but the first, cut to its first page with data.
func seed(name string) error {
	f, err := os.Open(name)
	if err != nil {
		return err
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 1<<20)
	var out bytes.Buffer
	head := make([]byte, 48)
	if _, err := io.ReadFull(r, head); err != nil {
		return err
	}
	out.Write(head)
	if _, err := io.CopyN(&out, r, int64(binary.LittleEndian.Uint32(head[44:]))+16); err != nil { // config, libxl header
		return err
	}
	// record reads one record: its header and its padded body.
	record := func() (uint32, []byte, []byte, error) {
		h := make([]byte, 8)
		if _, err := io.ReadFull(r, h); err != nil {
			return 0, nil, nil, err
		}
		n := binary.LittleEndian.Uint32(h[4:])
		if n > 128<<20 {
			return 0, nil, nil, fmt.Errorf("record length %d", n)
		}
		body := make([]byte, (n+7)&^7)
		_, err := io.ReadFull(r, body)
		return binary.LittleEndian.Uint32(h), h, body, err
	}
	for {
		typ, h, body, err := record()
		if err != nil {
			return err
		}
		out.Write(h)
		out.Write(body)
		if typ == 0 {
			break
		}
		if typ != 1 { // LIBXC_CONTEXT: the libxc stream follows
			continue
		}
		if _, err := io.CopyN(&out, r, 40); err != nil {
			return err
		}
		kept := false
		for {
			typ, h, body, err := record()
			if err != nil {
				return err
			}
			if typ != 1 {
				out.Write(h)
				out.Write(body)
				if typ == 0 {
					break
				}
				continue
			}
			if kept {
				continue
			}
			count := binary.LittleEndian.Uint32(body)
			for i := range count {
				pfn := binary.LittleEndian.Uint64(body[8+8*i:])
				if pfn>>60 < 0xd {
					data := body[8+8*count : 8+8*count+4096]
					rec := binary.LittleEndian.AppendUint32(nil, 1)
					rec = binary.LittleEndian.AppendUint32(rec, 8+8+4096)
					rec = binary.LittleEndian.AppendUint64(rec, 1)
					rec = binary.LittleEndian.AppendUint64(rec, pfn)
					out.Write(append(rec, data...))
					kept = true
					break
				}
			}
		}
	}
	var z bytes.Buffer
	zw := gzip.NewWriter(&z)
	zw.Write(out.Bytes())
	if err := zw.Close(); err != nil {
		return err
	}
	enc := base64.StdEncoding.EncodeToString(z.Bytes())
	for len(enc) > 0 {
		n := min(len(enc), 76)
		fmt.Fprintf(os.Stderr, "VNSNAP-RECV-SEED %s\n", enc[:n])
		enc = enc[n:]
	}
	fmt.Fprintf(os.Stderr, "VNSNAP-RECV-SEED-END bytes=%d\n", out.Len())
	return nil
}
