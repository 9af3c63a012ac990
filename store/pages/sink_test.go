package pages_test

import (
	"bytes"
	"sync"
	"testing"

	"github.com/vnsnap/vnsnap/store/pages"
)

// TestMemSinkConcurrentPut: workers putting objects at once, some under the
// same address (Put and PutParts), create each object exactly once, and
// every object reads back as it was put, even when it spans a new arena.
func TestMemSinkConcurrentPut(t *testing.T) {
	s := pages.NewMemSink()
	const objs, putters = 200, 8
	obj := func(i int) []byte {
		// Sizes up to 96 KiB, so arenas (4 MiB) are filled and replaced.
		return bytes.Repeat([]byte{byte(i), byte(i >> 8), 0x5a}, 2+i*163%32768)
	}
	addr := func(i int) pages.Addr { return pages.Addr{byte(i), byte(i >> 8), 1} }
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		created = make(map[pages.Addr]int)
	)
	for p := range putters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range objs {
				o := obj(i)
				var c bool
				var err error
				if p%2 == 0 {
					c, err = s.Put(addr(i), o)
				} else {
					c, err = s.PutParts(addr(i), o[:5], o[5:])
				}
				if err != nil {
					t.Errorf("put %d: %v", i, err)
					return
				}
				if c {
					mu.Lock()
					created[addr(i)]++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	for i := range objs {
		if n := created[addr(i)]; n != 1 {
			t.Errorf("object %d created %d times, want 1", i, n)
		}
		got, err := s.Get(addr(i), nil)
		if err != nil || !bytes.Equal(got, obj(i)) {
			t.Errorf("object %d: got %d bytes (err %v), want the %d put", i, len(got), err, len(obj(i)))
		}
	}
	if n, _ := s.Len(); n != objs {
		t.Errorf("Len = %d objects, want %d", n, objs)
	}
}
