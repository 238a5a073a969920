"""The guest kernel command line, the way each distribution expects it changed.

- Debian/Ubuntu and SUSE: ``GRUB_CMDLINE_LINUX`` in /etc/default/grub, then ``update-grub`` (Debian)
  or ``grub2-mkconfig -o <grub.cfg>`` (SUSE). The new file is validated (``sh -n`` and read back
  through a shell) before it replaces the old one, and the old one is kept as a backup.
- RHEL/Fedora/Rocky/Alma/TencentOS/OpenCloudOS: ``grubby --update-kernel=ALL --args=...``.

The planning functions are pure (text in, text out); :func:`apply_default_grub` does the I/O.
Standard library only.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..errors import InvalidParameter, Unavailable
from .fs import Root

__all__ = [
    "DEFAULT_GRUB",
    "Method",
    "Plan",
    "apply_default_grub",
    "detect_method",
    "edit_default_grub",
    "grubby_args",
    "parse_os_release",
    "plan_cmdline",
]

DEFAULT_GRUB = "/etc/default/grub"
_VAR = "GRUB_CMDLINE_LINUX"
_LINE = re.compile(rf"^(\s*(?:export\s+)?{_VAR}=)(.*)$")


@dataclass(frozen=True)
class Method:
    """How a distribution regenerates its boot configuration."""

    name: str  # "debian" | "grubby" | "suse"
    distro: str
    update_cmd: tuple[str, ...]


def parse_os_release(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        k, sep, v = line.partition("=")
        if sep:
            try:
                out[k.strip()] = " ".join(shlex.split(v))
            except ValueError:
                out[k.strip()] = v.strip().strip('"')
    return out


def detect_method(root: Root) -> Method:
    """The boot-configuration method of the machine at ``root`` from /etc/os-release."""
    text = root.read("/etc/os-release") or root.read("/usr/lib/os-release")
    if text is None:
        raise Unavailable("no /etc/os-release: cannot tell the distribution (set tsalign_guest_method)")
    osr = parse_os_release(text)
    ids = [osr.get("ID", "")] + osr.get("ID_LIKE", "").split()
    distro = f"{osr.get('ID', '?')} {osr.get('VERSION_ID', '')}".strip()
    if any(i in ("debian", "ubuntu") for i in ids):
        return Method("debian", distro, ("update-grub",))
    if any(i in ("rhel", "fedora", "centos", "rocky", "almalinux", "tencentos", "opencloudos") for i in ids):
        return Method("grubby", distro, ("grubby",))
    if any(i in ("suse", "opensuse", "sles", "opensuse-leap", "opensuse-tumbleweed") for i in ids):
        cfg = "/boot/grub2/grub.cfg"
        return Method("suse", distro, ("grub2-mkconfig", "-o", cfg))
    raise Unavailable(f"unsupported distribution {distro!r} (ID={osr.get('ID')!r}, ID_LIKE={osr.get('ID_LIKE')!r}): "
                      "tsalign knows Debian/Ubuntu (update-grub), RHEL/Fedora/Rocky/TencentOS (grubby) and SUSE "
                      "(grub2-mkconfig); set the kernel parameters by hand")


def _key(param: str) -> str:
    return param.split("=", 1)[0]


def plan_cmdline(current: Sequence[str], add: Sequence[str], remove: Sequence[str] = ()) -> list[str]:
    """``current`` words with ``add`` present (a ``key=value`` replaces the same key) and ``remove``
    absent (by key); order kept, additions appended."""
    for p in list(add) + list(remove):
        if not p or any(c.isspace() or c in "\"'$`\\" for c in p):
            raise InvalidParameter("kernel parameter", p, "one word without quotes, spaces, $ or backslashes")
    out = [w for w in current if _key(w) not in {_key(r) for r in remove}]
    for p in add:
        keys = [i for i, w in enumerate(out) if _key(w) == _key(p)]
        if keys:
            out[keys[0]] = p
            for i in reversed(keys[1:]):
                del out[i]
        else:
            out.append(p)
    return out


@dataclass
class Plan:
    """What an edit of /etc/default/grub would do."""

    before_text: str
    after_text: str
    before: list[str]
    after: list[str]
    notes: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return self.before_text != self.after_text


def edit_default_grub(text: str, add: Sequence[str], remove: Sequence[str] = ()) -> Plan:
    """Plan the change of ``GRUB_CMDLINE_LINUX`` in the text of /etc/default/grub.

    The last assignment wins in a shell file, so that one is edited; without one, a line is
    appended. The value is rewritten double-quoted.
    """
    lines = text.splitlines(keepends=True)
    idx = None
    for i, line in enumerate(lines):
        if _LINE.match(line.rstrip("\n")):
            idx = i
    before: list[str] = []
    if idx is not None:
        m = _LINE.match(lines[idx].rstrip("\n"))
        assert m is not None
        try:
            value = shlex.split(m.group(2), comments=True)
        except ValueError as e:
            raise InvalidParameter(f"{_VAR} in {DEFAULT_GRUB}", m.group(2), f"a valid shell assignment ({e})") from None
        if any("$" in v for v in value):
            raise InvalidParameter(f"{_VAR} in {DEFAULT_GRUB}", m.group(2),
                                   "a literal value (it uses shell expansion; edit it by hand)")
        before = " ".join(value).split()
    after = plan_cmdline(before, add, remove)
    new_line = f'{_VAR}="{" ".join(after)}"\n'
    if idx is None:
        sep = "" if not text or text.endswith("\n") else "\n"
        new_text = text + sep + new_line
    elif after == before:
        new_text = text
    else:
        m = _LINE.match(lines[idx].rstrip("\n"))
        assert m is not None
        lines[idx] = m.group(1) + f'"{" ".join(after)}"\n'
        new_text = "".join(lines)
    return Plan(text, new_text, before, after)


def _shell_value(path: str) -> str:
    """GRUB_CMDLINE_LINUX as the shell sees it after sourcing ``path`` (validates the file)."""
    check = subprocess.run(["sh", "-n", path], capture_output=True, text=True)
    if check.returncode != 0:
        raise InvalidParameter(DEFAULT_GRUB, path, f"valid shell syntax: {check.stderr.strip()}")
    r = subprocess.run(["sh", "-c", f'. "$1" >/dev/null 2>&1; printf %s "${_VAR}"', "sh", path],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise InvalidParameter(DEFAULT_GRUB, path, f"a file the shell can source: {r.stderr.strip()}")
    return r.stdout


def apply_default_grub(plan: Plan, path: str = DEFAULT_GRUB, backup_suffix: str = ".tsalign.bak") -> str | None:
    """Write ``plan`` to ``path`` atomically after validating it; keep the old file as
    ``path + backup_suffix``. Returns the backup path (None when nothing changed)."""
    if not plan.changed:
        return None
    d = os.path.dirname(path) or "."
    st = os.stat(path) if os.path.exists(path) else None
    fd, tmp = tempfile.mkstemp(prefix=".grub.tsalign.", dir=d)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(plan.after_text)
        if st is not None:
            os.chmod(tmp, st.st_mode & 0o7777)
            try:
                os.chown(tmp, st.st_uid, st.st_gid)
            except PermissionError:
                pass
        got = _shell_value(tmp).split()
        if got != plan.after:
            raise InvalidParameter(DEFAULT_GRUB, path,
                                   f"a file that yields {_VAR}={' '.join(plan.after)!r} (the shell read {' '.join(got)!r})")
        backup = None
        if st is not None:
            backup = path + backup_suffix
            with open(path, "rb") as src, open(backup, "wb") as dst:
                dst.write(src.read())
        os.replace(tmp, path)
        return backup
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def grubby_args(info_text: str) -> dict[str, list[str]]:
    """``grubby --info=ALL`` output -> {kernel path: args words}."""
    out: dict[str, list[str]] = {}
    kernel = None
    for line in info_text.splitlines():
        k, _, v = line.partition("=")
        v = v.strip().strip('"')
        if k == "kernel":
            kernel = v
        elif k == "args" and kernel is not None:
            out[kernel] = v.split()
    return out
