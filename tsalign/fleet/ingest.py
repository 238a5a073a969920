"""``tsalign fleet ingest``: capture runs and precheck results -> the fleet dataset (tsalign.fleet.dataset).

What is read, found anywhere under the directories given:

- a **run**: a directory holding ``aligned/verdict.json`` and ``host/manifest.json`` (capture.yml's run
  directory, ``tsalign selftest --out``, ``make lab``'s per-setup directory). Its identity comes from
  ``run.json`` (capture.yml writes it: node, vm, run) or else from the bundles: node = the host's hostname,
  vm = the VM's name, run = 12 hex digits of the sha1 of the host capture's boot id and start and stop TSC
  (or of its manifest): the same run copied elsewhere or aligned again is the same partition.
  Rows: its verdict, per-vCPU evidence, every offset segment (``aligned/offsets.jsonl``), and where the
  aligned timeline is kept (``aligned/timeline.parquet``) its events and the IRQ-latency and vCPU-preemption
  rows of ``tsalign analyze irq``/``vcpu`` computed from it;
- a **precheck result**: a ``*.json`` file with ``role``, ``verdict`` and a ``checks`` list (precheck.yml
  writes ``<node>.json``); node = the file's name, run = the run it names (precheck.yml's stamp) or else the
  first 12 hex digits of its sha1;
- a **fleet summary**: precheck.yml's ``fleet-summary.json`` (every node: checked, unreachable or failed, and
  why): one reachability row per node.

A run or result that cannot be read whole is reported with what is wrong and skipped; nothing of it is
written. One that is already in the dataset with the same digest is left as it is.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidParameter, TsalignError
from ..jsonfile import load_json
from .dataset import check_name, open_dataset, partition_digest, partition_path, write_partitions

__all__ = ["IngestReport", "discover", "ingest", "precheck_rows", "reachability_rows", "run_rows"]

#: largest JSON document read (a verdict or precheck result larger than this is not one of ours)
MAX_JSON = 64 << 20
#: a run's timeline analysed for latencies only up to this many events (a note says when one is larger)
MAX_ANALYSED_EVENTS = 20_000_000


@dataclass
class IngestReport:
    """What one ingest did: partitions written, left unchanged, inputs skipped (path, reason), notes."""

    written: list[dict[str, Any]] = field(default_factory=list)
    unchanged: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"written": self.written, "unchanged": self.unchanged, "skipped": self.skipped, "notes": self.notes}


class _Bad(Exception):
    """An input that is not whole: the message says what is wrong."""


def _json(path: str) -> Any:
    """The JSON document in ``path`` (tsalign.jsonfile.load_json: size-limited, any failure named) or _Bad."""
    try:
        return load_json(path, "fleet input", "a JSON document of tsalign", MAX_JSON)
    except InvalidParameter as e:
        raise _Bad(str(e)) from None


def _is_precheck(doc: Any) -> bool:
    return isinstance(doc, dict) and isinstance(doc.get("checks"), list) and "role" in doc and "verdict" in doc


def discover(paths: Sequence[str]) -> tuple[list[str], list[str]]:
    """(run directories, precheck result files) under ``paths`` (directories or files), sorted."""
    runs: set[str] = set()
    pre: set[str] = set()
    for p in paths:
        if not os.path.exists(p):
            raise InvalidParameter("DIR", p, "an existing directory (or precheck result file) to ingest")
        if os.path.isfile(p):
            pre.add(os.path.abspath(p))
            continue
        for root, dirs, files in os.walk(p):
            dirs.sort()
            if os.path.isfile(os.path.join(root, "aligned", "verdict.json")) and os.path.isdir(os.path.join(root, "host")):
                runs.add(os.path.abspath(root))
            if os.path.basename(root) in ("aligned", "host", "guest"):
                continue
            for name in files:
                if name.endswith(".json") and name not in ("fleet.json", "run.json", "timings.json"):
                    pre.add(os.path.abspath(os.path.join(root, name)))
    return sorted(runs), sorted(pre)


def _int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _sha1(path: str) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _identity(run: str, verdict: dict[str, Any], manifest: dict[str, Any]) -> dict[str, str]:
    ident = os.path.join(run, "run.json")
    if os.path.isfile(ident):
        doc = _json(ident)
        if not isinstance(doc, dict):
            raise _Bad(f"{ident}: not an object")
        try:
            return {k: check_name(k, str(doc.get(k, "")), ident) for k in ("node", "vm", "run")}
        except InvalidParameter as e:
            raise _Bad(str(e)) from None
    node = str((manifest.get("node") or {}).get("hostname") or "")
    vm = str((verdict.get("vm") or {}).get("name") or "vm")
    # the capture itself: its host boot and start/stop TSC (the same wherever the run is copied, whatever was
    # aligned from it since); a manifest without them: its bytes
    moment = [(manifest.get("node") or {}).get("boot_id"), manifest.get("started_host_tsc"), manifest.get("stopped_tsc")]
    run_id = (hashlib.sha1(json.dumps(moment).encode()).hexdigest() if all(moment)
              else _sha1(os.path.join(run, "host", "manifest.json")))[:12]
    try:
        return {"node": check_name("node", node, f"{run}/host/manifest.json node.hostname"),
                "vm": check_name("vm", vm, f"{run}/aligned/verdict.json vm.name"),
                "run": check_name("run", run_id, f"the directory name of {run}")}
    except InvalidParameter as e:
        raise _Bad(f"{e}; or write {ident} with node, vm and run") from None


def _offsets(path: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    if not os.path.isfile(path):
        return rows
    with open(path, encoding="utf-8", errors="strict") as f:
        for n, line in enumerate(f, 1):
            try:
                d = json.loads(line)
                vals = [int(d[k]) for k in ("vcpu", "start_host_tsc", "offset", "offset_signed", "ratio", "frac_bits")]
                source = str(d["source"])
            except (ValueError, KeyError, TypeError) as e:
                raise _Bad(f"{path}:{n}: not an offset segment ({e})") from None
            vcpu, start, offset, signed, ratio, frac = vals
            if not (0 <= start < 1 << 64 and 0 <= offset < 1 << 64 and 0 <= ratio < 1 << 64
                    and -(1 << 63) <= signed < 1 << 63 and 0 <= frac < 64 and 0 <= vcpu < 1 << 31):
                raise _Bad(f"{path}:{n}: a value out of range ({line.strip()[:200]})")
            row = {"vcpu": vcpu, "start_host_tsc": start, "tsc_offset": offset, "tsc_offset_signed": signed, "ratio": ratio,
                   "frac_bits": frac, "source": source}
            rows.append(row)
    return rows


def _analysed(run: str, manifest: dict[str, Any], verdict: dict[str, Any], khz: int,
              notes: list[str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]], Any]:
    """IRQ latencies, vCPU preemptions and the events table from the run's aligned timeline (none when it is not
    kept)."""
    path = os.path.join(run, "aligned", "timeline.parquet")
    if not os.path.isfile(path):
        return [], [], None
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from ..analyze.irq import READS as irq_reads
    from ..analyze.irq import analyze_irq
    from ..analyze.vcpu import READS as vcpu_reads
    from ..analyze.vcpu import analyze_vcpu
    from .dataset import schemas

    try:
        table = pq.read_table(path)
        table = table.select(schemas()["events"].names).cast(schemas()["events"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise _Bad(f"{path}: not a readable Parquet timeline of tsalign align ({e})") from None
    if table.num_rows > MAX_ANALYSED_EVENTS:
        notes.append(f"{path}: {table.num_rows} events, more than {MAX_ANALYSED_EVENTS}: latencies not computed")
        return [], [], table
    vm = verdict.get("vm") or {}
    tids: dict[int, int] = {}
    for v in manifest.get("vm") or []:
        if isinstance(v, dict) and v.get("pid") == vm.get("pid") and v.get("name") == vm.get("name"):
            tids = {int(c["tid"]): int(c["id"]) for c in v.get("vcpus") or [] if _int(c.get("tid")) and _int(c.get("id")) is not None}
    irq = analyze_irq(_rows_read(table, irq_reads), khz)
    lat = [{"vcpu": r["vcpu"], "line": r["line"], "injection": r["injection"], "handler": r["handler"],
            "injected_guest_tsc": r["injected_guest_tsc"], "latency_cycles": r["latency_cycles"],
            "latency_ns": r["latency_ns"]} for r in irq.rows]
    pre: list[dict[str, Any]] = []
    if tids:
        guest = table.filter(pc.not_equal(table["side"], "host"))["guest_tsc"]
        span = pc.min_max(guest).as_py() if len(guest) else None  # the guest capture's, from all its events
        for r in analyze_vcpu(_rows_read(table, vcpu_reads), tids, khz,
                              guest_span=(span["min"], span["max"]) if span else None).rows:
            pre.append({k: r.get(k) for k in ("vcpu", "tid", "out_guest_tsc", "duration_cycles", "duration_ns",
                                              "host_state", "preempted", "guest_task")})
    return lat, pre, table


def _rows_read(table: Any, reads: dict[str, frozenset[str]]) -> list[dict[str, Any]]:
    """The rows of an aligned Parquet timeline that an analysis reads (``reads``: event names without their system,
    per side) as the dicts of ``tsalign align`` (guest rows without host_tsc and vcpu)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    bare = pc.replace_substring_regex(pc.cast(table["event"], pa.string()), r"^.*:", "")
    host = pc.equal(table["side"], "host")
    want = pc.if_else(host, pc.is_in(bare, pa.array(sorted(reads["host"]), pa.string())),
                      pc.is_in(bare, pa.array(sorted(reads["guest"]), pa.string())))
    rows: list[dict[str, Any]] = table.filter(pc.fill_null(want, False)).to_pylist()
    for ev in rows:
        if ev.get("side") != "host":
            ev.pop("host_tsc", None)
            ev.pop("vcpu", None)
    return rows


def run_rows(run: str, notes: list[str]) -> tuple[dict[str, str], dict[str, Any]]:
    """(partition keys, rows per table: dicts, or a pyarrow table for ``events``) of one run directory; raises
    _Bad naming what is not whole."""
    verdict = _json(os.path.join(run, "aligned", "verdict.json"))
    manifest = _json(os.path.join(run, "host", "manifest.json"))
    if not isinstance(verdict, dict) or verdict.get("verdict") not in ("pass", "warn", "unverified", "fail"):
        raise _Bad(f"{run}/aligned/verdict.json: not a tsalign verdict")
    if not isinstance(manifest, dict) or manifest.get("role") != "host":
        raise _Bad(f"{run}/host/manifest.json: not a host bundle's manifest")
    keys = _identity(run, verdict, manifest)
    node = manifest.get("node") or {}
    ev = verdict.get("evidence") or {}
    per = [d for d in ev.get("per_vcpu") or [] if isinstance(d, dict)]
    widths = [w for d in per if (w := _int(d.get("width_cycles"))) is not None]
    widths_ns = [w for d in per if (w := _int(d.get("width_ns"))) is not None]
    offs = verdict.get("offsets") or {}
    events = verdict.get("events") or {}
    brackets = verdict.get("brackets") or {}
    lost = events.get("lost_in_ring_buffers") or {}
    guest = _json(os.path.join(run, "guest", "manifest.json")) if os.path.isfile(os.path.join(run, "guest", "manifest.json")) else {}
    khz = _int(verdict.get("tsc_khz")) or _int(node.get("tsc_khz")) or 0
    verdicts = [{"guest": str(((guest or {}).get("node") or {}).get("hostname") or ""), "verdict": verdict["verdict"],
                 "reasons": "\n".join(str(r) for r in verdict.get("reasons") or []), "kernel": str(node.get("kernel") or ""),
                 "tsc_khz": khz or None, "evidence_checked": _int(brackets.get("checked")),
                 "evidence_violated": _int(brackets.get("violated")),
                 "error_bound_cycles": max(widths) if widths else None,
                 "error_bound_ns": max(widths_ns) if widths_ns else None,
                 "offset_changes": _int(offs.get("changes_seen")), "offsets_distinct": _int(offs.get("distinct_values")),
                 "host_events": _int(events.get("host")), "guest_events": _int(events.get("guest")),
                 "lost_events": sum(v for v in lost.values() if _int(v)) if isinstance(lost, dict) else None,
                 "source": run}]
    offsets = _offsets(os.path.join(run, "aligned", "offsets.jsonl"))
    first: dict[int, int] = {}
    for o in offsets:
        first.setdefault(o["vcpu"], o["tsc_offset_signed"])
    vcpus = []
    for d in per:
        vc = _int(d.get("vcpu"))
        vcpus.append({"vcpu": vc, "width_cycles": _int(d.get("width_cycles")), "width_ns": _int(d.get("width_ns")),
                      "checked": _int(d.get("checked")), "violated": _int(d.get("violated")),
                      "offsets_in_use": _int((d.get("offset_in_use") or {}).get("distinct")),
                      "offset_first_signed": None if vc is None else first.get(vc)})
    lat, pre, events = _analysed(run, manifest, verdict, khz, notes)
    tables: dict[str, Any] = {"verdicts": verdicts, "vcpus": vcpus, "offsets": offsets, "latencies": lat,
                              "preemptions": pre}
    if events is not None:
        tables["events"] = events
    return keys, tables


def _run_of(doc: dict[str, Any], path: str) -> str:
    """The run a precheck.yml file names (its stamp), else the first 12 hex digits of the file's sha1."""
    return str(doc["run"]) if isinstance(doc.get("run"), str) else _sha1(path)[:12]


def reachability_rows(path: str, doc: Any) -> list[tuple[dict[str, str], list[dict[str, Any]]]] | None:
    """Per node of a fleet summary (precheck.yml's fleet-summary.json): (keys, [row]); None when ``doc`` is not one."""
    if not (isinstance(doc, dict) and isinstance(doc.get("nodes"), dict)
            and all(isinstance(v, dict) and "state" in v for v in doc["nodes"].values())):
        return None
    out = []
    run = _run_of(doc, path)
    for node, v in sorted(doc["nodes"].items()):
        if v["state"] not in ("checked", "unreachable", "failed"):
            raise _Bad(f"{path}: node {node}: state {v['state']!r} is none of checked, unreachable, failed")
        try:
            keys = {"node": check_name("node", node, path), "run": check_name("run", run, path)}
        except InvalidParameter as e:
            raise _Bad(str(e)) from None
        out.append((keys, [{"state": v["state"], "verdict": v.get("verdict"), "message": str(v.get("message") or "")}]))
    return out


def precheck_rows(path: str, doc: Any) -> tuple[dict[str, str], list[dict[str, Any]]] | None:
    """(keys, rows) of a precheck result file; None when ``doc`` (the file's JSON) is not a precheck result."""
    if not _is_precheck(doc):
        return None
    node = os.path.basename(path)[:-len(".json")]
    try:
        keys = {"node": check_name("node", node, f"the file name {path}"),
                "run": check_name("run", _run_of(doc, path), path)}
    except InvalidParameter as e:
        raise _Bad(str(e)) from None
    rows = []
    for c in doc["checks"]:
        if not isinstance(c, dict) or not isinstance(c.get("id"), str) or not isinstance(c.get("status"), str):
            raise _Bad(f"{path}: a check without id and status ({str(c)[:80]})")
        rows.append({"role": str(doc["role"]), "kernel": str(doc.get("kernel") or ""), "node_verdict": str(doc["verdict"]),
                     "check_id": c["id"], "status": c["status"], "evidence": str(c.get("evidence") or ""),
                     "fix": str(c.get("fix") or ""), "tsc_khz": _int(doc.get("tsc_khz")),
                     "elapsed_ms": float(doc["elapsed_ms"]) if isinstance(doc.get("elapsed_ms"), (int, float)) else None})
    return keys, rows


def _digest(base: str, names: Sequence[str]) -> str:
    """sha1 over the files ``names`` (relative to ``base``) that exist: their names and contents, not where
    ``base`` is (the same run copied elsewhere has the same digest)."""
    h = hashlib.sha1()
    for n in names:
        p = os.path.join(base, n)
        if os.path.isfile(p):
            h.update(n.encode() + b"\0" + _sha1(p).encode())
    return h.hexdigest()


def _items(runs: Sequence[str], pre: Sequence[str]) -> Iterator[tuple[str, str]]:
    yield from (("run", r) for r in runs)
    yield from (("precheck", p) for p in pre)


def ingest(dataset: str, paths: Sequence[str]) -> IngestReport:
    """Ingest every run and precheck result under ``paths`` into ``dataset`` (created when missing)."""
    open_dataset(dataset, create=True)
    runs, pre = discover(paths)
    ds = os.path.abspath(dataset)
    runs = [r for r in runs if not r.startswith(ds + os.sep)]
    rep = IngestReport()
    for kind, path in _items(runs, pre):
        try:
            if kind == "run":
                keys, tables = run_rows(path, rep.notes)
                digest = _digest(path, ["run.json", "aligned/verdict.json", "aligned/offsets.jsonl",
                                        "aligned/timeline.parquet", "host/manifest.json", "guest/manifest.json"])
                parts = [(keys, tables)]
            else:
                doc = _json(path)
                digest = _digest(os.path.dirname(path), [os.path.basename(path)])
                one = precheck_rows(path, doc)
                nodes = reachability_rows(path, doc) if one is None else None
                if one is None and nodes is None:
                    continue  # JSON, neither a precheck result nor a fleet summary: not an input
                kind = "precheck" if one is not None else "fleet summary"
                parts = [(one[0], {"prechecks": one[1]})] if one is not None else [
                    (k, {"reachability": rows}) for k, rows in nodes or []]
        except (_Bad, TsalignError) as e:
            rep.skipped.append({"path": path, "reason": str(e)})
            continue
        for keys, tables in parts:
            item = {"kind": kind, "path": path, **keys}
            if all(partition_digest(partition_path(dataset, t, keys)) == digest for t in tables):
                rep.unchanged.append(item)
                continue
            write_partitions(dataset, keys, tables, digest)
            rep.written.append(item | {"rows": {t: len(r) if isinstance(r, list) else r.num_rows
                                                for t, r in tables.items()}})
    return rep
