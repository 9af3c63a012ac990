package core

// budget tracks the RAM the memory-sink daemon of each host holds.
//
// A memory-sink VM reserves its whole memory size on its host when its copy
// starts (the image held in RAM is at most that large, since a page copied
// again replaces its earlier copy) and releases it when its image has been
// flushed to disk, or at abort. When a host's budget cannot hold a VM the
// VM's copy falls back to the disk sink (write-through, paced by the disk)
// and its report says Fallback: the snapshot still completes, with that VM's
// downtime as for VNsnap-disk. VMs reserve in VMID order, so which VMs fall
// back is deterministic.
type budget struct {
	cap  []int64
	used []int64
	held map[VMID]int64
}

func newBudget(hosts []HostSpec) budget {
	b := budget{cap: make([]int64, len(hosts)), used: make([]int64, len(hosts)), held: make(map[VMID]int64)}
	for i, h := range hosts {
		b.cap[i] = h.RAMBudget
	}
	return b
}

func (b *budget) reserve(l *liveCopy) bool {
	need := l.pages * PageSize
	if b.used[l.host]+need > b.cap[l.host] {
		return false
	}
	b.used[l.host] += need
	b.held[l.id] = need
	return true
}

func (b *budget) release(l *liveCopy) {
	if n, ok := b.held[l.id]; ok {
		b.used[l.host] -= n
		delete(b.held, l.id)
	}
}
