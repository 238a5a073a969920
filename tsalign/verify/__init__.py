"""Verification: the evidence catalogue, offset-error intervals per vCPU, verdicts, the selftest."""
