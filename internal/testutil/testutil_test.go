package testutil

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

func TestShmDirRemovedAtEnd(t *testing.T) {
	var dir string
	t.Run("use", func(t *testing.T) {
		dir = ShmDir(t)
		if err := os.WriteFile(filepath.Join(dir, "f"), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		if other := ShmDir(t); other == dir {
			t.Errorf("two calls: got %q twice, want fresh directories", dir)
		}
	})
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("after the test, stat %q: got %v, want it removed", dir, err)
	}
}
