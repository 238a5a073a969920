"""Latency analyses on an aligned timeline (host and guest events on the guest TSC axis)."""
