#!/bin/sh
# setup-netns.sh: install what the test cluster (cluster/netnstest) needs on
# Debian 12 (bookworm): iproute2 (ip netns, veth, bridge, tc).
#
# Idempotent; run as root; returns at once when ip and tc are installed. The
# kernel must have network namespaces, veth and bridge; sch_netem is optional
# (without it the test cluster impairs links in user space, see
# cluster/netnstest/doc.go).
set -eu

die() { echo "setup-netns.sh: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root"

if ! command -v ip >/dev/null 2>&1 || ! command -v tc >/dev/null 2>&1; then
	DEBIAN_FRONTEND=noninteractive apt-get update -q
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends iproute2
fi
ip -V >/dev/null || die "ip does not run"
tc -V >/dev/null || die "tc does not run"
[ -d /proc/self/ns ] && [ -e /proc/self/ns/net ] || die "kernel without network namespaces"
