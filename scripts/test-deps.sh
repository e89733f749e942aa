#!/bin/sh
# Installs what the tests need beyond kiln's own packages (scripts/deps.sh),
# as root; otherwise says exactly what to install. make test runs it, so
# one command passes the tests on a fresh Debian or Ubuntu machine.
#   - docker-registry: a real OCI registry for the push/pull tests (ociimage,
#     cmd/kiln, e2e), which start it themselves on 127.0.0.1.
#   - libvirt's daemon, its QEMU driver and virsh for libvirthost's tests
#     (internal/libvirttest starts private daemons); never
#     libvirt-daemon-system, which pulls in systemd as init. The QEMU driver
#     needs a libvirt-qemu account.
set -eu
need=""
command -v docker-registry >/dev/null 2>&1 || need="$need docker-registry"
if ! command -v libvirtd >/dev/null 2>&1 && [ ! -x /usr/sbin/libvirtd ]; then
	need="$need libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients"
fi
command -v ip >/dev/null 2>&1 || [ -x /usr/sbin/ip ] || [ -x /sbin/ip ] || need="$need iproute2"
if [ "$(id -u)" != 0 ]; then
	if [ -n "$need" ]; then
		echo "the tests need these packages; run: sudo apt-get install$need" >&2
		exit 1
	fi
	exit 0
fi
if [ -n "$need" ]; then
	echo "installing for the tests:$need"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	# shellcheck disable=SC2086
	apt-get install -y -qq --no-install-recommends $need >/dev/null
fi
getent group libvirt-qemu >/dev/null || groupadd --system libvirt-qemu
getent passwd libvirt-qemu >/dev/null || useradd --system --no-create-home --home-dir /nonexistent \
	--shell /usr/sbin/nologin --gid libvirt-qemu libvirt-qemu
