package experiments

import (
	"bytes"
	"flag"
	"image/png"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/vnsnap/vnsnap/results"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// runTiny runs experiment e on its tiny test config (testdata/NAME.config.json)
// with two seeds (once per test binary: see wholeTiny) and returns its
// output directory, which callers must not write into.
func runTiny(t *testing.T, e *Experiment) (string, results.Section) {
	t.Helper()
	dir, sec, _ := wholeTiny(t, e)
	return dir, sec
}

// TestGolden runs every experiment on a tiny fixed-seed config and compares
// its tables (deterministic columns only) with testdata/NAME.golden.csv;
// -update rewrites them. It also checks that every figure rendered.
func TestGolden(t *testing.T) {
	for _, e := range All() {
		t.Run(e.Name, func(t *testing.T) {
			t.Parallel()
			dir, sec := runTiny(t, e)
			_, ts, err := Load(e, dir)
			if err != nil {
				t.Fatal(err)
			}
			var got bytes.Buffer
			for _, name := range e.tableNames() {
				got.WriteString("## " + e.tableFile(name) + "\n")
				if err := results.EncodeCSV(&got, ts[name], false); err != nil {
					t.Fatal(err)
				}
			}
			golden := filepath.Join("testdata", e.Name+".golden.csv")
			if *update {
				if err := os.WriteFile(golden, got.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./experiments -run TestGolden -update)", err)
			}
			if d := cmp.Diff(string(want), got.String()); d != "" {
				t.Errorf("%s differs from %s (-want +got):\n%s", e.Name, golden, d)
			}
			if len(sec.Figures) == 0 {
				t.Fatalf("%s drew no figures", e.Name)
			}
			for _, f := range sec.Figures {
				if f.Text == "" {
					t.Errorf("figure %s has no findings", f.File)
				}
				for _, ext := range []string{".png", ".svg"} {
					st, err := os.Stat(filepath.Join(dir, f.File+ext))
					if err != nil || st.Size() == 0 {
						t.Fatalf("figure %s%s: missing or empty (%v)", f.File, ext, err)
					}
				}
				fh, err := os.Open(filepath.Join(dir, f.File+".png"))
				if err != nil {
					t.Fatal(err)
				}
				img, err := png.Decode(fh)
				fh.Close()
				if err != nil {
					t.Fatalf("figure %s.png does not decode: %v", f.File, err)
				}
				if b := img.Bounds(); b.Dx() < 300 || b.Dy() < 200 {
					t.Errorf("figure %s.png is %dx%d, want at least 300x200", f.File, b.Dx(), b.Dy())
				}
			}
		})
	}
}

// TestReport rebuilds the report from the outputs of two experiments.
func TestReport(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"e2", "e6"} {
		e, err := Lookup(n)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Run(e, Options{ConfigFile: filepath.Join("testdata", e.Name+".config.json"), Seeds: 1, Out: dir}); err != nil {
			t.Fatal(err)
		}
	}
	md, html := filepath.Join(dir, "REPORT.md"), filepath.Join(dir, "report.html")
	names, err := Report(dir, md, html)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]string{"e2-convergence", "e6-consistency"}, names); d != "" {
		t.Errorf("report sections (-want +got):\n%s", d)
	}
	for _, p := range []string{md, html} {
		b, err := os.ReadFile(p)
		if err != nil || len(b) == 0 {
			t.Fatalf("%s: %v", p, err)
		}
		for _, want := range []string{"e2-duration", "E6: consistency", "orphan"} {
			if p == md && !bytes.Contains(b, []byte(want)) {
				t.Errorf("%s lacks %q", p, want)
			}
		}
	}
}

// TestDeterministicOrder checks that the runner's output does not depend on
// the number of workers.
func TestDeterministicOrder(t *testing.T) {
	e, _ := Lookup("e6")
	cfg, err := LoadConfig(e, false, filepath.Join("testdata", e.Name+".config.json"))
	if err != nil {
		t.Fatal(err)
	}
	jobs, err := cfg.Plan(Seeds(2))
	if err != nil {
		t.Fatal(err)
	}
	csv := func(workers int) string {
		outs, err := Execute(jobs, workers, nil)
		if err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		if err := results.EncodeCSV(&b, cfg.Tables(jobs, outs)[""], false); err != nil {
			t.Fatal(err)
		}
		return b.String()
	}
	if d := cmp.Diff(csv(1), csv(3)); d != "" {
		t.Errorf("1 worker vs 3 workers (-1 +3):\n%s", d)
	}
}

func TestConfigErrors(t *testing.T) {
	e, _ := Lookup("e1-downtime")
	dir := t.TempDir()
	for name, body := range map[string]string{
		"unknown.json": `{"no_such_field": 1}`,
		"bad.yaml":     "vms: [",
	} {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(body), 0o644)
		if _, err := LoadConfig(e, false, p); err == nil {
			t.Errorf("%s: got no error, want one", name)
		}
	}
	p := filepath.Join(dir, "ok.yaml")
	os.WriteFile(p, []byte("vms: 2\nmem_mib: [64]\n"), 0o644)
	c, err := LoadConfig(e, false, p)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.(*e1Config); got.VMs != 2 || len(got.MemMiB) != 1 || got.Hosts != 2 {
		t.Errorf("yaml override: got vms %d mem %v hosts %d, want 2 [64] 2", got.VMs, got.MemMiB, got.Hosts)
	}
	if _, err := Lookup("e10"); err == nil {
		t.Error("Lookup(e10): got no error")
	}
	if e, err := Lookup("e9"); err != nil || e.Name != "e9-sim-vs-real" {
		t.Errorf("Lookup(e9): %v, %v", e, err)
	}
}
