#!/usr/bin/env bash
# run.sh: the front door of vnsnap.
#
#   ./run.sh           the main job: the paper suite (experiments E1-E8) on the
#                      simulator; writes results/out/ and results/REPORT.md
#   ./run.sh --full    the same at the large sizes
#   ./run.sh test      install what the tests need, then run every test and
#                      every fuzz target for a bounded time (FUZZTIME)
#   ./run.sh fuzz      only the fuzz targets
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
# from bookworm-backports, a kernel and busybox for the guest images) and
# the real-Slurm test needs (slurmctld, slurmd, slurm-client, munge).
setup() {
	if [ -x scripts/setup-qemu.sh ]; then
		if [ "$(id -u)" = 0 ]; then
			scripts/setup-qemu.sh
		else
			echo "run.sh: not root: skipping scripts/setup-qemu.sh (real-QEMU tests will fail in CI)" >&2
		fi
	fi
	if [ -x scripts/setup-netns.sh ]; then
		if [ "$(id -u)" = 0 ]; then
			scripts/setup-netns.sh
		else
			echo "run.sh: not root: skipping scripts/setup-netns.sh (the test-cluster tests will fail in CI)" >&2
		fi
	fi
	if [ -x scripts/setup-slurm.sh ]; then
		if [ "$(id -u)" = 0 ]; then
			scripts/setup-slurm.sh
		else
			echo "run.sh: not root: skipping scripts/setup-slurm.sh (the real-Slurm test will fail in CI)" >&2
		fi
	fi
}

# fuzz runs every Go fuzz target in the tree (func FuzzXxx in a _test.go
# file) for a bounded time each (FUZZTIME, default 15s); a crasher fails the
# run and is written to the package's testdata/fuzz/ by go test.
fuzz() {
	local t=${FUZZTIME:-15s} f pkg name
	grep -rl --include='*_test.go' '^func Fuzz[A-Z0-9_a-z]*(f \*testing.F)' . | sort | while read -r f; do
		pkg=./$(dirname "${f#./}")
		grep -o '^func Fuzz[A-Za-z0-9_]*' "$f" | sed 's/^func //' | while read -r name; do
			fuzz_one "$pkg" "$name" "$t"
		done
	done
}

# fuzz_one fuzzes one target. Go 1.26's fuzz coordinator can end a clean run
# with a bare "context deadline exceeded" failure at the -fuzztime boundary
# when a worker is mid-call (golang/go#75804, fixed in Go 1.27): no input
# failed and no reproducer is written. Such a run, and only such a run (that
# exact last error and no new file in testdata/fuzz/NAME), is run once more;
# a crasher, or a second failure of any kind, fails the run.
fuzz_one() {
	local pkg=$1 name=$2 t=$3 try log before after
	log=$(mktemp)
	for try in 1 2; do
		echo "fuzz: $pkg $name for $t" >&2
		before=$(ls "$pkg/testdata/fuzz/$name" 2>/dev/null || true)
		if go test -run '^$' -fuzz "^${name}\$" -fuzztime "$t" -fuzzminimizetime 200x "$pkg" 2>&1 | tee "$log"; then
			rm -f "$log"
			return 0
		fi
		after=$(ls "$pkg/testdata/fuzz/$name" 2>/dev/null || true)
		if [ "$try" = 1 ] && [ "$before" = "$after" ] &&
			grep -A1 -- "^--- FAIL: $name " "$log" | tail -n1 | grep -qx '[[:space:]]*context deadline exceeded'; then
			echo "fuzz: $name: Go's fuzz coordinator deadline race (golang/go#75804), no input failed and no reproducer was written; running it once more" >&2
			continue
		fi
		rm -f "$log"
		return 1
	done
}

# main_job runs the paper suite (experiments E1-E8 on the simulator) and
# writes results/out/ (CSV, JSON, PNG and SVG) and results/REPORT.md with
# results/REPORT.html. With --full it runs the large sizes.
main_job() {
	mkdir -p .cache/bin
	# -buildvcs=auto records the git revision, which every results file carries.
	go build -buildvcs=auto -o "$BIN" ./cmd/vnsnap
	local out=results/out
	mkdir -p "$out"
	echo "vnsnap $("$BIN" version | cut -d' ' -f2-): the paper suite on the simulator ${1:-(default sizes)}" >&2
	"$BIN" experiment all --out "$out" --report results/REPORT.md "$@"
}

case "${1:-}" in
"")
	main_job
	;;
--full)
	main_job --full
	;;
test)
	shift
	setup
	go vet ./...
	# Real-backend tests skip under -short only when run by hand outside
	# CI; ./run.sh test runs everything CI runs.
	# The Xen suite, the longest package, is listed first so that go test
	# starts it first, beside the others, instead of last and alone.
	CI=${CI:-1} go test -short -timeout 80m "$@" ./xenbackend/xentest $(go list ./... | grep -v -e '/experiments/realrun$' -e '/xenbackend/xentest$')
	# realrun checks the simulator's prediction of real QEMU runs against
	# bounds (issue 11), with a calibration measured on a quiet machine:
	# it runs alone, so that other packages' VMs do not load its host.
	CI=${CI:-1} go test -short -timeout 20m "$@" ./experiments/realrun
	fuzz
	;;
fuzz)
	fuzz
	;;
*)
	build
	exec "$BIN" "$@"
	;;
esac
