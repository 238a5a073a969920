#!/usr/bin/env bash
# Real split-BTF samples for the tests: a Debian cloud kernel builds KVM as a module, so
# struct kvm_vcpu lives in kvm.ko's .BTF, split on vmlinux's. Fetched from the Debian archive with
# apt-get download, cached in $CACHE/btf-<package>_<version>/ (keyed by package and version):
#   vmlinux.btf  the .BTF section of vmlinux (the xz stream inside vmlinuz, decompressed)
#   kvm.btf      the .BTF section of kvm.ko
#   SOURCE       where they came from
set -euo pipefail
CACHE=${1:-/var/cache/tsalign}
. "$(dirname "$0")/debian-kernel-package.sh"
out="$CACHE/btf-${pkg}_${ver}"
if [ -s "$out/kvm.btf" ] && [ -s "$out/vmlinux.btf" ]; then echo "$out"; exit 0; fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get download -qq "$pkg=$ver" 2>/dev/null)
dpkg -x "$work"/*.deb "$work/x"
ko=$(find "$work/x" -name 'kvm.ko*' -path '*arch/x86/kvm/*' | head -n1)
case "$ko" in
  *.xz) xz -dc "$ko" >"$work/kvm.ko" ;;
  *.zst) zstd -qdc "$ko" >"$work/kvm.ko" ;;
  *) cp "$ko" "$work/kvm.ko" ;;
esac
objcopy --dump-section .BTF="$work/kvm.btf" "$work/kvm.ko" "$work/kvm.scratch"
vmlinuz=$(find "$work/x/boot" -name 'vmlinuz-*' | head -n1)
# vmlinuz is a bzImage: its header names the compressed payload (setup_sects @0x1f1,
# payload_offset/payload_length @0x248); the payload's magic says which decompressor to use.
kind=$(python3 - "$vmlinuz" "$work/payload" <<'PY'
import struct, sys
data = open(sys.argv[1], "rb").read()
setup_sects = data[0x1F1] or 4
off, length = struct.unpack_from("<II", data, 0x248)
start = (setup_sects + 1) * 512 + off
payload = data[start:start + length]
magics = {"xz": b"\xfd7zXZ\x00", "zstd": b"\x28\xb5\x2f\xfd", "lz4": b"\x02\x21\x4c\x18", "gzip": b"\x1f\x8b"}
kind = next((k for k, m in magics.items() if payload.startswith(m)), None)
if kind is None:
    sys.exit("unknown vmlinuz payload magic " + payload[:6].hex())
open(sys.argv[2], "wb").write(payload)
print(kind)
PY
)
case "$kind" in
  xz) xz -qdc "$work/payload" >"$work/vmlinux" 2>/dev/null || true ;;
  zstd) zstd -qdc "$work/payload" >"$work/vmlinux" 2>/dev/null || true ;;
  lz4) lz4 -qdc "$work/payload" >"$work/vmlinux" 2>/dev/null || true ;;
  gzip) gzip -qdc "$work/payload" >"$work/vmlinux" 2>/dev/null || true ;;
esac
[ -s "$work/vmlinux" ] || { echo "fetch-split-btf: could not decompress the $kind vmlinux in $vmlinuz" >&2; exit 1; }
objcopy --dump-section .BTF="$work/vmlinux.btf" "$work/vmlinux" "$work/vmlinux.scratch"
mkdir -p "$out"
cp "$work/kvm.btf" "$work/vmlinux.btf" "$out/"
echo "Debian package $pkg version $ver (apt-get download); kvm.btf = .BTF of $(basename "$ko"), vmlinux.btf = .BTF of the vmlinux in $(basename "$vmlinuz")" >"$out/SOURCE"
echo "$out"
