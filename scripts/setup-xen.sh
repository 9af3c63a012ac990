#!/bin/sh
# setup-xen.sh: build the Xen-in-QEMU test environment from Debian 12 packages.
#
# Usage: scripts/setup-xen.sh [DIR]    (DIR default: <repo>/.cache/xen, or $VNSNAP_XEN_DIR)
#        scripts/setup-xen.sh --print-pins   (the candidate versions and sums, to update PINS)
#
# Nothing is installed on the host: the pinned .debs below are fetched with
# `apt-get download` into DIR/debs, checked against the SHA-256 recorded here,
# and unpacked with `dpkg -x`:
#   DIR/qemu72/  Debian 12's QEMU 7.2 (qemu-system-x86 and the firmware it boots
#                with). Xen must run under it, not under the host's QEMU 10 from
#                backports: under QEMU 10's TCG a PVH domU of Debian's Xen 4.17
#                powers itself off at boot (stale CR2 after a CR-read intercept).
#                DIR/qemu72/qemu-system-x86_64 is a wrapper that sets
#                QEMU_MODULE_DIR and -L to this copy's modules and firmware.
#   DIR/root/    Xen 4.17 (hypervisor, xl, xenstored, xenconsoled and their
#                libraries), the Debian kernel (dom0 and domU) with its modules,
#                and busybox-static; DIR/xen.elf is the unzipped hypervisor
#                that QEMU boots as a multiboot -kernel.
# The dom0 initramfs is built from DIR/root by xenbackend/xentest.
#
# Idempotent: when DIR/setup.ok matches PINS, the outputs exist and the .debs
# match their pins it only checks them (about a second); otherwise it fetches
# what is missing or damaged and unpacks everything afresh. Needs apt (root for `apt-get update` when
# the package lists lack a pinned version), dpkg-deb, gzip, sha256sum, depmod (kmod, installed
# here when missing and root).
set -eu

# PINS: package=version sha256, one per line. Debian replaces versions in
# bookworm at point releases and in bookworm-security with each advisory; when
# `apt-get download` no longer finds one, run --print-pins, paste, and re-test.
PINS='
qemu-system-x86=1:7.2+dfsg-7+deb12u18+b3 faf17e2cc7323acbb36bbd6329b61080e7ead0ebb92d33155f41b17d8db6fe15
qemu-system-common=1:7.2+dfsg-7+deb12u18+b3 cc6bbe2d5e0b9ed6306f054008967b0564dc06b2558ea5142590f522ccca9b2b
qemu-system-data=1:7.2+dfsg-7+deb12u18 8d7647370573fe9871949acf60d0c000546c2c089008a70accb3d015781e6bf1
seabios=1.16.2-1 08e5b3f761379f17a6051731cafa03e97686049e2cc1b8bdccc5a910646e2d8e
xen-hypervisor-4.17-amd64=4.17.7+13-g2445b30a44-0+deb12u1 fc074298a677325306662eea382cc4503339b8e1f4db54b24702b0b07cf6741d
xen-utils-4.17=4.17.7+13-g2445b30a44-0+deb12u1 1c928e408738cab624ee1d0ce2a824b0e9bc8874e91d635208f346940fb6d47c
xen-utils-common=4.17.7+13-g2445b30a44-0+deb12u1 4c50945f66c5ef6ff1b10eea4dcd9c1932f2eca4806dfb58ac82035b3bae1e59
xenstore-utils=4.17.7+13-g2445b30a44-0+deb12u1 f12f1d73fe949d8cb2574fd7a2d6b6f40b165ccf1a6a58cbb5336c03777afe14
libxenmisc4.17=4.17.7+13-g2445b30a44-0+deb12u1 bb43a3633976c8dfa79e0cad473ffeb4f014a5f666b3b62a32bd42ab6daf8862
libxenstore4=4.17.7+13-g2445b30a44-0+deb12u1 94197a6d85b33377f6f1775fa89b2c5eea96822736a87b4bb36f7a70fc7ff4d0
libxengnttab1=4.17.7+13-g2445b30a44-0+deb12u1 3525aa228b3f27e0a267bc6f9f59ab9963a2adf490a0df406810988b5fdee98e
libxenevtchn1=4.17.7+13-g2445b30a44-0+deb12u1 95f4a1a52c95c62360881c1a2770a47b5ff52bed6658e008754bda0cf5c92f0b
libxenforeignmemory1=4.17.7+13-g2445b30a44-0+deb12u1 c3a57bceb6eb06d77b960a133ac0591024d992fd1e820b25c4e3323d4635e04e
libxencall1=4.17.7+13-g2445b30a44-0+deb12u1 7479a19973fc1f5d35a73370e3ace8968d3bfb6c49f6b723b2ce85103fd7ebf1
libxendevicemodel1=4.17.7+13-g2445b30a44-0+deb12u1 205a8f266517dee5ac9c676aa2540e2865758cc584e2602ed978a76f160ef042
libxentoolcore1=4.17.7+13-g2445b30a44-0+deb12u1 67deaa6b71b3f5caa5021f45f2aa1b3054ce3a972e236222e9d79affe54e0c72
libxentoollog1=4.17.7+13-g2445b30a44-0+deb12u1 2d3d38d45d8176dd5d1517020c2daf686885f034229c33595ca263d0a9c8ecd3
libxenhypfs1=4.17.7+13-g2445b30a44-0+deb12u1 2eb9de8ca25a0142f7a54fe05563fca78f7afcf4bad9c936602b4c96a68ddfb6
libyajl2=2.1.0-3+deb12u2 b512a6efbe735e7c731185a1b3ea477ff306f0c3f6aa2970e85b12f01fe8063b
linux-image-6.1.0-57-amd64=6.1.192-3 14d219d01e1283261817d961dbb3895cb5b4288d0de10e0ba0632a0d993e15bf
busybox-static=1:1.35.0-4+deb12u1+b1 3d3fdbe91d4660c873e14b092c213fe81c1da6362daa236eb25d0171eb108744
'
# QEMU_PKGS are unpacked into qemu72/, every other pinned package into root/.
QEMU_PKGS='qemu-system-x86 qemu-system-common qemu-system-data seabios'
KERNEL_VERSION=6.1.0-57-amd64
XEN_VERSION=4.17

die() { echo "setup-xen.sh: $*" >&2; exit 1; }
log() { echo "setup-xen.sh: $*" >&2; }

here=$(cd "$(dirname "$0")" && pwd)

if [ "${1:-}" = --print-pins ]; then
	echo "$PINS" | while read -r pv _; do
		[ -n "$pv" ] || continue
		p=${pv%%=*}
		v=$(apt-cache policy "$p" | sed -n 's/^  Candidate: //p')
		s=$(apt-cache show "$p=$v" | sed -n 's/^SHA256: //p' | head -n1)
		echo "$p=$v $s"
	done
	exit 0
fi

dir=${1:-${VNSNAP_XEN_DIR:-$here/../.cache/xen}}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
stamp=$dir/setup.ok
want=$(echo "$PINS" | sha256sum | cut -d' ' -f1)

outputs_exist() {
	[ -x "$dir/qemu72/qemu-system-x86_64" ] && [ -f "$dir/xen.elf" ] &&
		[ -f "$dir/root/boot/vmlinuz-$KERNEL_VERSION" ] &&
		[ -x "$dir/root/usr/lib/xen-$XEN_VERSION/bin/xl" ] &&
		[ -x "$dir/root/bin/busybox" ] &&
		[ -f "$dir/root/lib/modules/$KERNEL_VERSION/modules.dep" ]
}

# One setup at a time per DIR: test binaries of several packages may call
# this script at once, and an unpack replaces the trees the others read.
if command -v flock >/dev/null 2>&1; then
	exec 9>"$dir/.lock"
	flock 9
fi

# debs_ok: every pinned .deb is there with its SHA-256 (one sha256sum call).
debs_ok() {
	echo "$PINS" | while read -r pv sum; do
		[ -n "$pv" ] && echo "$sum  $dir/debs/${pv%%=*}.deb"
	done | sha256sum -c --status 2>/dev/null
}

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && outputs_exist && debs_ok; then
	log "up to date: $dir"
	exit 0
fi

# depmod (kmod) indexes the unpacked kernel's modules. Debian pulls kmod in
# with a kernel package, so a machine that ran scripts/setup-qemu.sh has it;
# a fresh one (setup-xen.sh run alone) gets it here.
if ! command -v depmod >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
	log "installing kmod (depmod)"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends kmod >/dev/null 2>&1 ||
		{ apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends kmod >/dev/null; } ||
		die "apt-get install kmod failed"
fi
for tool in apt-get apt-cache dpkg-deb gzip sha256sum depmod; do
	command -v "$tool" >/dev/null 2>&1 || die "$tool not found (Debian 12 with apt is required)"
done

# deb_path PKG=VER: where the .deb of PKG is kept; its SHA-256 pins the version.
deb_path() { echo "$dir/debs/${1%%=*}.deb"; }

mkdir -p "$dir/debs"
dl=$(mktemp -d "$dir/debs/dl.XXXXXX")
trap 'rm -rf "$dl"' EXIT
# The pins whose .deb is missing or differs, fetched in one apt-get call
# (each call costs seconds of cache loading).
echo "$PINS" | while read -r pv sum; do
	[ -n "$pv" ] || continue
	f=$(deb_path "$pv")
	[ -f "$f" ] && echo "$sum  $f" | sha256sum -c --status && continue
	rm -f "$f"
	echo "$pv"
done >"$dl/missing"
if [ -s "$dl/missing" ]; then
	# shellcheck disable=SC2046 # one word per pin is intended
	if ! apt-cache show $(cat "$dl/missing") >/dev/null 2>&1; then
		log "package lists lack a pinned version: apt-get update"
		apt-get update -q >&2 || die "apt-get update failed (root needed)"
	fi
	log "download $(wc -l <"$dl/missing") packages"
	# shellcheck disable=SC2046
	(cd "$dl" && apt-get download -q $(cat "$dl/missing") >&2) ||
		die "apt-get download failed: a pinned version may be gone from Debian's archive; run '$0 --print-pins', update PINS and re-test"
	echo "$PINS" | while read -r pv sum; do
		[ -n "$pv" ] || continue
		f=$(deb_path "$pv")
		[ -f "$f" ] && continue
		mv "$dl/${pv%%=*}"_*.deb "$f" || die "apt-get download wrote no .deb for $pv"
		echo "$sum  $f" | sha256sum -c --status || die "$f: SHA-256 differs from the pin $sum"
	done
fi
rm -rf "$dl"

# Unpack into fresh folders, then move them in place, so a crash leaves no
# half-unpacked tree behind a valid stamp.
rm -f "$stamp"
tmp=$(mktemp -d "$dir/unpack.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/qemu72" "$tmp/root"
echo "$PINS" | while read -r pv _; do
	[ -n "$pv" ] || continue
	p=${pv%%=*}
	dest=root
	for q in $QEMU_PKGS; do [ "$p" = "$q" ] && dest=qemu72; done
	dpkg-deb -x "$(deb_path "$pv")" "$tmp/$dest"
done

# Debian's /usr/share/qemu may link firmware to absolute /usr/share/seabios/...;
# make such links relative, into this copy, so the host's (backports) firmware
# is never used (the wrapper also puts this copy's seabios first with -L).
find "$tmp/qemu72/usr/share/qemu" -type l | while read -r l; do
	t=$(readlink "$l")
	case "$t" in
	/*) [ -e "$tmp/qemu72$t" ] &&
		ln -sfn "$(realpath -m --relative-to="$(dirname "$l")" "$tmp/qemu72$t")" "$l" ;;
	esac
done
gzip -dc "$tmp/root/boot/xen-$XEN_VERSION-amd64.gz" >"$tmp/xen.elf"
# The .deb has no modules.dep (its postinst runs depmod); the dom0 initramfs
# builder reads it to load modules with their dependencies.
depmod -b "$tmp/root" "$KERNEL_VERSION"

for d in qemu72 root; do
	rm -rf "$dir/$d"
	mv "$tmp/$d" "$dir/$d"
done
mv "$tmp/xen.elf" "$dir/xen.elf"

cat >"$dir/qemu72/qemu-system-x86_64" <<EOF
#!/bin/sh
# Debian 12's QEMU 7.2, unpacked by scripts/setup-xen.sh; not the host's QEMU.
export QEMU_MODULE_DIR='$dir/qemu72/usr/lib/x86_64-linux-gnu/qemu'
exec '$dir/qemu72/usr/bin/qemu-system-x86_64' -L '$dir/qemu72/usr/share/qemu' -L '$dir/qemu72/usr/share/seabios' "\$@"
EOF
chmod 755 "$dir/qemu72/qemu-system-x86_64"

# The host must provide QEMU 7.2's shared libraries (QEMU 10's cover them).
missing=$(ldd "$dir/qemu72/usr/bin/qemu-system-x86_64" | sed -n 's/^[[:space:]]*\([^ ]*\) => not found.*/\1/p' | tr '\n' ' ')
[ -z "$missing" ] || die "QEMU 7.2 needs host libraries: $missing(install them with apt)"
v=$("$dir/qemu72/qemu-system-x86_64" --version | head -n1)
case "$v" in
*"version 7.2."*) ;;
*) die "unexpected QEMU in $dir/qemu72: $v" ;;
esac
outputs_exist || die "unpacked tree in $dir lacks an expected file"
echo "$want" >"$stamp"
log "ok: $dir ($v; Xen $XEN_VERSION; kernel $KERNEL_VERSION)"
