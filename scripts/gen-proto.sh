#!/usr/bin/env bash
# gen-proto.sh: regenerate cluster/clusterpb from cluster/proto with pinned
# generators. protoc is Debian's protobuf-compiler (apt); the Go plugins are
# installed with go install at the versions below, into .cache/protoc-bin.
#
#   scripts/gen-proto.sh          regenerate (installs what is missing)
#   scripts/gen-proto.sh --check  regenerate into a temporary directory and
#                                 fail if the committed code differs
set -euo pipefail
cd "$(dirname "$0")/.."

PROTOC_VERSION=3.21.12                 # Debian bookworm protobuf-compiler
PROTOC_GEN_GO=v1.36.11                 # google.golang.org/protobuf/cmd/protoc-gen-go
PROTOC_GEN_GO_GRPC=v1.6.2              # google.golang.org/grpc/cmd/protoc-gen-go-grpc

bin=$PWD/.cache/protoc-bin
mkdir -p "$bin"
if ! command -v protoc >/dev/null; then
	if [ "$(id -u)" = 0 ]; then
		apt-get install -y protobuf-compiler >/dev/null 2>&1 ||
			{ apt-get update >/dev/null && apt-get install -y protobuf-compiler >/dev/null; }
	else
		echo "gen-proto.sh: protoc missing: apt-get install protobuf-compiler" >&2
		exit 1
	fi
fi
got=$(protoc --version | awk '{print $2}')
if [ "$got" != "$PROTOC_VERSION" ]; then
	echo "gen-proto.sh: protoc $got, want $PROTOC_VERSION (generated code names the protoc version)" >&2
	exit 1
fi
want_go="protoc-gen-go $PROTOC_GEN_GO"
if [ "$("$bin/protoc-gen-go" --version 2>/dev/null)" != "$want_go" ]; then
	GOBIN=$bin go install "google.golang.org/protobuf/cmd/protoc-gen-go@$PROTOC_GEN_GO"
fi
want_grpc="protoc-gen-go-grpc ${PROTOC_GEN_GO_GRPC#v}"
if [ "$("$bin/protoc-gen-go-grpc" --version 2>/dev/null)" != "$want_grpc" ]; then
	GOBIN=$bin go install "google.golang.org/grpc/cmd/protoc-gen-go-grpc@$PROTOC_GEN_GO_GRPC"
fi

out=cluster/clusterpb
if [ "${1:-}" = --check ]; then
	out=$(mktemp -d)
	trap 'rm -rf "$out"' EXIT
fi
PATH=$bin:$PATH protoc -I cluster/proto \
	--go_out="$out" --go_opt=paths=source_relative \
	--go-grpc_out="$out" --go-grpc_opt=paths=source_relative \
	cluster/proto/*.proto
if [ "${1:-}" = --check ]; then
	for f in "$out"/*.go; do
		diff -u "cluster/clusterpb/$(basename "$f")" "$f"
	done
	for f in cluster/clusterpb/*.pb.go; do
		[ -e "$out/$(basename "$f")" ] || { echo "gen-proto.sh: $f is not generated from cluster/proto" >&2; exit 1; }
	done
	echo "gen-proto.sh: cluster/clusterpb is up to date"
fi
