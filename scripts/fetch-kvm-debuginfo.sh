#!/usr/bin/env bash
# Real DWARF of a Debian kernel's kvm module, for the DWARF route's tests: the -dbg package of the
# same kernel scripts/fetch-split-btf.sh takes its BTF from (so BTF, DWARF and pahole can be compared).
# Only kvm.ko's debug file is kept (~19 MB of the package's 1.7 GB), streamed out of the .deb.
# Cached in $CACHE/dbg-<package>_<version>/kvm.ko with SOURCE, keyed by package and version.
set -euo pipefail
CACHE=${1:-/var/cache/tsalign}
. "$(dirname "$0")/debian-kernel-package.sh"
out="$CACHE/dbg-${pkg}_${ver}"
if [ -s "$out/kvm.ko" ]; then echo "$out"; exit 0; fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get download -qq "$pkg-dbg=$ver" 2>/dev/null)
deb=$(ls "$work"/*.deb)
dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$work" --wildcards '*/kernel/arch/x86/kvm/kvm.ko'
ko=$(find "$work/usr" -name kvm.ko -path '*arch/x86/kvm/*' | head -n1)
[ -s "$ko" ] || { echo "fetch-kvm-debuginfo: no kvm.ko in $pkg-dbg" >&2; exit 1; }
mkdir -p "$out"
cp "$ko" "$out/kvm.ko.tmp" && mv "$out/kvm.ko.tmp" "$out/kvm.ko"
echo "Debian package $pkg-dbg version $ver (apt-get download); kvm.ko = ${ko#$work}" >"$out/SOURCE"
echo "$out"
