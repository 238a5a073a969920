"""Outputs people look at: Perfetto traces, JSON reports."""
