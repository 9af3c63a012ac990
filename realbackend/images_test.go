package realbackend

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vnsnap/vnsnap/core"
	"github.com/vnsnap/vnsnap/internal/testutil"
	"github.com/vnsnap/vnsnap/qemubackend"
	"github.com/vnsnap/vnsnap/qemubackend/guestimg"
	"github.com/vnsnap/vnsnap/qemubackend/qemutest"
	"github.com/vnsnap/vnsnap/qemubackend/qemutest/progress"
	"github.com/vnsnap/vnsnap/store"
	"github.com/vnsnap/vnsnap/store/pages"
)

// midBlock returns the number and object file of a non-zero block in the
// middle of the page image whose index is the hex checksum sum, reading
// the store's files as store/doc.go lays them out.
func midBlock(t *testing.T, root, vm, sum string) (int, string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "images", sum[:2], sum))
	if err != nil {
		t.Fatal(err)
	}
	x, err := pages.DecodeIndex(vm, b)
	if err != nil {
		t.Fatal(err)
	}
	for i := len(x.Blocks) / 2; i < len(x.Blocks); i++ {
		if a := x.Blocks[i].Addr; x.Blocks[i].Mask != 0 {
			h := a.String()
			return i, filepath.Join(root, "blocks", h[:2], h)
		}
	}
	t.Fatalf("vm %s: no non-zero block in the second half of its image", vm)
	return 0, ""
}

// TestPageImagesIdleDedup snapshots an idle VNE of two built-in guests
// twice (vnsnap-memory): every VM's memory is a page image in QEMU's
// mapped-ram format, not a stream; zero pages make the stored size a
// fraction of the memory; the second snapshot stores at most 5 % of the
// memory as new bytes; and the second snapshot restores with both guests
// running on from it, each with its RAM on its restored image file
// (checkOnFile), and no restore fell back to QEMU loading the whole file
// (the backend logs nothing).
func TestPageImagesIdleDedup(t *testing.T) {
	h := requireQEMU(t)
	img := guestImage(t)
	logDir := t.TempDir()
	ctx := qemutest.Context(t, 15*time.Minute, progress.DirBytes(logDir))
	console := consoles(t, logDir)
	qh := qemubackend.NewHypervisor(h)
	var logged testutil.SyncBuffer
	qh.Logger = slog.New(slog.NewTextHandler(&logged, nil))
	o := Options{Hypervisor: qh, Image: img, Dir: shortDir(t), Console: func(vm string) io.Writer { return console(vm) }}
	l := &Layout{Name: "idle", Hosts: []HostLayout{{Name: "h1", Address: "127.0.0.1"}}}
	for _, n := range []string{"p", "q"} {
		l.VMs = append(l.VMs, VMLayout{
			Name: n, MemoryMiB: testMemMiB, VCPUs: 1, Machine: h.Machine, MAC: qemubackend.MACFor(n),
			Kernel: img.Kernel, Initrd: img.Initrd, Heartbeat: true,
			Append: guestimg.KernelArgs("", "", guestimg.Program{Name: "heartbeat", Args: []string{"-interval=20ms"}}),
		})
	}
	env, err := BootLayout(ctx, l, nil, o)
	if err != nil {
		t.Fatal(progress.Why(ctx, err))
	}
	t.Cleanup(func() { env.Close() })
	for i := range l.VMs {
		if _, _, err := qvm(env, i).Console.WaitFor(ctx, 0, isHeartbeat); err != nil {
			t.Fatalf("no heartbeat: %v", progress.Why(ctx, err))
		}
	}
	storeDir := t.TempDir()
	names := []string{"idle1", "idle2"}
	for _, n := range names {
		if _, err := env.Snapshot(ctx, SnapshotOptions{Store: storeDir, Name: n, Algorithm: core.VNsnap, Sink: core.MemorySink}); err != nil {
			t.Fatal(progress.Why(ctx, err))
		}
	}
	env.Close()

	infos, err := store.List(storeDir)
	if err != nil {
		t.Fatal(err)
	}
	if len(infos) != 2 {
		t.Fatalf("%d snapshots, want 2", len(infos))
	}
	var memory int64
	for k, n := range names {
		s, err := store.Open(storeDir, n)
		if err != nil {
			t.Fatal(err)
		}
		m := s.Manifest()
		if f := m.Labels[LabelImageFileFormat]; f != qemubackend.MappedRAMFormat {
			t.Errorf("%s: label %s = %q, want %q", n, LabelImageFileFormat, f, qemubackend.MappedRAMFormat)
		}
		memory = 0
		for _, vm := range m.VMs {
			im, err := s.Image(vm.Name, "memory")
			if err != nil {
				t.Errorf("%s: vm %s: %v (streams %+v)", n, vm.Name, err, vm.Streams)
				continue
			}
			if _, err := s.Reader(vm.Name, "memory"); err == nil {
				t.Errorf("%s: vm %s has a memory stream besides its page image", n, vm.Name)
			}
			if im.Length < int64(testMemMiB)<<20 {
				t.Errorf("%s: vm %s: image of %d bytes, less than the guest's %d MiB", n, vm.Name, im.Length, testMemMiB)
			}
			memory += im.Length
		}
		s.Close()
		in := infos[k]
		t.Logf("%s: memory %d bytes in %d images; logical %d, stored %d (%.1f %%), new %d (%.2f %% of memory), dedup %.1fx",
			n, memory, in.Images, in.Logical, in.Stored, 100*float64(in.Stored)/float64(in.Logical),
			in.Added.Bytes(), 100*float64(in.Added.Bytes())/float64(memory), in.DedupRatio())
		if in.Images != len(l.VMs) || in.Stored <= 0 || in.Stored >= in.Logical {
			t.Errorf("%s: %d images, stored %d of %d logical bytes: want %d images and zero pages not stored", n, in.Images, in.Stored, in.Logical, len(l.VMs))
		}
	}
	if added := infos[1].Added.Bytes(); added > memory/20 || added == 0 {
		t.Errorf("second snapshot of the idle VNE added %d bytes: want some and at most 5 %% of its %d bytes of memory", added, memory)
	}

	renv, _, err := Restore(ctx, storeDir, names[1], o)
	if err != nil {
		t.Fatal(progress.Why(ctx, err))
	}
	defer renv.Close()
	for i := range l.VMs {
		hb, _, err := qvm(renv, i).Console.WaitFor(ctx, 0, isHeartbeat)
		if err != nil {
			t.Fatalf("restored %s: no heartbeat: %v", l.VMs[i].Name, progress.Why(ctx, err))
		}
		if n, _ := hb.Heartbeat(); n < 2 {
			t.Errorf("restored %s: first heartbeat %d: want the count to go on from the snapshot, not a reboot", l.VMs[i].Name, n)
		}
		checkOnFile(t, renv, i)
	}
	if s := logged.String(); s != "" {
		t.Errorf("the QEMU backend logged %q during the VNE's life, want nothing (no restore fell back)", s)
	}
	noFail(t, renv, "restored")
}

// checkOnFile checks that env's i-th VM, restored from a page image, runs
// with its RAM on the image's file (qemubackend.RestoreOnFile), not on
// QEMU's own copy of it (the fallback): the port says so, and QEMU's
// memory map holds a shared mapping of the guest's size of an unlinked
// image file named for the VM (realbackend's newImageFile).
func checkOnFile(t testing.TB, env *Env, i int) {
	t.Helper()
	m := env.Machine(i).(*qemubackend.Machine)
	name := env.Layout.VMs[i].Name
	if err := m.RestoreFallback(); err != nil {
		t.Errorf("restored %s: fell back to QEMU loading the whole file: %v", name, err)
	}
	if !m.VM().RAMOnFile() {
		t.Errorf("restored %s: RAMOnFile false, want its RAM on the restored file", name)
	}
	maps, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", m.VM().Pid()))
	if err != nil {
		t.Fatal(err)
	}
	want := int64(env.Layout.VMs[i].MemoryMiB) << 20
	var found []string
	for _, line := range strings.Split(string(maps), "\n") {
		// start-end perms offset dev inode path [(deleted)]
		fs := strings.Fields(line)
		if len(fs) < 6 || !strings.HasPrefix(filepath.Base(fs[5]), "vnsnap-"+name+"-") {
			continue
		}
		found = append(found, line)
		var start, end uint64
		if _, err := fmt.Sscanf(fs[0], "%x-%x", &start, &end); err != nil {
			t.Fatalf("maps line %q: %v", line, err)
		}
		if fs[1] == "rw-s" && int64(end-start) == want && strings.HasSuffix(line, "(deleted)") {
			return
		}
	}
	t.Errorf("restored %s: QEMU's mappings of its image file: %q, want a shared one of %d bytes of the unlinked file", name, found, want)
}
