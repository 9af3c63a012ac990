package guestimg

// initScript is the guest's /init, run by busybox sh as PID 1. It reads its
// configuration from the kernel command line:
//
//	vnsnap.ip=10.0.0.1/24     address of eth0 (no network set-up without it)
//	vnsnap.mac=52:54:...      MAC of eth0 (QEMU's -device mac= normally matches)
//	vnsnap.run=a:-x=1+b       programs to start from /bin: '+' separates
//	                          programs, ':' separates a program's arguments
const initScript = `#!/bin/sh
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec </dev/console >/dev/console 2>&1
for m in $(cat /etc/modules); do
	insmod /lib/modules/$m.ko || echo "VNSNAP WARN insmod $m failed"
done
ip=; mac=; run=
for a in $(cat /proc/cmdline); do
	case "$a" in
	vnsnap.ip=*) ip=${a#vnsnap.ip=} ;;
	vnsnap.mac=*) mac=${a#vnsnap.mac=} ;;
	vnsnap.run=*) run=${a#vnsnap.run=} ;;
	esac
done
ip link set lo up
if [ -n "$ip" ]; then
	i=0
	while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done
	[ -n "$mac" ] && ip link set eth0 address "$mac"
	ip addr add "$ip" dev eth0
	ip link set eth0 up
fi
echo "VNSNAP READY ip=$ip"
for prog in $(echo "$run" | tr '+' ' '); do
	/bin/$(echo "$prog" | tr ':' ' ') </dev/null >/dev/console 2>&1 &
done
while true; do sleep 3600; done
`
