#!/bin/sh
# Starts and stops a private libvirt daemon that plays one "host" for kiln's
# libvirt tests, without touching the machine's own libvirt (used by
# internal/libvirttest):
#
#   libvirt-host.sh start ROOT ADDR PORT [NETNS]   libvirtd + virtlogd, qemu+tcp://ADDR:PORT/system
#                                                   (again after its libvirtd died: a restart)
#   libvirt-host.sh stop ROOT                       kills its domains' QEMUs and its daemons
#
# Each host has its own /etc/libvirt, /run/libvirt, /var/lib/libvirt,
# /var/log/libvirt and /var/cache/libvirt bound from ROOT in a private mount
# and UTS namespace, and its own host_uuid. With NETNS the daemon runs in
# that network namespace (the caller creates and removes it). Needs root.
set -eu

cmd=${1:?usage: libvirt-host.sh start ROOT ADDR PORT [NETNS] | stop ROOT}
root=${2:?ROOT missing}

case "$cmd" in
start)
	addr=${3:?ADDR missing}
	port=${4:?PORT missing}
	netns=${5:-}
	mkdir -p "$root/etc" "$root/run" "$root/lib" "$root/log" "$root/cache" "$root/pool"
	# The QEMU driver refuses to start without this account (Debian's
	# libvirt-daemon-system would create it).
	getent group libvirt-qemu >/dev/null || groupadd --system libvirt-qemu
	getent passwd libvirt-qemu >/dev/null || useradd --system --no-create-home --home-dir /nonexistent \
		--shell /usr/sbin/nologin --gid libvirt-qemu libvirt-qemu
	# A restarted host (start again after its libvirtd died) keeps its UUID
	# and its virtlogd, and its libvirtd takes back the running domains.
	[ -s "$root/uuid" ] || cat /proc/sys/kernel/random/uuid >"$root/uuid"
	uuid=$(cat "$root/uuid")
	start_logd="virtlogd -d -p '$root/virtlogd.pid' &&"
	if [ -s "$root/virtlogd.pid" ] && kill -0 "$(cat "$root/virtlogd.pid")" 2>/dev/null; then
		start_logd=
	fi
	cat >"$root/etc/libvirtd.conf" <<EOF
listen_tls = 0
listen_tcp = 1
listen_addr = "$addr"
tcp_port = "$port"
auth_tcp = "none"
auth_unix_rw = "none"
host_uuid = "$uuid"
log_outputs = "3:file:/var/log/libvirt/libvirtd.log"
EOF
	cat >"$root/etc/qemu.conf" <<'EOF'
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
namespaces = []
EOF
	: >"$root/etc/virtlogd.conf"
	: >"$root/etc/libvirt.conf"
	inner="mount --make-rprivate / &&
		mkdir -p /var/log/libvirt /var/cache/libvirt /var/lib/libvirt /run/libvirt &&
		mount --bind '$root/etc' /etc/libvirt &&
		mount --bind '$root/run' /run/libvirt &&
		mount --bind '$root/lib' /var/lib/libvirt &&
		mount --bind '$root/log' /var/log/libvirt &&
		mount --bind '$root/cache' /var/cache/libvirt &&
		hostname kiln-test-$(basename "$root") &&
		if [ -e /dev/kvm ] && [ -e /tmp/nokvm ]; then mount --bind /tmp/nokvm /dev/kvm; fi &&
		$start_logd
		exec libvirtd -d -l -p '$root/libvirtd.pid'"
	if [ -n "$netns" ]; then
		ip netns exec "$netns" ip link set lo up
		ip netns exec "$netns" unshare -m -u sh -c "$inner"
	else
		unshare -m -u sh -c "$inner"
	fi
	# libvirtd -d returns before it listens.
	i=0
	while ! virsh -c "qemu+tcp://$addr:$port/system" uri >/dev/null 2>&1; do
		i=$((i + 1))
		if [ $i -gt 100 ]; then
			echo "libvirtd for $root did not listen on $addr:$port within 10s; its log:" >&2
			tail -20 "$root/log/libvirtd.log" >&2 || true
			exit 1
		fi
		sleep 0.1
	done
	;;
stop)
	# Domains' QEMUs outlive libvirtd, so they go first, by libvirt's own pid files.
	for f in "$root"/run/qemu/*.pid; do
		[ -e "$f" ] || continue
		kill -9 "$(cat "$f")" 2>/dev/null || true
	done
	pids=
	for d in libvirtd virtlogd; do
		if [ -e "$root/$d.pid" ]; then
			pid=$(cat "$root/$d.pid")
			kill "$pid" 2>/dev/null && pids="$pids $pid"
		fi
	done
	# Wait for them to go, so the caller can remove ROOT.
	for pid in $pids; do
		i=0
		while kill -0 "$pid" 2>/dev/null && [ $i -lt 50 ]; do
			sleep 0.1
			i=$((i + 1))
		done
		kill -9 "$pid" 2>/dev/null || true
	done
	;;
*)
	echo "libvirt-host.sh: unknown command $cmd (start or stop)" >&2
	exit 2
	;;
esac
