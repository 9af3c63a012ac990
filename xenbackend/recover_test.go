package xenbackend

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// fakeXen is a Runner and a Xenstore over a table of domains that behaves
// as xl and libxl do for what RecoverDomain runs: "xl save -c" of a
// suspended domain writes the suspend request to control/shutdown, waits
// until it is acknowledged (cleared), then resumes the domain.
type fakeXen struct {
	mu     sync.Mutex
	doms   []Domain
	store  map[string]string
	argv   [][]string
	noAck  bool // "xl save -c" gives up at once, leaving the domain as it was
	failOn string
}

func (f *fakeXen) Run(ctx context.Context, c Command) ([]byte, error) {
	f.mu.Lock()
	f.argv = append(f.argv, c.Args)
	if len(c.Args) > 0 && c.Args[0] == f.failOn {
		f.mu.Unlock()
		return nil, fmt.Errorf("xl %s: exit status 1", c.Args[0])
	}
	switch c.Args[0] {
	case "list":
		var b strings.Builder
		b.WriteString("Name                                        ID   Mem VCPUs\tState\tTime(s)\n")
		for _, d := range f.doms {
			fmt.Fprintf(&b, "%-40s %5d %5d %5d     %s %8.1f\n", d.Name, d.ID, d.MemMiB, d.VCPUs, d.State, 1.5)
		}
		f.mu.Unlock()
		return []byte(b.String()), nil
	case "rename":
		defer f.mu.Unlock()
		for i, d := range f.doms {
			if d.ID.arg() == c.Args[1] {
				f.doms[i].Name = c.Args[2]
				return nil, nil
			}
		}
		return nil, fmt.Errorf("xl rename: no domain %s", c.Args[1])
	case "save":
		if c.Args[1] != "-c" || c.Args[3] != "/dev/null" {
			f.mu.Unlock()
			return nil, fmt.Errorf("unexpected save %v", c.Args)
		}
		path := "/local/domain/" + c.Args[2] + "/control/shutdown"
		f.store[path] = "suspend"
		noAck := f.noAck
		f.mu.Unlock()
		for !noAck {
			f.mu.Lock()
			acked := f.store[path] == ""
			f.mu.Unlock()
			if acked {
				break
			}
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(time.Millisecond):
			}
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		for i, d := range f.doms {
			if d.ID.arg() == c.Args[2] && !noAck {
				f.doms[i].State = "-b----"
			}
		}
		return nil, nil
	}
	f.mu.Unlock()
	return nil, fmt.Errorf("unexpected xl %v", c.Args)
}

func (f *fakeXen) Read(_ context.Context, path string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	v, ok := f.store[path]
	if !ok {
		return "", errors.New("xenstore-read: no such path")
	}
	return v, nil
}

func (f *fakeXen) Write(_ context.Context, path, value string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.store[path] = value
	return nil
}

func TestRecoverDomain(t *testing.T) {
	dom0 := Domain{Name: "Domain-0", ID: 0, MemMiB: 1536, VCPUs: 1, State: "r-----"}
	dom := func(name string, id DomID, state string) Domain {
		return Domain{Name: name, ID: id, MemMiB: 128, VCPUs: 1, State: state}
	}
	for _, tc := range []struct {
		name    string
		doms    []Domain
		noAck   bool
		failOn  string
		want    Recovery
		wantErr error
		argv    [][]string
	}{{
		name: "running: nothing to do",
		doms: []Domain{dom0, dom("web", 3, "-b----")},
		want: Recovery{Before: dom("web", 3, "-b----"), After: dom("web", 3, "-b----")},
		argv: [][]string{{"list"}, {"list"}},
	}, {
		name: "paused by its controller: left paused",
		doms: []Domain{dom0, dom("web", 3, "--p---")},
		want: Recovery{Before: dom("web", 3, "--p---"), After: dom("web", 3, "--p---")},
		argv: [][]string{{"list"}, {"list"}},
	}, {
		name: "left by xl after the go: renamed back and resumed",
		doms: []Domain{dom0, dom("web--migratedaway", 3, "---ss-")},
		want: Recovery{Before: dom("web--migratedaway", 3, "---ss-"), Renamed: true, Resumed: true, After: dom("web", 3, "-b----")},
		argv: [][]string{{"list"}, {"rename", "3", "web"}, {"save", "-c", "3", "/dev/null"}, {"list"}},
	}, {
		name: "suspended under its own name: resumed",
		doms: []Domain{dom0, dom("web", 4, "---ss-")},
		want: Recovery{Before: dom("web", 4, "---ss-"), Resumed: true, After: dom("web", 4, "-b----")},
		argv: [][]string{{"list"}, {"save", "-c", "4", "/dev/null"}, {"list"}},
	}, {
		name:    "the resume does not take: not recovered",
		doms:    []Domain{dom0, dom("web--migratedaway", 3, "---ss-")},
		noAck:   true,
		want:    Recovery{Before: dom("web--migratedaway", 3, "---ss-"), Renamed: true, Resumed: true, After: dom("web", 3, "---ss-")},
		wantErr: ErrNotRecovered,
		argv:    [][]string{{"list"}, {"rename", "3", "web"}, {"save", "-c", "3", "/dev/null"}, {"list"}},
	}, {
		name:    "xl rename fails",
		doms:    []Domain{dom0, dom("web--migratedaway", 3, "---ss-")},
		failOn:  "rename",
		want:    Recovery{Before: dom("web--migratedaway", 3, "---ss-")},
		wantErr: errors.New("exit status 1"),
		argv:    [][]string{{"list"}, {"rename", "3", "web"}},
	}, {
		name:    "both names: ambiguous, nothing touched",
		doms:    []Domain{dom0, dom("web--migratedaway", 3, "---ss-"), dom("web", 5, "r-----")},
		wantErr: ErrAmbiguous,
		argv:    [][]string{{"list"}},
	}, {
		name:    "gone",
		doms:    []Domain{dom0, dom("db", 2, "r-----")},
		wantErr: ErrNoDomain,
		argv:    [][]string{{"list"}},
	}, {
		name:    "crashed after the resume: not recovered",
		doms:    []Domain{dom0, dom("web", 3, "----c-")},
		want:    Recovery{Before: dom("web", 3, "----c-"), After: dom("web", 3, "----c-")},
		wantErr: ErrNotRecovered,
		argv:    [][]string{{"list"}, {"list"}},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeXen{doms: tc.doms, store: map[string]string{}, noAck: tc.noAck, failOn: tc.failOn}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			got, err := RecoverDomain(ctx, f, f, "web")
			switch {
			case tc.wantErr == nil && err != nil:
				t.Errorf("RecoverDomain: %v", err)
			case tc.wantErr != nil && err == nil:
				t.Errorf("RecoverDomain: no error, want %v", tc.wantErr)
			case tc.wantErr != nil && !errors.Is(err, tc.wantErr) && !strings.Contains(err.Error(), tc.wantErr.Error()):
				t.Errorf("RecoverDomain: %v, want %v", err, tc.wantErr)
			}
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Errorf("Recovery (-want +got):\n%s", d)
			}
			if d := cmp.Diff(tc.argv, f.argv); d != "" {
				t.Errorf("xl commands (-want +got):\n%s", d)
			}
		})
	}
}

func TestRecoverDomainRefusesBadNames(t *testing.T) {
	for _, name := range []string{"", "-h", "12", "web--migratedaway", "a b", "web;reboot"} {
		f := &fakeXen{store: map[string]string{}}
		if _, err := RecoverDomain(context.Background(), f, f, name); !errors.Is(err, ErrBadValue) {
			t.Errorf("RecoverDomain(%q): %v, want ErrBadValue", name, err)
		}
		if len(f.argv) != 0 {
			t.Errorf("RecoverDomain(%q) ran %v, want nothing run", name, f.argv)
		}
	}
}

func TestCheckXenstorePath(t *testing.T) {
	for p, ok := range map[string]bool{
		"/local/domain/3/control/shutdown": true,
		"@releaseDomain":                   false,
		"local/domain":                     false,
		"/local//domain":                   false,
		"/local/domain/3 x":                false,
		"/local/domain/$(reboot)":          false,
	} {
		if err := checkXenstorePath(p); (err == nil) != ok {
			t.Errorf("checkXenstorePath(%q) = %v, want ok=%v", p, err, ok)
		}
	}
}
