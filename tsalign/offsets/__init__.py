"""Per-vCPU TSC offset timelines and the sources they are built from."""

from .pvclock import PvclockTimeline, PvclockUpdate, parse_pvclock_update
from .timeline import Issue, OffsetSnapshot, OffsetTimeline, OffsetWrite, Segment

__all__ = ["Issue", "OffsetSnapshot", "OffsetTimeline", "OffsetWrite", "PvclockTimeline", "PvclockUpdate", "Segment",
           "parse_pvclock_update"]
