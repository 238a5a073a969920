"""tsalign: put KVM host and guest trace events on one time axis (guest TSC), and prove it."""

__version__ = "0.1.0"
__all__ = ["__version__"]
