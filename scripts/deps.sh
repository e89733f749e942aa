#!/bin/sh
# Installs the Debian/Ubuntu packages kiln needs when run as root; otherwise
# says exactly which to install.
set -eu
need=""
check() { # command package
	command -v "$1" >/dev/null 2>&1 || need="$need $2"
}
check qemu-system-x86_64 qemu-system-x86
check qemu-img qemu-utils
check mmdebstrap mmdebstrap
check mkfs.ext4 e2fsprogs
check grub-mkimage grub-common
[ -f /usr/lib/grub/i386-pc/boot.img ] || need="$need grub-pc-bin"
[ -f /usr/lib/grub/x86_64-efi/linux.mod ] || need="$need grub-efi-amd64-bin"
[ -e /usr/share/OVMF/OVMF_CODE_4M.fd ] || [ -e /usr/share/OVMF/OVMF_CODE.fd ] || need="$need ovmf"
check ssh openssh-client
[ -e /etc/ssl/certs/ca-certificates.crt ] || need="$need ca-certificates"
[ -e /usr/share/keyrings/debian-archive-keyring.gpg ] || need="$need debian-archive-keyring"
if ! command -v go >/dev/null 2>&1 && [ ! -x /usr/local/go/bin/go ]; then
	echo "kiln needs Go 1.26 or newer (https://go.dev/dl); install it to /usr/local/go" >&2
	exit 1
fi
[ -z "$need" ] && exit 0
if [ "$(id -u)" = 0 ]; then
	echo "installing:$need"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	# shellcheck disable=SC2086
	apt-get install -y -qq --no-install-recommends $need >/dev/null
else
	echo "kiln needs these packages; run: sudo apt-get install$need" >&2
	exit 1
fi
