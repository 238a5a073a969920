"""The fleet dataset: ingest capture runs and precheck results, query them (tsalign fleet)."""
