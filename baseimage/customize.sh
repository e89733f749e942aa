# kiln's base image recipe: turns mmdebstrap's tree into a generic cloud image.
# Usage: sh customize.sh TREE ROOT_UUID SOURCES_FILE
set -eu
root="$1"
root_uuid="$2"
sources="$3"
case "$root" in /*/*) ;; *) echo "customize.sh: refusing tree '$root'" >&2; exit 1 ;; esac

printf 'UUID=%s / ext4 rw,discard,errors=remount-ro 0 1\nLABEL=UEFI /boot/efi vfat umask=0077,nofail 0 0\n' "$root_uuid" > "$root/etc/fstab"
mkdir -p "$root/boot/efi"
echo 'LANG=C.UTF-8' > "$root/etc/default/locale"
cat > "$root/etc/cloud/cloud.cfg.d/01_kiln.cfg" <<'CFG'
# Written by kiln.
# Look for a NoCloud seed only.
datasource_list: [ NoCloud, None ]
# Keep the sources.list this image was made with (its --mirror) rather than
# cloud-init's template of deb.debian.org; user-data's apt settings still win.
apt:
  preserve_sources_list: true
# GRUB is installed by the image maker, not by grub-pc's debconf: nothing
# for this module to do but spend a second and a half under TCG.
grub_dpkg:
  enabled: false
CFG
mkdir -p "$root/etc/network/interfaces.d"
printf 'auto lo\niface lo inet loopback\n\nsource /etc/network/interfaces.d/*\n' > "$root/etc/network/interfaces"
echo localhost > "$root/etc/hostname"
printf '127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n' > "$root/etc/hosts"
cp "$sources" "$root/etc/apt/sources.list"

# Nothing that belongs to one machine: cloud-init makes these per instance.
rm -f "$root/etc/resolv.conf"
rm -f "$root"/etc/ssh/ssh_host_*
: > "$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"
chroot "$root" apt-get clean
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin
find "$root/var/log" -type f -delete

# GRUB boots these links; Debian's kernel packages keep them current.
test -e "$root/vmlinuz" && test -e "$root/initrd.img"
