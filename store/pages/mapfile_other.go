//go:build !linux

package pages

import "os"

// mappedFile is not used on this system: restores write with WriteAt.
type mappedFile struct {
	mem []byte
}

func mapFile(*os.File, int64) *mappedFile { return nil }

func (m *mappedFile) populate(lo, hi int64) {}

func (m *mappedFile) close() error { return nil }
