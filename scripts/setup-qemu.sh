#!/bin/sh
# setup-qemu.sh: install what the real QEMU backend needs on Debian 12 (bookworm).
#
# Idempotent; run as root. When everything is already installed it only checks
# versions and returns in well under a second.
#
# Installs:
#   - qemu-system-x86, qemu-utils from bookworm-backports (QEMU >= 9.0 is required:
#     QEMU 7.2 from bookworm silently corrupts pre-copy snapshots under TCG, fixed by
#     commit "physmem: Fix migration dirty bitmap coherency with TCG memory access");
#   - the guest build inputs: linux-image-amd64 (the cloud flavour lacks e1000; the
#     guest initramfs takes only the few modules it needs), busybox-static,
#     xz-utils (to unpack the kernel into an ELF vmlinux that boots via PVH).
set -eu

MIN_MAJOR=9
KERNEL_PKG=${VNSNAP_KERNEL_PKG:-linux-image-amd64}
BACKPORTS_LIST=/etc/apt/sources.list.d/bookworm-backports.list

die() { echo "setup-qemu.sh: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root"

installed() {
	dpkg-query -W -f='${Status}\n' "$1" 2>/dev/null | grep -q '^install ok installed$'
}

qemu_major() {
	command -v qemu-system-x86_64 >/dev/null 2>&1 || { echo 0; return; }
	qemu-system-x86_64 --version | sed -n 's/^QEMU emulator version \([0-9][0-9]*\)\..*/\1/p' | head -n1
}

need_qemu=0
if ! installed qemu-system-x86 || ! installed qemu-utils; then
	need_qemu=1
elif [ "$(qemu_major)" -lt "$MIN_MAJOR" ]; then
	need_qemu=1
fi
need_guest=""
for p in "$KERNEL_PKG" busybox-static xz-utils; do
	installed "$p" || need_guest="$need_guest $p"
done

if [ "$need_qemu" = 0 ] && [ -z "$need_guest" ]; then
	echo "setup-qemu.sh: already installed: $(qemu-system-x86_64 --version | head -n1)"
	exit 0
fi

export DEBIAN_FRONTEND=noninteractive

if ! grep -rqs '^[^#]*bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
	echo "setup-qemu.sh: adding bookworm-backports to $BACKPORTS_LIST"
	echo "deb http://deb.debian.org/debian bookworm-backports main" >"$BACKPORTS_LIST"
fi

apt-get update -q
if [ "$need_qemu" = 1 ]; then
	apt-get install -y -q -t bookworm-backports --no-install-recommends qemu-system-x86 qemu-utils
fi
if [ -n "$need_guest" ]; then
	# shellcheck disable=SC2086 # word splitting of the package list is intended
	apt-get install -y -q --no-install-recommends $need_guest
fi

major=$(qemu_major)
[ -n "$major" ] && [ "$major" -ge "$MIN_MAJOR" ] ||
	die "QEMU >= $MIN_MAJOR.0 required, found: $(qemu-system-x86_64 --version 2>&1 | head -n1).
QEMU 7.2 (bookworm) corrupts pre-copy snapshots under TCG; install qemu-system-x86 from bookworm-backports."
echo "setup-qemu.sh: ok: $(qemu-system-x86_64 --version | head -n1)"
