"""Record the files `tsalign precheck --root` reads from a real machine reached over SSH (used to
make the recorded trees under tests/fixtures/trees/; each tree's SOURCE says where it came from).

    python -m tests.infra.record_tree --vm-state STATE.json --out DIR --source "text"
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import tarfile

FILES = [
    "/proc/cpuinfo", "/proc/cmdline", "/proc/sys/kernel/osrelease", "/etc/os-release",
    "/sys/devices/system/clocksource/clocksource0/current_clocksource",
    "/sys/devices/system/clocksource/clocksource0/available_clocksource",
    "/sys/kernel/tracing/trace_clock", "/sys/kernel/tracing/kprobe_events",
]
SCRIPT = r"""
set -e
R=$(mktemp -d)
for f in {files}; do [ -r "$f" ] && mkdir -p "$R$(dirname $f)" && cat "$f" > "$R$f" || true; done
[ -L "$R/etc/os-release" ] && rm "$R/etc/os-release" && cat /etc/os-release > "$R/etc/os-release" || true
mkdir -p "$R/sys/kernel/tracing/instances" "$R/var/log"
for e in /sys/kernel/tracing/events/kvm/*/; do mkdir -p "$R$e"; done
dmesg > "$R/var/log/dmesg"
tar -C "$R" -cf - . ; rm -rf "$R"
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--vm-state", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--source", required=True)
    a = ap.parse_args()
    st = json.load(open(a.vm_state))  # noqa: SIM115
    cmd = ["ssh", "-i", st["key"], "-p", str(st["port"]), "-o", "StrictHostKeyChecking=no", "-o",
           "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "root@127.0.0.1",
           SCRIPT.format(files=" ".join(FILES))]
    data = subprocess.run(cmd, capture_output=True, check=True, timeout=120).stdout
    os.makedirs(a.out, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data)) as t:
        t.extractall(a.out)
    with open(os.path.join(a.out, "SOURCE"), "w", encoding="utf-8") as f:
        f.write(a.source.rstrip() + "\n")


if __name__ == "__main__":
    main()
