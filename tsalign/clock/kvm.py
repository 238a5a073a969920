"""host_tsc <-> guest_tsc as KVM computes it.

``guest = ((host * ratio) >> frac_bits) + offset  (mod 2**64)`` with an exact 128-bit product
(kvm_scale_tsc() / mul_u64_u64_shr() in arch/x86/kvm/x86.c). ``ratio == 1 << frac_bits`` means no
scaling; frac_bits is 48 on Intel (VMX) and 32 on AMD (SVM).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InvalidParameter
from ..numbers import MASK64, parse_offset, to_signed64

__all__ = ["FRAC_BITS_SVM", "FRAC_BITS_VMX", "TscParams", "guest_to_host_tsc", "host_to_guest_tsc"]

FRAC_BITS_VMX = 48
FRAC_BITS_SVM = 32


@dataclass(frozen=True)
class TscParams:
    """Per-vCPU TSC parameters.

    offset:    cycles, canonical unsigned 64-bit (a signed value is accepted and wrapped)
    ratio:     fixed-point multiplier; 0 means "no scaling" and is normalised to 1 << frac_bits
    frac_bits: fraction bits of ratio, 0..63
    """

    offset: int = 0
    ratio: int = 0
    frac_bits: int = FRAC_BITS_VMX

    def __post_init__(self) -> None:
        object.__setattr__(self, "offset", parse_offset(self.offset, "tsc offset"))
        if not 0 <= self.frac_bits <= 63:
            raise InvalidParameter(
                "tsc frac bits", self.frac_bits, "0..63 (48 on Intel VMX, 32 on AMD SVM)"
            )
        ratio = self.ratio or (1 << self.frac_bits)
        if not 0 < ratio <= MASK64:
            raise InvalidParameter(
                "tsc ratio", self.ratio, "a positive 64-bit fixed-point ratio (1 << frac_bits = none)"
            )
        object.__setattr__(self, "ratio", ratio)

    @property
    def scaled(self) -> bool:
        """True when the guest TSC runs at a different rate than the host's."""
        return self.ratio != 1 << self.frac_bits

    @property
    def signed_offset(self) -> int:
        """The offset as KVM debugfs prints it (signed 64-bit), in cycles."""
        return to_signed64(self.offset)


def host_to_guest_tsc(host_tsc: int, p: TscParams) -> int:
    """host TSC cycles -> guest TSC cycles (mod 2**64), exactly as KVM."""
    h = host_tsc & MASK64
    scaled = h if not p.scaled else ((h * p.ratio) >> p.frac_bits) & MASK64
    return (scaled + p.offset) & MASK64


def guest_to_host_tsc(guest_tsc: int, p: TscParams) -> int:
    """guest TSC cycles -> host TSC cycles (mod 2**64).

    Exact without scaling. With scaling it returns the smallest host TSC whose guest value is
    >= ``guest_tsc`` (ceiling division), so host->guest->host is exact when the guest runs at
    least as fast as the host, guest->host->guest is exact when it runs at most as fast, and the
    other direction is within one cycle of the coarser clock.
    """
    x = (guest_tsc - p.offset) & MASK64
    if not p.scaled:
        return x
    return (-((-(x << p.frac_bits)) // p.ratio)) & MASK64
