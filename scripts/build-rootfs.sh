#!/usr/bin/env bash
# A Debian bookworm root filesystem for the Ansible guest-role tests: served by sshd inside a
# network namespace (see tests/infra/netns.py). Cached in $CACHE/rootfs-<key>, keyed by this
# recipe; prints the directory. A package cache keeps rebuilds fast.
set -euo pipefail
CACHE=${1:-/var/cache/tsalign}
MIRROR=${TSALIGN_DEBIAN_MIRROR:-$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
PACKAGES=python3,openssh-server,grub2-common,iproute2,procps
key=$( { cat "$0"; echo "$PACKAGES"; } | sha256sum | cut -c1-12)
out="$CACHE/rootfs-bookworm-$key"
if [ -f "$out/.complete" ]; then echo "$out"; exit 0; fi
rm -rf "$out.tmp"
mkdir -p "$CACHE/debootstrap-cache"
debootstrap --variant=minbase --include="$PACKAGES" --cache-dir="$CACHE/debootstrap-cache" \
  bookworm "$out.tmp" "$MIRROR" >"$CACHE/debootstrap-$key.log" 2>&1 \
  || { echo "build-rootfs: debootstrap failed, see $CACHE/debootstrap-$key.log" >&2; exit 1; }
# no services start inside the chroot while packages are configured later
rm -f "$out.tmp/etc/ssh/ssh_host_"*
printf 'tsalign-netns-target\n' >"$out.tmp/etc/hostname"
# /etc/default/grub as grub2-common's postinst writes it (ucf); keep it even if the postinst was skipped
if [ ! -f "$out.tmp/etc/default/grub" ] && [ -f "$out.tmp/usr/share/grub/default/grub" ]; then
  cp "$out.tmp/usr/share/grub/default/grub" "$out.tmp/etc/default/grub"
fi
touch "$out.tmp/.complete"
rm -rf "$out"
mv "$out.tmp" "$out"
echo "$out"
