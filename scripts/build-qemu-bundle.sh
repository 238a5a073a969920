#!/usr/bin/env bash
# This machine's qemu-system-x86_64 with the shared libraries it links and the x86 firmware it loads,
# as one tarball to run inside the nested KVM host of the lab (the GRUB VM image carries no QEMU):
# unpack anywhere and run `<dir>/qemu-system-x86_64` (a wrapper setting LD_LIBRARY_PATH and -L).
# Cached in $CACHE/qemu-bundle-<key>/qemu.tgz, keyed by this recipe and the QEMU package version.
set -euo pipefail
CACHE=${1:-/var/cache/tsalign}
qemu=$(command -v qemu-system-x86_64) || { echo "build-qemu-bundle: qemu-system-x86_64 missing (make deps installs it)" >&2; exit 1; }
version=$(dpkg-query -W -f='${Version}' qemu-system-x86 2>/dev/null || "$qemu" --version | head -1)
key=$( { cat "$0"; echo "$version"; } | sha256sum | cut -c1-12)
out="$CACHE/qemu-bundle-$key"
if [ -f "$out/.complete" ]; then echo "$out"; exit 0; fi
work=$(mktemp -d "$CACHE/qemu-bundle-build.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/qemu/lib" "$work/qemu/share"
cp "$qemu" "$work/qemu/qemu-system-x86_64.bin"
ldd "$qemu" | awk '/=> \//{print $3}' | xargs -r cp -L -t "$work/qemu/lib"
for f in bios-microvm.bin bios-256k.bin linuxboot_dma.bin linuxboot.bin pvh.bin qboot.rom kvmvapic.bin; do
  for d in /usr/share/qemu /usr/share/seabios; do
    src=$(readlink -f "$d/$f" 2>/dev/null || true)
    if [ -f "$src" ]; then cp "$src" "$work/qemu/share/$f"; break; fi
  done
done
cat >"$work/qemu/qemu-system-x86_64" <<'WRAP'
#!/bin/sh
d=$(dirname "$(readlink -f "$0")")
LD_LIBRARY_PATH="$d/lib" exec "$d/qemu-system-x86_64.bin" -L "$d/share" "$@"
WRAP
chmod +x "$work/qemu/qemu-system-x86_64"
mkdir -p "$out"
tar -C "$work" -czf "$out/qemu.tgz" qemu
touch "$out/.complete"
echo "$out"
