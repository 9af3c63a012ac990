#!/usr/bin/env bash
# run.sh: the front door of vnsnap.
#
#   ./run.sh           the main job: simulate every algorithm and sink on the
#                      default VNE and write results/out/ (see README.md)
#   ./run.sh test      install what the tests need, then run every test
#   ./run.sh sim ...   any vnsnap command, built from this checkout
#
# Needs only Go (and root with apt for the real-QEMU tests); installs the rest.
set -euo pipefail
cd "$(dirname "$0")"

export GOFLAGS=${GOFLAGS:--mod=mod}
BIN=.cache/bin/vnsnap

build() {
	mkdir -p .cache/bin
	go build -o "$BIN" ./cmd/vnsnap
}

# setup installs the system packages the real-backend tests need (QEMU 10
# from bookworm-backports, a kernel and busybox for the guest images).
setup() {
	if [ -x scripts/setup-qemu.sh ]; then
		if [ "$(id -u)" = 0 ]; then
			scripts/setup-qemu.sh
		else
			echo "run.sh: not root: skipping scripts/setup-qemu.sh (real-QEMU tests will fail in CI)" >&2
		fi
	fi
}

main_job() {
	build
	local out=results/out
	mkdir -p "$out"
	local seed=${SEED:-1}
	echo "vnsnap $( "$BIN" version | cut -d' ' -f2- ): simulating every algorithm and sink, seed $seed" >&2
	local rows="$out/sim-summary.jsonl"
	: >"$rows.tmp"
	for algo in vnsnap vnsnap-log stop-copy sync-freeze cow uncoordinated; do
		for sink in disk memory; do
			printf '  %-14s %-7s ' "$algo" "$sink" >&2
			"$BIN" sim --algo "$algo" --sink "$sink" --vms 16 --hosts 4 --mem 512MiB \
				--dirty 40MiB/s --traffic all-to-all --restore --seed "$seed" --json >>"$rows.tmp"
			echo done >&2
		done
	done
	mv "$rows.tmp" "$rows"
	go run ./cmd/vnsnap-table "$rows" | tee "$out/sim-summary.txt"
	echo "wrote $rows and $out/sim-summary.txt" >&2
}

case "${1:-}" in
"")
	main_job
	;;
test)
	shift
	setup
	go vet ./...
	# Real-backend tests skip under -short only when run by hand outside
	# CI; ./run.sh test runs everything CI runs.
	CI=${CI:-1} go test -short -timeout 60m "$@" ./...
	;;
*)
	build
	exec "$BIN" "$@"
	;;
esac
