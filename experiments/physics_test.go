package experiments

import (
	"path/filepath"
	"testing"
)

// TestPhysics checks on small configs that the numbers move the way the
// physics says: more dirtying, longer snapshots; the memory sink, shorter
// downtime than the disk sink; copy-on-write, a window no larger than
// VNsnap's on the same sink; uncoordinated snapshots, orphans.
func TestPhysics(t *testing.T) {
	tables := func(name string) Tables {
		e, err := Lookup(name)
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		if _, err := Run(e, Options{ConfigFile: filepath.Join("testdata", e.Name+".config.json"), Seeds: 2, Out: dir}); err != nil {
			t.Fatal(err)
		}
		_, ts, err := Load(e, dir)
		if err != nil {
			t.Fatal(err)
		}
		return ts
	}
	e2 := tables("e2").Main()
	for _, sink := range []string{"disk", "memory"} {
		lo := mean(values(e2, "duration_ms", "policy", "xen", "sink", sink, "dirty_mibps", "0.0"))
		hi := mean(values(e2, "duration_ms", "policy", "xen", "sink", sink, "dirty_mibps", "32.0"))
		if hi <= lo {
			t.Errorf("%s sink: duration %.0f ms at 32 MiB/s, %.0f ms idle; want longer with more dirtying", sink, hi, lo)
		}
	}
	e1 := tables("e1").Main()
	for _, m := range []string{"64", "256"} {
		d := median(values(e1, "downtime_ms", "algo", "vnsnap", "sink", "disk", "mem_mib", m))
		me := median(values(e1, "downtime_ms", "algo", "vnsnap", "sink", "memory", "mem_mib", m))
		if me >= d {
			t.Errorf("%s MiB: median downtime %.2f ms with the memory sink, %.2f ms with the disk sink; want memory shorter", m, me, d)
		}
	}
	// Copy-on-write's pause costs what pre-copy's final pause costs when
	// nothing is left to copy (the fixed costs and the device state, saved
	// through the sink): on the same sink its window is never larger, and
	// smaller when pre-copy's VMs reach their points apart. (The memory
	// sink saves the device state faster than cow/disk does.)
	e3 := withVariant(tables("e3").Main())
	smaller := 0
	for _, w := range e3.Distinct("workload") {
		for _, n := range e3.Distinct("vms") {
			cow := mean(values(e3, "window_ms", "workload", w, "vms", n, "variant", "cow/disk"))
			x := mean(values(e3, "window_ms", "workload", w, "vms", n, "variant", "vnsnap/disk"))
			if cow > x+1e-6 {
				t.Errorf("%s, %s VMs: window %.2f ms with cow, %.2f ms with vnsnap/disk; want cow no larger", w, n, cow, x)
			}
			if cow < x-1e-6 {
				smaller++
			}
		}
	}
	if smaller == 0 {
		t.Error("cow's window is never smaller than vnsnap/disk's, want it smaller somewhere")
	}
	e6 := withVariant(tables("e6").Main())
	for _, v := range e6.Distinct("variant") {
		o := maxOf(values(e6, "orphans", "variant", v))
		if v == "uncoordinated/disk" && o == 0 {
			t.Errorf("uncoordinated: got 0 orphans, want some")
		}
		if v != "uncoordinated/disk" && o != 0 {
			t.Errorf("%s: got %.0f orphans, want 0", v, o)
		}
	}
}
