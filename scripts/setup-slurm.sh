#!/bin/sh
# setup-slurm.sh: install what the real-Slurm test (cmd/vnsnap/slurm_test.go)
# needs on Debian 12 (bookworm): Slurm 22.05's controller, node daemon and
# client commands, and MUNGE for authentication.
#
# Idempotent; run as root. When everything is installed it returns at once.
# It only installs: the packages' own services are not started here (in a
# container without systemd, invoke-rc.d refuses to anyway). The test starts
# munged, slurmctld and slurmd itself with a one-node configuration in a
# temporary directory and stops them when it ends.
set -eu

PKGS="slurmctld slurmd slurm-client munge"

die() { echo "setup-slurm.sh: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root"

installed() {
	dpkg-query -W -f='${Status}\n' "$1" 2>/dev/null | grep -q '^install ok installed$'
}

need=""
for p in $PKGS; do
	installed "$p" || need="$need $p"
done
if [ -z "$need" ]; then
	echo "setup-slurm.sh: already installed: $(slurmctld -V)"
	exit 0
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# shellcheck disable=SC2086 # word splitting of the package list is intended
apt-get install -y -q --no-install-recommends $need
for c in munged slurmctld slurmd sbatch scontrol scancel squeue sinfo; do
	command -v "$c" >/dev/null 2>&1 || die "$c not found after installing$need"
done
echo "setup-slurm.sh: ok: $(slurmctld -V), $(munged -V 2>&1 | head -n1)"
