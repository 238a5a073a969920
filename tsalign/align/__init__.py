"""Merge host and guest events on the guest TSC axis and verify the result."""
