"""Pure integer conversions between tsalign's time domains.

Domains (named the same everywhere):
  ``perf_ns``     perf / sched_clock nanoseconds of one kernel
  ``host_tsc``    host TSC cycles
  ``guest_tsc``   guest TSC cycles, the common axis
  ``kvmclock_ns`` guest kvmclock nanoseconds

The scalar functions here are standard-library only (they also run on managed nodes); their
numpy twins in :mod:`tsalign.clock.vec` are bit-identical on uint64 arrays.
"""

from .display import cycles_to_ns, ns_to_cycles
from .kvm import TscParams, guest_to_host_tsc, host_to_guest_tsc
from .perf import PerfTimeConv, perf_ns_to_tsc, tsc_to_perf_ns
from .pvclock import (
    Pvclock,
    kvmclock_to_sched_ns,
    kvmclock_to_tsc,
    sched_ns_to_kvmclock,
    tsc_to_kvmclock,
)

__all__ = [
    "PerfTimeConv",
    "Pvclock",
    "TscParams",
    "cycles_to_ns",
    "guest_to_host_tsc",
    "host_to_guest_tsc",
    "kvmclock_to_sched_ns",
    "kvmclock_to_tsc",
    "ns_to_cycles",
    "perf_ns_to_tsc",
    "sched_ns_to_kvmclock",
    "tsc_to_kvmclock",
    "tsc_to_perf_ns",
]
