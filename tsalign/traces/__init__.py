"""Readers of trace files into event records (ftrace text for now)."""
