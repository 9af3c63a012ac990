// Command heartbeat prints "HB <counter>" on stdout every interval (10 ms by
// default). The host stamps each line with its own clock when it arrives on
// the serial console; the largest gap between two lines around a snapshot is
// the VM's pause seen from outside, and the counter after a restore shows
// where the snapshot was taken.
package main

import (
	"flag"
	"os"
	"strconv"
	"time"
)

func main() {
	interval := flag.Duration("interval", 10*time.Millisecond, "time between heartbeat lines")
	flag.Parse()
	t := time.NewTicker(*interval)
	defer t.Stop()
	buf := make([]byte, 0, 32)
	for n := uint64(1); ; n++ {
		buf = append(buf[:0], "HB "...)
		buf = strconv.AppendUint(buf, n, 10)
		buf = append(buf, '\n')
		// One write per line: the tty layer keeps it whole.
		if _, err := os.Stdout.Write(buf); err != nil {
			os.Exit(1)
		}
		<-t.C
	}
}
