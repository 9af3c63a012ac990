package sim

// copyImage is the image a VM's copy builds, unit by unit: each copy step
// records the versions of the units it copies. At the snapshot point's end
// of the copy it must equal the memory it was copied from (stale counts the
// units where it does not), and a restore starts from it.
type copyImage struct {
	mem *Memory
	got []uint32 // per unit: 1 + the version copied; 0 if never copied
	// broken, for tests only, skips the first unit of every copy step: a
	// bug in the copy logic the image check must catch.
	broken bool
}

func newCopyImage(m *Memory, broken bool) *copyImage {
	return &copyImage{mem: m, got: make([]uint32, m.Units()), broken: broken}
}

// record copies the memory's current versions of units.
func (im *copyImage) record(units []int32) {
	if im.broken && len(units) > 0 {
		units = units[1:]
	}
	for _, u := range units {
		im.got[u] = im.mem.Version(u) + 1
	}
}

// recordAll copies every unit's current version.
func (im *copyImage) recordAll() {
	ver := im.mem.Versions()
	start := 0
	if im.broken {
		start = 1
	}
	for u := start; u < len(im.got); u++ {
		v := uint32(0)
		if ver != nil {
			v = ver[u]
		}
		im.got[u] = v + 1
	}
}

// recordRange copies the current versions of the units of [lo, hi) not
// copied yet.
func (im *copyImage) recordRange(lo, hi int32) {
	if im.broken && lo < hi {
		lo++
	}
	for u := lo; u < hi; u++ {
		if im.got[u] == 0 {
			im.got[u] = im.mem.Version(u) + 1
		}
	}
}

// copied reports whether unit u has been copied.
func (im *copyImage) copied(u int32) bool { return im.got[u] != 0 }

// stale returns the units where the image differs from want (a memory's
// versions; nil means every version 0), never-copied units included.
func (im *copyImage) stale(want []uint32) int64 {
	var n int64
	for u, g := range im.got {
		w := uint32(0)
		if want != nil {
			w = want[u]
		}
		if g != w+1 {
			n++
		}
	}
	return n
}

// memory returns the image as a VM's memory: the model of the memory it
// was copied from, with the copied versions.
func (im *copyImage) memory() *Memory {
	ver := make([]uint32, len(im.got))
	for u, g := range im.got {
		if g > 0 {
			ver[u] = g - 1
		}
	}
	return im.mem.withVersions(ver)
}

// unitSet is a set of units to send, in the order they were added.
type unitSet struct {
	bits []uint64
	list []int32
}

func newUnitSet(units int64) *unitSet { return &unitSet{bits: make([]uint64, (units+63)/64)} }

func (s *unitSet) add(units []int32) {
	for _, u := range units {
		if s.bits[u/64]&(1<<(u%64)) == 0 {
			s.bits[u/64] |= 1 << (u % 64)
			s.list = append(s.list, u)
		}
	}
}

// take returns the set's units and empties it; the slice is valid until
// the next add.
func (s *unitSet) take() []int32 {
	out := s.list
	for _, u := range out {
		s.bits[u/64] &^= 1 << (u % 64)
	}
	s.list = s.list[:0]
	return out
}
