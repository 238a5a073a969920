"""A fleet's per-kernel-build offset table, computed once per build on the controller.

Input: the precheck reports ``precheck.yml`` writes (one ``NODE.json`` per node). Each KVM host's
``kernel_build`` check names its build (the GNU build id of the file holding ``struct kvm_vcpu``: the
kvm module, or vmlinux where KVM is built in), the offsets the node computed itself (BTF, split BTF or
installed debug info) and the kprobe functions it can trace.

Per build, the offsets of ``kvm_vcpu.arch.tsc_offset`` and ``vcpu_id`` come from:

1. the nodes themselves — all nodes of one build must agree (a disagreement is reported, never
   averaged);
2. else a debug file with that build id under the controller's ``--debuginfo-dir`` (e.g. ``kvm.ko`` from
   Debian's ``linux-image-REL-dbg``, fetched by ``scripts/fetch-kvm-debuginfo.sh``), read by the DWARF route
   and cached by build id; where the nodes answered too, the debug file checks them;
3. else the build is unresolved, and the table names the package that would resolve it.

Each host then gets its kprobe definition (the first traceable function in
:data:`tsalign.kernel.kprobe.PREFERRED` order), which the host role registers
(``tsalign_host_kernel_table``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from typing import Any

from ..errors import InvalidParameter, TsalignError
from ..jsonfile import load_json
from . import kprobe

__all__ = ["MEMBERS", "find_debug_files", "kernel_table", "load_reports"]

MEMBERS = ("arch.tsc_offset", "vcpu_id")
MAX_REPORT_BYTES = 16 << 20
#: the debug files looked at under a --debuginfo-dir (a module's debug file or vmlinux)
_DEBUG_NAMES = ("kvm.ko", "kvm.ko.debug", "vmlinux")


def load_reports(paths: Sequence[str]) -> dict[str, dict[str, Any]]:
    """node name -> precheck report, from report files (``NODE.json``) or directories of them."""
    files: list[str] = []
    for p in paths:
        if os.path.isdir(p):
            # precheck.yml writes these beside the reports: the kernel table and the fleet summary
            files += sorted(os.path.join(p, n) for n in os.listdir(p)
                            if n.endswith(".json") and n not in ("kernels.json", "fleet-summary.json"))
        elif os.path.isfile(p):
            files.append(p)
        else:
            raise InvalidParameter("precheck report", p, "a NODE.json written by precheck.yml, or a directory of them")
    out: dict[str, dict[str, Any]] = {}
    for f in files:
        doc = load_json(f, "precheck report", "a precheck report (precheck.yml's NODE.json)", MAX_REPORT_BYTES)
        if not isinstance(doc, dict) or not isinstance(doc.get("checks"), list) or "role" not in doc:
            raise InvalidParameter("precheck report", f, "a tsalign precheck report (role, checks)")
        out[os.path.basename(f)[:-len(".json")] if f.endswith(".json") else os.path.basename(f)] = doc
    if not out:
        raise InvalidParameter("precheck report", ", ".join(paths), "at least one NODE.json (run precheck.yml)")
    return out


def find_debug_files(dirs: Iterable[str]) -> dict[str, str]:
    """build id -> path of the debug files under ``dirs`` (``.build-id/xx/rest.debug`` links and files named
    like kvm.ko or vmlinux; each file's own build id is read, never trusted from its name)."""
    from .dwarf import build_id

    found: dict[str, str] = {}
    for d in dirs:
        if not os.path.isdir(d):
            raise InvalidParameter("--debuginfo-dir", d, "an existing directory of kernel debug files")
        for base, _dirs, names in os.walk(d):
            for n in sorted(names):
                if n in _DEBUG_NAMES or n.startswith("vmlinux-") or n.endswith(".debug"):
                    path = os.path.join(base, n)
                    try:
                        bid = build_id(path)
                    except TsalignError:
                        continue  # not an ELF file with a build id
                    if bid:
                        found.setdefault(bid, path)
    return found


def _value(report: dict[str, Any], cid: str) -> Any:
    for c in report.get("checks", []):
        if isinstance(c, dict) and c.get("id") == cid:
            return c.get("value")
    return None


def _well_formed(v: dict[str, Any]) -> bool:
    """The fields of a kernel_build value the table uses, type-checked (reports are files: they may be edited)."""
    bid = v.get("build_id")
    return (isinstance(v.get("release"), str) and len(v["release"]) < 256
            and (bid is None or (isinstance(bid, str) and 8 <= len(bid) <= 128
                                 and all(c in "0123456789abcdef" for c in bid)))
            and v.get("kvm_file") in ("kvm.ko", "vmlinux", None)
            and isinstance(v.get("traceable") or [], list) and all(isinstance(f, str) for f in v.get("traceable") or [])
            and isinstance(v.get("debug_package") or "", str))


def _controller_offsets(path: str, cache_dir: str | None) -> dict[str, Any]:
    from .routes import member_offsets

    doc = member_offsets("kvm_vcpu", list(MEMBERS), debuginfo=path, cache_dir=cache_dir)
    return {"offsets": {m["member"]: m["offset"] for m in doc["members"]}, "source": path}


def kernel_table(reports: dict[str, dict[str, Any]], debuginfo_dirs: Sequence[str] = (),
                 cache_dir: str | None = None) -> dict[str, Any]:
    """The table: ``builds`` (one row per build: release, build id, nodes, offsets, route, status) and
    ``nodes`` (each KVM host's build, kprobe definition or why it has none)."""
    builds: dict[str, dict[str, Any]] = {}
    nodes: dict[str, dict[str, Any]] = {}
    for name, rep in sorted(reports.items()):
        if rep.get("role") != "host":
            continue
        v = _value(rep, "kernel_build")
        if isinstance(v, dict) and not _well_formed(v):
            raise InvalidParameter("precheck report", name, "a kernel_build value with a release string, a hex build id "
                                   "(or null), a kvm_file, and traceable function names (as tsalign precheck writes it)")
        if not isinstance(v, dict) or not v.get("release"):
            nodes[name] = {"build": None, "kprobe": None, "status": "unknown",
                           "reason": "its precheck report has no kernel_build check (re-run precheck.yml with this "
                                     "tsalign)"}
            continue
        key = v.get("build_id") or f"release {v['release']}"
        b = builds.setdefault(key, {"build_id": v.get("build_id"), "release": v["release"],
                                    "kvm_file": v.get("kvm_file"), "nodes": [], "node_offsets": {},
                                    "debug_package": v.get("debug_package")})
        b["nodes"].append(name)
        off = v.get("offsets")
        if isinstance(off, dict) and all(isinstance(off.get(m), int) for m in MEMBERS):
            b["node_offsets"][name] = {"offsets": {m: off[m] for m in MEMBERS}, "route": off.get("route")}
        nodes[name] = {"build": key, "traceable": [f for f in v.get("traceable") or [] if f in kprobe.PREFERRED]}
    debug: dict[str, str] | None = None
    for b in builds.values():
        answers = {json.dumps(a["offsets"], sort_keys=True) for a in b["node_offsets"].values()}
        dbg = None
        if b["build_id"]:
            if debug is None:
                debug = find_debug_files(debuginfo_dirs) if debuginfo_dirs else {}
            path = debug.get(b["build_id"])
            dbg = _controller_offsets(path, cache_dir) if path else None
        if len(answers) > 1:
            b.update(status="inconsistent", offsets=None, route=None,
                     reason="nodes of one build computed different offsets: " + "; ".join(
                         f"{n}: {a['offsets']} ({a['route']})" for n, a in sorted(b["node_offsets"].items())))
        elif answers:
            mine = json.loads(next(iter(answers)))
            routes = sorted({str(a["route"]) for a in b["node_offsets"].values()})
            b.update(status="resolved", offsets=mine, route="node " + "/".join(routes),
                     source=f"computed on {len(b['node_offsets'])} of {len(b['nodes'])} node(s)")
            if dbg is not None:
                b["checked_against"] = {"source": dbg["source"], "agrees": dbg["offsets"] == mine}
                if dbg["offsets"] != mine:
                    b.update(status="inconsistent", reason=f"the nodes' offsets {mine} differ from the debug file "
                                                           f"{dbg['source']}'s {dbg['offsets']} of the same build id")
        elif dbg is not None:
            b.update(status="resolved", offsets=dbg["offsets"], route="dwarf (controller)", source=dbg["source"])
        else:
            where = f"with build id {b['build_id']}" if b["build_id"] else "(no build id: the kernel has no notes)"
            b.update(status="unresolved", offsets=None, route=None,
                     reason=f"no node has BTF or debug info and no debug file {where} is under --debuginfo-dir",
                     fix=f"fetch {b['debug_package']} and pass the directory holding its {b['kvm_file']} debug file "
                         "with --debuginfo-dir (or install it on the nodes)")
    for name, n in nodes.items():
        if n.get("status") == "unknown":
            continue
        b = builds[n["build"]]
        if b["status"] != "resolved":
            n.update(kprobe=None, status=b["status"], reason=b["reason"])
            continue
        if not n["traceable"]:
            n.update(kprobe=None, status="no_function",
                     reason=f"none of {', '.join(kprobe.PREFERRED)} is traceable there (available_filter_functions/"
                            "kallsyms); the debugfs route remains")
            continue
        fn = n["traceable"][0]
        n.update(status="ok", function=fn, kprobe=kprobe.render(fn, b["offsets"]["arch.tsc_offset"],
                                                                b["offsets"]["vcpu_id"]),
                 why=kprobe.why(fn))
    for b in builds.values():
        b.pop("node_offsets")
    return {"builds": sorted(builds.values(), key=lambda b: (b["release"], b["build_id"] or "")),
            "nodes": nodes,
            "summary": {"builds": len(builds), "hosts": len(nodes),
                        "with_kprobe": sum(1 for n in nodes.values() if n.get("status") == "ok"),
                        "unresolved": sorted(n for n, x in nodes.items() if x.get("status") != "ok")}}
