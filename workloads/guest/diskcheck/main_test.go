package main

import (
	"bufio"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestDiskcheck runs the check on a file: it counts on, goes on from a
// disk that holds its record (a restart on the same disk), and fails when
// the disk holds another generation than the one it wrote last (a disk
// frozen at another moment than the memory).
func TestDiskcheck(t *testing.T) {
	disk := filepath.Join(t.TempDir(), "disk.raw")
	if err := os.WriteFile(disk, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	start := func() (lines <-chan string, done <-chan error, stop chan struct{}) {
		pr, pw := io.Pipe()
		stop = make(chan struct{})
		errc := make(chan error, 1)
		go func() {
			err := run(disk, time.Millisecond, time.Second, pw, stop)
			pw.Close()
			errc <- err
		}()
		ch := make(chan string, 1000)
		go func() {
			sc := bufio.NewScanner(pr)
			for sc.Scan() {
				ch <- sc.Text()
			}
			close(ch)
		}()
		return ch, errc, stop
	}
	upTo := func(lines <-chan string, want string) {
		t.Helper()
		for l := range lines {
			if l == want {
				return
			}
		}
		t.Fatalf("no line %q", want)
	}
	lines, done, stop := start()
	if l := <-lines; l != "DISK START dev="+disk+" gen=0" {
		t.Fatalf("first line %q", l)
	}
	upTo(lines, "DISK 5")
	close(stop)
	for range lines { // the pipe's reader: run may be writing a line
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(disk)
	if !strings.HasPrefix(string(b), magic) {
		t.Fatalf("disk holds %q, want a record", b[:40])
	}

	// Restarted on its disk, it goes on from the record.
	lines, done, stop = start()
	if l := <-lines; !strings.HasPrefix(l, "DISK START") || l == "DISK START dev="+disk+" gen=0" {
		t.Fatalf("restart: first line %q, want the generation on the disk", l)
	}
	<-lines
	// Another moment's disk: an older record written under it (again
	// until the check reads it: the check's own write may land after one).
	go func() {
		for range lines {
		}
	}()
	f, err := os.OpenFile(disk, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for try := 0; ; try++ {
		if try == 10000 {
			close(stop)
			t.Fatalf("the check never saw its disk rewound: %v", <-done)
		}
		if _, err := f.WriteAt([]byte(magic+"1\n"), 0); err != nil {
			t.Fatal(err)
		}
		select {
		case err = <-done:
		case <-time.After(time.Millisecond):
			continue
		}
		break
	}
	close(stop)
	if err == nil || !strings.Contains(err.Error(), "got 1") {
		t.Fatalf("disk rewound under the check: got %v, want a failure naming generation 1", err)
	}
}
