package npb

import "sort"

// sortMessages orders messages by (Step, Src, Dst), stably.
func sortMessages(m []Message) {
	sort.SliceStable(m, func(a, b int) bool {
		if m[a].Step != m[b].Step {
			return m[a].Step < m[b].Step
		}
		if m[a].Src != m[b].Src {
			return m[a].Src < m[b].Src
		}
		return m[a].Dst < m[b].Dst
	})
}
