package xentest

import (
	"regexp"
	"time"
)

// serialSwitchLine is Xen's answer to Ctrl-A three times on the serial
// line: "(XEN) *** Serial input to DOM0 (type 'CTRL-a' three times to
// switch input)", or "... to Xen".
var serialSwitchLine = regexp.MustCompile(`\*\*\* Serial input to (Xen|DOM0)\b`)

// serialSwitch reports whether line is Xen's account of a switch of the
// serial input and, if so, whether the input now goes to dom0.
func serialSwitch(line string) (toDom0, ok bool) {
	m := serialSwitchLine.FindStringSubmatch(line)
	if m == nil {
		return false, false
	}
	return m[1] == "DOM0", true
}

// wakeSeq is what a wake sends when the input goes to dom0: three Ctrl-A
// give it to Xen, three more give it back.
const wakeSeq = "\x01\x01\x01\x01\x01\x01"

// wake runs until QEMU exits. Once Xen has given the serial input to dom0
// (its first "Serial input to DOM0" line, at the end of its boot), every
// m.wakeAfter of console silence gets a wake (BootConfig.Wake): Ctrl-A six
// times, or three if Xen's last switch line left the input with Xen, so
// that dom0 has its input back whatever was lost. Xen's switch lines do
// not end the silence (read), so a machine that is awake but silent gets a
// wake every m.wakeAfter and its stall deadline still runs.
func (m *Machine) wake() {
	tick := time.NewTicker(m.wakeAfter / 5)
	defer tick.Stop()
	var waked time.Time // when the last wake was sent
	for range tick.C {
		m.mu.Lock()
		last, exited, seen, toDom0 := m.last, m.exited, m.seenDom0, m.toDom0
		m.mu.Unlock()
		if exited {
			return
		}
		if !seen || time.Since(last) < m.wakeAfter || time.Since(waked) < m.wakeAfter {
			continue
		}
		seq := wakeSeq
		if !toDom0 {
			seq = wakeSeq[:3]
		}
		if err := m.Send(seq); err != nil {
			m.diagLog("wake: %v", err)
			return
		}
		waked = time.Now()
		m.mu.Lock()
		m.wakes++
		n := m.wakes
		m.mu.Unlock()
		m.diagLog("wake %d: console silent %v, %d Ctrl-A sent", n, time.Since(last).Round(time.Second), len(seq))
	}
}

// Wakes returns how many wakes the harness has sent (BootConfig.Wake).
func (m *Machine) Wakes() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.wakes
}
