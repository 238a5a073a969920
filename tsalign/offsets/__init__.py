"""Per-vCPU TSC offset timelines and the sources they are built from."""

from .timeline import Issue, OffsetSnapshot, OffsetTimeline, OffsetWrite, Segment

__all__ = ["Issue", "OffsetSnapshot", "OffsetTimeline", "OffsetWrite", "Segment"]
