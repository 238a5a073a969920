#!/usr/bin/env bash
# A Debian bookworm VM image that boots through its own GRUB (BIOS/MBR), for the guest-role reboot
# test under qemu TCG. No loop devices, no mounts: debootstrap into a directory, the ext4 partition
# filled straight from it (mkfs.ext4 -d), GRUB's boot.img + a grub-mkimage core image written into
# the MBR gap, grub.cfg made by the guest's own update-grub at build time with a stand-in grub-probe.
# Cached in $CACHE/vm-bookworm-<key>/ (base.img, id_ed25519 for root), keyed by this recipe.
set -euo pipefail
CACHE=${1:-/var/cache/tsalign}
MIRROR=${TSALIGN_DEBIAN_MIRROR:-$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
PACKAGES=linux-image-amd64,grub-pc,openssh-server,python3,systemd-sysv,udev,dbus,iproute2,initramfs-tools,procps
SIZE_MB=2048
key=$( { cat "$0"; echo "$PACKAGES"; } | sha256sum | cut -c1-12)
out="$CACHE/vm-bookworm-$key"
if [ -f "$out/.complete" ]; then echo "$out"; exit 0; fi
for tool in debootstrap sfdisk mkfs.ext4 grub-mkimage qemu-img; do
  command -v "$tool" >/dev/null || { echo "build-vm-image: $tool missing (make deps installs it)" >&2; exit 1; }
done
work=$(mktemp -d "$CACHE/vm-build.XXXXXX")
root="$work/root"
cleanup() { umount -l "$root/proc" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
mkdir -p "$CACHE/debootstrap-cache"
DEBIAN_FRONTEND=noninteractive debootstrap --variant=minbase --include="$PACKAGES" \
  --cache-dir="$CACHE/debootstrap-cache" bookworm "$root" "$MIRROR" >"$work/debootstrap.log" 2>&1 \
  || { cp "$work/debootstrap.log" "$CACHE/vm-debootstrap-$key.log"; echo "build-vm-image: debootstrap failed, see $CACHE/vm-debootstrap-$key.log" >&2; exit 1; }

echo tsalign-vm >"$root/etc/hostname"
printf '/dev/vda1 / ext4 errors=remount-ro 0 1\n' >"$root/etc/fstab"
mkdir -p "$root/etc/systemd/network"
printf '[Match]\nName=en*\n\n[Network]\nDHCP=yes\n' >"$root/etc/systemd/network/10-dhcp.network"
ln -sf /lib/systemd/system/systemd-networkd.service "$root/etc/systemd/system/multi-user.target.wants/systemd-networkd.service"
ssh-keygen -q -t ed25519 -N "" -f "$work/id_ed25519"
mkdir -p -m 700 "$root/root/.ssh"
cp "$work/id_ed25519.pub" "$root/root/.ssh/authorized_keys"
chmod 600 "$root/root/.ssh/authorized_keys"
printf 'PermitRootLogin prohibit-password\nUseDNS no\n' >"$root/etc/ssh/sshd_config.d/tsalign.conf"
# a small initramfs: only what a virtio guest needs
sed -i 's/^MODULES=.*/MODULES=list/' "$root/etc/initramfs-tools/initramfs.conf"
printf 'virtio_pci\nvirtio_blk\nvirtio_net\next4\n' >>"$root/etc/initramfs-tools/modules"
# GRUB: serial console, short timeout, root=/dev/vda1
cat >"$root/etc/default/grub" <<'GRUB'
GRUB_DEFAULT=0
GRUB_TIMEOUT=1
GRUB_DISTRIBUTOR=Debian
GRUB_CMDLINE_LINUX_DEFAULT=""
GRUB_CMDLINE_LINUX="console=ttyS0"
GRUB_TERMINAL=serial
GRUB_SERIAL_COMMAND="serial --unit=0 --speed=115200"
GRUB_DISABLE_LINUX_UUID=true
GRUB_DISABLE_OS_PROBER=true
GRUB
mount -t proc proc "$root/proc"
chroot "$root" update-initramfs -u -k all >"$work/initramfs.log" 2>&1
# stand-in grub-probe: answers for the disk the VM will have (/dev/vda, msdos partition 1, ext4)
mv "$root/usr/sbin/grub-probe" "$root/usr/sbin/grub-probe.real"
cat >"$root/usr/sbin/grub-probe" <<'PROBE'
#!/bin/sh
for a in "$@"; do case "$a" in --target=*) t=${a#--target=} ;; esac; done
case "$t" in
  device) echo /dev/vda1 ;; fs) echo ext2 ;; partmap) echo msdos ;; abstraction) echo ;;
  drive) echo '(hd0,msdos1)' ;; compatibility_hint) echo hd0,msdos1 ;; fs_uuid) echo ;; *) echo ;;
esac
PROBE
chmod 755 "$root/usr/sbin/grub-probe"
chroot "$root" update-grub >"$work/update-grub.log" 2>&1
mv "$root/usr/sbin/grub-probe.real" "$root/usr/sbin/grub-probe"
umount -l "$root/proc"
# GRUB's modules where the core image's prefix looks for them (grub-install would copy them)
mkdir -p "$root/boot/grub/i386-pc"
cp "$root"/usr/lib/grub/i386-pc/*.mod "$root"/usr/lib/grub/i386-pc/*.lst "$root/boot/grub/i386-pc/"
grep -q 'linux.*root=/dev/vda1' "$root/boot/grub/grub.cfg" || { echo "build-vm-image: grub.cfg has no root=/dev/vda1" >&2; exit 1; }
# the disk: MBR, one bootable partition from 1 MiB, ext4 filled from the directory
img="$work/base.img"
truncate -s "${SIZE_MB}M" "$img"
printf 'label: dos\nstart=2048, type=83, bootable\n' | sfdisk -q "$img"
mkfs.ext4 -q -F -E offset=1048576 -d "$root" "$img" $(( (SIZE_MB - 1) * 1024 ))k
grub-mkimage -O i386-pc -o "$work/core.img" -p '(hd0,msdos1)/boot/grub' biosdisk part_msdos ext2
dd if=/usr/lib/grub/i386-pc/boot.img of="$img" bs=440 count=1 conv=notrunc status=none
dd if="$work/core.img" of="$img" bs=512 seek=1 conv=notrunc status=none
mkdir -p "$out.tmp"
mv "$img" "$work/id_ed25519" "$work/id_ed25519.pub" "$out.tmp/"
touch "$out.tmp/.complete"
rm -rf "$out"
mv "$out.tmp" "$out"
echo "$out"
