"""Real test targets for the Ansible roles: sshd in network namespaces, a GRUB-booted VM, libvirtd."""
