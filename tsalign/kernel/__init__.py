"""Kernel knowledge computed for the running (or a given) kernel: BTF, struct offsets, kprobes.

Standard library only (Python >= 3.9): it runs on managed hosts through Ansible.
"""
