package store

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// helperEnv, when set in the environment, makes the test binary act as a
// writer process (see TestMain): it creates the snapshot named by the
// variable in the store named by helperRootEnv, writes some of a stream,
// prints "ready" once chunks are in the pool and then waits to be killed.
const (
	helperEnv     = "VNSNAP_STORE_TEST_WRITER"
	helperRootEnv = "VNSNAP_STORE_TEST_ROOT"
)

// helperWriter is the body of the writer process.
func helperWriter(root, name string) {
	w, err := Create(root, name, testMeta())
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	sw, err := w.Stream("a", "memory")
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	if _, err := sw.Write(randomData(7, 6<<20)); err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	// The stream's workers store chunks asynchronously: wait until the
	// first ones are in the pool, so that the kill leaves orphans behind.
	for {
		if m, _ := filepath.Glob(filepath.Join(root, chunksDir, "??", "????????????????????????????????????????????????????????????????")); len(m) > 0 {
			break
		}
		if _, err := sw.Write(nil); err != nil {
			os.Exit(1)
		}
	}
	fmt.Println("ready")
	io.Copy(io.Discard, os.Stdin) // until killed
	os.Exit(3)
}

// startWriter runs a writer process for snapshot name and returns its
// process once it is mid-write.
func startWriter(t *testing.T, root, name string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+name, helperRootEnv+"="+root)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		cmd.Process.Kill()
		cmd.Wait()
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if line != "ready\n" {
		t.Fatalf("writer process said %q (%v), want ready", line, err)
	}
	return cmd
}

// TestKilledWriterProcess kills a writer process mid-write, as a crash or
// kill -9 would: its name must not stay blocked, and GC must remove its
// directory, lock file, temporary files and orphan chunks, while keeping
// every complete snapshot whole.
func TestKilledWriterProcess(t *testing.T) {
	root := t.TempDir()
	writeSnapshot(t, root, "good", testMeta(), content{"a": {"memory": pageData(1, 1<<20)}})
	keep := chunkFiles(t, root)

	// While the writer lives, the name is its own, and the loser of the
	// race is told so, with the writer's pid.
	cmd := startWriter(t, root, "victim")
	pid := strconv.Itoa(cmd.Process.Pid)
	_, err := Create(root, "victim", testMeta())
	if !errors.Is(err, ErrWriting) || !strings.Contains(err.Error(), `snapshot "victim" is being written by another process (pid `+pid+")") {
		t.Errorf("Create(victim) while its writer lives = %v, want ErrWriting naming pid %s", err, pid)
	}
	if err := Delete(root, "victim"); !errors.Is(err, ErrWriting) || !strings.Contains(err.Error(), pid) {
		t.Errorf("Delete(victim) while its writer lives = %v, want ErrWriting naming pid %s", err, pid)
	}
	if _, err := GC(root, GCOptions{}); !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), `"victim" (pid `+pid+")") {
		t.Errorf("GC while a writer lives = %v, want ErrBusy naming the writer and pid %s", err, pid)
	}

	// A temporary chunk file as a crash during a chunk write leaves it.
	tmp := filepath.Join(root, chunksDir, "00", tmpPrefix+"123")
	if err := os.MkdirAll(filepath.Dir(tmp), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tmp, []byte("partial"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	if n := len(chunkFiles(t, root)); n <= len(keep) {
		t.Fatalf("the killed writer left %d chunk files, want more than the %d of good", n, len(keep))
	}
	if _, err := Open(root, "victim"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Open(victim) = %v, want ErrNotFound", err)
	}

	t.Logf("store after the kill: %v", allFiles(t, root))
	dry, err := GC(root, GCOptions{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(chunkFiles(t, root)) == len(keep) || !exists(tmp) {
		t.Error("GC with DryRun removed files")
	}
	st, err := GC(root, GCOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if st != dry {
		t.Errorf("GC = %+v, DryRun said %+v", st, dry)
	}
	// The directory, its lock file and the temporary chunk file, and
	// perhaps a temporary chunk file the writer was writing when killed.
	if st.Debris < 3 || st.Removed == 0 || st.Snapshots != 1 {
		t.Errorf("GC = %+v, want Debris 3 or more, Snapshots 1 and the killed write's chunks removed", st)
	}
	if left, _ := filepath.Glob(filepath.Join(root, chunksDir, "*", tmpPrefix+"*")); len(left) != 0 {
		t.Errorf("temporary files after GC: %v", left)
	}
	if diff := strings.Join(chunkFiles(t, root), "\n"); diff != strings.Join(keep, "\n") {
		t.Errorf("chunks after GC:\n%s\nwant good's:\n%s", diff, strings.Join(keep, "\n"))
	}
	if got := allFiles(t, filepath.Join(root, snapshotsDir)); strings.Join(got, " ") != ". good good/manifest.json" {
		t.Errorf("snapshots dir after GC: %v", got)
	}
	s := mustOpen(t, root, "good")
	if problems, err := s.Verify(context.Background()); err != nil || len(problems) != 0 {
		t.Errorf("Verify(good) after GC = %v, %v; want none", problems, err)
	}
	s.Close()

	// Killed again, and this time no GC: the next writer of the name takes
	// the dead writer's directory over.
	cmd = startWriter(t, root, "victim")
	cmd.Process.Kill()
	cmd.Wait()
	writeSnapshot(t, root, "victim", testMeta(), content{"a": {"memory": []byte("retry")}})
	s = mustOpen(t, root, "victim")
	if got, err := readStream(s, "a", "memory"); err != nil || string(got) != "retry" {
		t.Errorf("victim after takeover: %q, %v", got, err)
	}
}

// TestCreateRace has two writers in one process race for a name.
func TestCreateRace(t *testing.T) {
	root := t.TempDir()
	w, err := Create(root, "s", testMeta())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	_, err = Create(root, "s", testMeta())
	if !errors.Is(err, ErrWriting) || !strings.Contains(err.Error(), `snapshot "s" is being written by another writer in this process (pid `+strconv.Itoa(os.Getpid())) {
		t.Errorf("second Create = %v, want ErrWriting naming this process", err)
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	if _, err := Create(root, "s", testMeta()); !errors.Is(err, ErrExists) || !strings.Contains(err.Error(), `snapshot "s" already exists`) {
		t.Errorf("Create of a complete snapshot = %v, want ErrExists", err)
	}
	if m, _ := filepath.Glob(filepath.Join(root, snapshotsDir, ".*")); len(m) != 0 {
		t.Errorf("lock files left after Commit: %v", m)
	}

	// Many at once: exactly one wins, every loser is told why.
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins, losses := 0, 0
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w, err := Create(root, "race", testMeta())
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				wins++
				sw, _ := w.Stream("a", "m")
				sw.Write([]byte("x"))
				sw.Close()
				if err := w.Commit(); err != nil {
					t.Errorf("winner's Commit: %v", err)
				}
			case errors.Is(err, ErrWriting) || errors.Is(err, ErrExists):
				losses++
			default:
				t.Errorf("loser's Create = %v, want ErrWriting or ErrExists", err)
			}
		}()
	}
	wg.Wait()
	if wins != 1 || losses != 7 {
		t.Errorf("%d winners and %d losers, want 1 and 7", wins, losses)
	}
}

// TestDeleteStates covers Delete of missing, unfinished and open snapshots.
func TestDeleteStates(t *testing.T) {
	root := t.TempDir()
	if err := Delete(root, "missing"); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), `"missing"`) {
		t.Errorf("Delete(missing) = %v, want ErrNotFound naming it", err)
	}
	w, err := Create(root, "open", testMeta())
	if err != nil {
		t.Fatal(err)
	}
	if err := Delete(root, "open"); !errors.Is(err, ErrWriting) {
		t.Errorf("Delete(open) = %v, want ErrWriting", err)
	}
	w.crash()
	if err := Delete(root, "open"); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "unfinished") {
		t.Errorf("Delete(crashed) = %v, want ErrNotFound saying unfinished", err)
	}
	writeSnapshot(t, root, "r", testMeta(), content{"a": {"memory": []byte("data")}})
	s := mustOpen(t, root, "r")
	if err := Delete(root, "r"); err != nil {
		t.Fatalf("Delete of a snapshot open for reading: %v", err)
	}
	// The reader still reads: chunks stay until GC, which waits for it.
	if got, err := readStream(s, "a", "memory"); err != nil || string(got) != "data" {
		t.Errorf("read after Delete: %q, %v", got, err)
	}
}

// TestGCWithConcurrentWriters runs writers, deleters and collectors at once:
// no committed snapshot may lose a chunk.
func TestGCWithConcurrentWriters(t *testing.T) {
	root := t.TempDir()
	shared := randomData(1, 1<<20)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	errs := make(chan error, 100)
	for g := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 6 {
				name := fmt.Sprintf("g%d-%d", g, i)
				data := append(bytes.Clone(shared), randomData(uint64(10*g+i), 300<<10)...)
				w, err := Create(root, name, testMeta())
				if err != nil {
					errs <- err
					return
				}
				sw, _ := w.Stream("a", "memory")
				sw.Write(data)
				if err := sw.Close(); err != nil {
					errs <- err
				}
				if err := w.Commit(); err != nil {
					errs <- err
				}
				if i%2 == 1 {
					if err := Delete(root, fmt.Sprintf("g%d-%d", g, i-1)); err != nil {
						errs <- err
					}
				}
			}
		}()
	}
	gcs := 0
	gcDone := make(chan struct{})
	go func() {
		defer close(gcDone)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := GC(root, GCOptions{Wait: true}); err != nil {
				errs <- err
				return
			}
			gcs++
		}
	}()
	wg.Wait()
	close(stop)
	<-gcDone
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if _, err := GC(root, GCOptions{}); err != nil {
		t.Fatal(err)
	}
	infos, err := List(root)
	if err != nil || len(infos) != 9 {
		t.Fatalf("List = %d snapshots, %v; want 9", len(infos), err)
	}
	for _, in := range infos {
		s := mustOpen(t, root, in.Name)
		if problems, err := s.Verify(context.Background()); err != nil || len(problems) != 0 {
			t.Errorf("Verify(%s) = %v, %v; want sound", in.Name, problems, err)
		}
		s.Close()
	}
	t.Logf("%d collections ran during the writes", gcs)
}
