package qemubackend

import (
	"context"
	"fmt"
	"time"
)

// DirtyRate measures the guest's page-dirty rate with QEMU's calc-dirty-rate
// in mode page-sampling, at its densest sampling (dirtySamples pages per GiB
// hashed before and after, where the default 512 is noisy on small guests;
// mode dirty-bitmap reports 0 under TCG in QEMU 10, and dirty-ring needs
// KVM). A page written twice within calc counts once, so the rate
// saturates at the working set over calc. It returns bytes per second. calc is rounded up to
// whole seconds (QEMU's unit), at least one; the call waits for the result.
func (vm *VM) DirtyRate(ctx context.Context, calc time.Duration) (float64, error) {
	secs := int64((calc + time.Second - 1) / time.Second)
	if secs < 1 {
		secs = 1
	}
	args := map[string]any{"calc-time": secs, "mode": "page-sampling", "sample-pages": dirtySamples}
	if err := vm.QMP.Execute(ctx, "calc-dirty-rate", args, nil); err != nil {
		return 0, fmt.Errorf("qmp calc-dirty-rate %s: %w", vm.Spec.Name, err)
	}
	t := time.NewTimer(time.Duration(secs) * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("dirty rate of %s: %w", vm.Spec.Name, ctx.Err())
		case <-t.C:
		}
		var r struct {
			Status    string `json:"status"`
			DirtyRate int64  `json:"dirty-rate"` // MiB/s
		}
		if err := vm.QMP.Execute(ctx, "query-dirty-rate", nil, &r); err != nil {
			return 0, fmt.Errorf("qmp query-dirty-rate %s: %w", vm.Spec.Name, err)
		}
		switch r.Status {
		case "measured":
			if r.DirtyRate < 0 {
				return 0, fmt.Errorf("query-dirty-rate %s: negative rate %d", vm.Spec.Name, r.DirtyRate)
			}
			return float64(r.DirtyRate) * (1 << 20), nil
		case "measuring":
			t.Reset(100 * time.Millisecond)
		default:
			return 0, fmt.Errorf("query-dirty-rate %s: status %q", vm.Spec.Name, r.Status)
		}
	}
}

// dirtySamples is calc-dirty-rate's largest sample-pages (per GiB).
const dirtySamples = 16384

// RoundTrip times one QMP command with no effect (query-status): the
// monitor's round trip.
func (vm *VM) RoundTrip(ctx context.Context) (time.Duration, error) {
	start := time.Now()
	_, err := vm.Status(ctx)
	return time.Since(start), err
}
