"""numpy-vectorised twins of the scalar conversions, bit-identical on uint64 arrays.

numpy uint64 arithmetic wraps mod 2**64 like the kernel's u64; the 128-bit products and the
128/64 ceiling division are done with 32-bit limbs. Inputs are converted with
``np.asarray(x, dtype=np.uint64)``; parameters may be scalars or arrays that broadcast.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from .kvm import TscParams
from .perf import PerfTimeConv
from .pvclock import Pvclock

__all__ = [
    "U64Array",
    "ceil_div_u128_u64",
    "guest_to_host_tsc",
    "host_to_guest_tsc",
    "host_to_guest_tsc_arrays",
    "kvmclock_to_tsc",
    "mul_u64_u64",
    "perf_ns_to_tsc",
    "shr_u128",
    "tsc_to_kvmclock",
    "tsc_to_perf_ns",
]

U64Array = npt.NDArray[np.uint64]
_M32 = np.uint64(0xFFFFFFFF)
_S32 = np.uint64(32)
_ONE = np.uint64(1)


def _u64(x: Any) -> U64Array:
    return np.asarray(x, dtype=np.uint64)


def mul_u64_u64(a: Any, b: Any) -> tuple[U64Array, U64Array]:
    """Exact 128-bit product of two uint64 arrays: returns (hi, lo)."""
    a, b = _u64(a), _u64(b)
    a_lo, a_hi = a & _M32, a >> _S32
    b_lo, b_hi = b & _M32, b >> _S32
    ll = a_lo * b_lo
    lh = a_lo * b_hi
    hl = a_hi * b_lo
    hh = a_hi * b_hi
    mid = (ll >> _S32) + (lh & _M32) + (hl & _M32)  # < 3 * 2**32: no wrap
    lo = (ll & _M32) | (mid << _S32)
    hi = hh + (lh >> _S32) + (hl >> _S32) + (mid >> _S32)
    return hi, lo


def shr_u128(hi: U64Array, lo: U64Array, shift: int) -> U64Array:
    """Low 64 bits of the 128-bit value (hi, lo) shifted right by 0 <= shift <= 127."""
    if shift == 0:
        return lo.copy()
    if shift >= 64:
        return hi >> np.uint64(shift - 64)
    return (lo >> np.uint64(shift)) | (hi << np.uint64(64 - shift))


def ceil_div_u128_u64(hi: U64Array, lo: U64Array, d: Any) -> U64Array:
    """ceil((hi * 2**64 + lo) / d) mod 2**64 for uint64 arrays, d > 0 (restoring division)."""
    d = _u64(d)
    hi, lo = np.broadcast_arrays(_u64(hi), _u64(lo))
    r = hi % d
    q = np.zeros(np.broadcast(r, d).shape, dtype=np.uint64)
    r = r + q  # broadcast to the result shape
    for i in range(63, -1, -1):
        top = r >> np.uint64(63)
        r = (r << _ONE) | ((lo >> np.uint64(i)) & _ONE)
        ge = (top == _ONE) | (r >= d)
        r = np.where(ge, r - d, r)
        q = (q << _ONE) | ge.astype(np.uint64)
    result: U64Array = q + (r != 0).astype(np.uint64)
    return result


def tsc_to_perf_ns(tsc: Any, conv: PerfTimeConv) -> U64Array:
    """Vectorised :func:`tsalign.clock.perf.tsc_to_perf_ns`."""
    conv.require_zero()
    cyc = _u64(tsc)
    if conv.cap_user_time_short:
        cyc = np.uint64(conv.time_cycles) + ((cyc - np.uint64(conv.time_cycles)) & np.uint64(conv.time_mask))
    shift = np.uint64(conv.time_shift)
    mult = np.uint64(conv.time_mult)
    quot = cyc >> shift
    rem = cyc & np.uint64((1 << conv.time_shift) - 1)
    return np.uint64(conv.time_zero) + quot * mult + ((rem * mult) >> shift)


def perf_ns_to_tsc(ns: Any, conv: PerfTimeConv) -> U64Array:
    """Vectorised :func:`tsalign.clock.perf.perf_ns_to_tsc`."""
    conv.require_zero()
    t = _u64(ns) - np.uint64(conv.time_zero)
    mult = np.uint64(conv.time_mult)
    shift = np.uint64(conv.time_shift)
    quot = t // mult
    rem = t - quot * mult
    # rem < 2**32; rem << shift may need up to 95 bits: divide the 128-bit value exactly
    if conv.time_shift <= 32:
        frac = (rem << shift) // mult
    else:
        hi = rem >> np.uint64(64 - conv.time_shift)
        lo = rem << shift
        c = ceil_div_u128_u64(hi, lo, mult)
        # ceil -> floor: subtract 1 where the division was inexact (c * mult != value)
        phi, plo = mul_u64_u64(c, mult)
        frac = c - ((phi != hi) | (plo != lo)).astype(np.uint64)
    return (quot << shift) + frac


def host_to_guest_tsc_arrays(host: Any, offset: Any, ratio: Any, frac_bits: Any) -> U64Array:
    """host TSC -> guest TSC with per-element parameters (offset, ratio, frac_bits arrays)."""
    h = _u64(host)
    offset, ratio, frac = _u64(offset), _u64(ratio), _u64(frac_bits)
    hi, lo = mul_u64_u64(h, ratio)
    # per-element shift 0..63: split to avoid shifting a uint64 by 64
    s = frac
    low_part = lo >> s
    high_part = np.where(s == 0, np.uint64(0), (hi << (np.uint64(63) - s)) << _ONE)
    scaled = low_part | high_part
    unscaled = ratio == (_ONE << frac)
    result: U64Array = np.where(unscaled, h, scaled) + offset
    return result


CHUNK = 1 << 14  # elements per block: keeps the temporaries of the 128-bit path in L2 cache


def _scale_scalar_ratio(h: U64Array, ratio: int, frac_bits: int, out: U64Array) -> None:
    """out = low 64 bits of (h * ratio) >> frac_bits, h a 1-d block, ratio a Python int."""
    b_lo, b_hi = np.uint64(ratio & 0xFFFFFFFF), np.uint64(ratio >> 32)
    a_lo = h & _M32
    a_hi = h >> _S32
    ll = a_lo * b_lo
    lh = a_lo * b_hi
    hl = a_hi * b_lo
    a_hi *= b_hi  # hh
    mid = ll >> _S32
    mid += lh & _M32
    mid += hl & _M32
    ll &= _M32
    ll |= mid << _S32  # lo
    lh >>= _S32
    hl >>= _S32
    mid >>= _S32
    a_hi += lh
    a_hi += hl
    a_hi += mid  # hi
    if frac_bits == 0:
        out[...] = ll
    else:
        np.right_shift(ll, np.uint64(frac_bits), out=out)
        out |= a_hi << np.uint64(64 - frac_bits)


def _scale_float_corrected(h: U64Array, ratio: int, frac_bits: int) -> U64Array:
    """Exact low 64 bits of (h * ratio) >> frac_bits, fast, for 1 <= frac_bits <= 50, h < 2**63
    and results below 2**62 (the caller checks).

    The result X is known exactly modulo m = 2**(64 - frac_bits): it is the wrapping product
    ``h * ratio mod 2**64`` shifted right by frac_bits. A float64 estimate A has a relative error
    below 3 * 2**-53, so |A - X| < 2**11 <= m / 4; X is the unique value congruent to the exact
    residue within m / 2 of A.
    """
    half = np.uint64(1 << (63 - frac_bits))
    mask = np.uint64((1 << (64 - frac_bits)) - 1)
    t = h * np.uint64(ratio)
    t >>= np.uint64(frac_bits)  # exact X mod m
    f = h.view(np.int64).astype(np.float64)  # h < 2**63 (caller checks): int64 converts faster
    f *= ratio / float(1 << frac_bits)
    est = f.astype(np.int64).view(np.uint64)  # truncation == floor for these non-negative values
    t -= est
    t += half
    t &= mask
    est += t
    est -= half  # est + ((X - est + m/2) mod m) - m/2 == X
    return est


def host_to_guest_tsc(host: Any, p: TscParams) -> U64Array:
    """Vectorised :func:`tsalign.clock.kvm.host_to_guest_tsc`."""
    h = _u64(host)
    if not p.scaled:
        return h + np.uint64(p.offset)
    flat = np.ascontiguousarray(h).reshape(-1)
    out = np.empty_like(flat)
    top = int(flat.max()) if flat.size else 0
    fast = 1 <= p.frac_bits <= 50 and top < (1 << 63) and (top * p.ratio) >> p.frac_bits < (1 << 62)
    for i in range(0, flat.size, CHUNK):
        if fast:
            out[i:i + CHUNK] = _scale_float_corrected(flat[i:i + CHUNK], p.ratio, p.frac_bits)
        else:
            _scale_scalar_ratio(flat[i:i + CHUNK], p.ratio, p.frac_bits, out[i:i + CHUNK])
    out += np.uint64(p.offset)
    return out.reshape(h.shape)


def guest_to_host_tsc(guest: Any, p: TscParams) -> U64Array:
    """Vectorised :func:`tsalign.clock.kvm.guest_to_host_tsc`."""
    x = _u64(guest) - np.uint64(p.offset)
    if not p.scaled:
        return x
    f = p.frac_bits
    hi = (x >> np.uint64(64 - f)) if f else np.zeros_like(x)
    lo = x << np.uint64(f)
    return ceil_div_u128_u64(hi, lo, np.uint64(p.ratio))


def tsc_to_kvmclock(guest_tsc: Any, pv: Pvclock) -> U64Array:
    """Vectorised :func:`tsalign.clock.pvclock.tsc_to_kvmclock`."""
    delta = _u64(guest_tsc) - np.uint64(pv.tsc_timestamp)
    if pv.tsc_shift < 0:
        delta = delta >> np.uint64(-pv.tsc_shift)
    else:
        delta = delta << np.uint64(pv.tsc_shift)
    hi, lo = mul_u64_u64(delta, np.uint64(pv.tsc_to_system_mul))
    return np.uint64(pv.system_time) + shr_u128(hi, lo, 32)


def kvmclock_to_tsc(kvmclock_ns: Any, pv: Pvclock) -> U64Array:
    """Vectorised :func:`tsalign.clock.pvclock.kvmclock_to_tsc`."""
    d = _u64(kvmclock_ns) - np.uint64(pv.system_time)
    pre = ceil_div_u128_u64(d >> _S32, d << _S32, np.uint64(pv.tsc_to_system_mul))
    if pv.tsc_shift < 0:
        delta = pre << np.uint64(-pv.tsc_shift)
    else:
        s = np.uint64(pv.tsc_shift)
        delta = (pre >> s) + ((pre & ((_ONE << s) - _ONE)) != 0).astype(np.uint64)
    return np.uint64(pv.tsc_timestamp) + delta
