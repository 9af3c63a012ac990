package realbackend

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/vnsnap/vnsnap/realbackend/hv"
)

// TestFreshDisk: a disk image is never made over one an earlier run of
// the VNE left (a snapshot may name it as the image it froze): the next
// name is VM.STEM-N.FORMAT, and a restore accepts those names, and only
// those, for its VM and format.
func TestFreshDisk(t *testing.T) {
	dir := t.TempDir()
	e := &Env{opts: Options{Dir: dir}}
	want := filepath.Join(dir, "a.boot.raw")
	if got := e.freshDisk("a", "boot", "raw"); got != want {
		t.Fatalf("first boot image %s, want %s", got, want)
	}
	for _, f := range []string{"a.boot.raw", "a.boot-2.raw", "a.e1.raw"} {
		if err := os.WriteFile(filepath.Join(dir, f), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := e.freshDisk("a", "boot", "raw"), filepath.Join(dir, "a.boot-3.raw"); got != want {
		t.Errorf("boot image beside an earlier run's: %s, want %s", got, want)
	}
	if got, want := e.freshDisk("a", "e1", "raw"), filepath.Join(dir, "a.e1-2.raw"); got != want {
		t.Errorf("overlay beside an earlier run's: %s, want %s", got, want)
	}
	for name, ok := range map[string]bool{
		"a.boot.raw": true, "a.boot-3.raw": true, "a.e1-2.raw": true, "a.restore-e2-1.raw": true,
		"a.boot-x.raw": false, "a.e1-.raw": false, "b.boot-2.raw": false, "a.boot-2.qcow2": false, "a.boot.raw.freezing": false,
	} {
		m := restoreDisk.FindStringSubmatch(name)
		if got := m != nil && m[1] == "a" && m[2] == "raw"; got != ok {
			t.Errorf("%s as VM a's raw image: accepted %v, want %v", name, got, ok)
		}
	}
}

// diskHV is fakeHV with disk images (NewDisk copies the file) whose Start
// fails for the VM named failStart.
type diskHV struct {
	*fakeHV
	failStart string
}

func (d *diskHV) DiskFormat() string { return "fimg" }

func (d *diskHV) NewDisk(_ context.Context, base, path string) error {
	b, err := os.ReadFile(base)
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o600)
}

func (d *diskHV) Start(ctx context.Context, s hv.MachineSpec) (hv.Machine, error) {
	if s.Name == d.failStart {
		return nil, errors.New("no room for " + s.Name)
	}
	return d.fakeHV.Start(ctx, s)
}

// TestBootDiskImages: a boot makes each disk guest's image from the user's
// under a name no earlier run left (a second boot of the VNE in the same
// state directory leaves the first's images, which its snapshots may
// name), and a boot that fails removes the images it made.
func TestBootDiskImages(t *testing.T) {
	te := newTrustEnv(t)
	d := &diskHV{fakeHV: newFakeHV("diskhv")}
	te.o.Hypervisor = d
	base := filepath.Join(t.TempDir(), "user.fimg")
	if err := os.WriteFile(base, []byte("user disk"), 0o600); err != nil {
		t.Fatal(err)
	}
	l := goodLayout(te.dir)
	l.VMs = l.VMs[:1]
	l.VMs[0].Kernel, l.VMs[0].Initrd, l.VMs[0].Disk = te.kernel, te.initrd, base
	images := func() []string {
		m, _ := filepath.Glob(filepath.Join(te.o.Dir, "a.*.fimg"))
		for i := range m {
			m[i] = filepath.Base(m[i])
		}
		return m
	}
	for i, want := range []string{"a.boot.fimg", "a.boot-2.fimg"} {
		env, err := BootLayout(context.Background(), l, nil, te.o)
		if err != nil {
			t.Fatal(err)
		}
		if got := filepath.Base(env.Layout.VMs[0].Disk); got != want {
			t.Errorf("boot %d runs on %s, want %s", i+1, got, want)
		}
		env.Close()
	}
	d.failStart = "a"
	if _, err := BootLayout(context.Background(), l, nil, te.o); err == nil || !strings.Contains(err.Error(), "no room") {
		t.Fatalf("boot with a failing start: %v", err)
	}
	if got := images(); !slices.Equal(got, []string{"a.boot-2.fimg", "a.boot.fimg"}) {
		t.Errorf("images after a failed boot: %v, want only the two earlier boots' (its own removed)", got)
	}
	if b, _ := os.ReadFile(base); string(b) != "user disk" {
		t.Errorf("the user's disk was written: %q", b)
	}
}
