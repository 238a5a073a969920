"""The fleet dataset on disk: Parquet tables partitioned Hive-style, one file per partition, schema versioned.

Layout (``DATASET`` is any directory)::

    DATASET/fleet.json                                   {"schema_version": N, "tables": {...}}
    DATASET/<table>/node=<node>/vm=<vm>/run=<run>/part-0.parquet   (verdicts, vcpus, offsets, latencies, preemptions,
                                                                    events)
    DATASET/prechecks/node=<node>/run=<run>/part-0.parquet        (and reachability)

Each file's metadata names the schema version and the digest of the input it was made from; a partition
whose file already holds that digest is left alone (ingesting the same run twice changes nothing). A run's
files are written to a staging directory inside DATASET first and moved into place only when all of them
were written (a failure leaves nothing behind). Partition values are names from nodes, VMs and files:
they are checked (``[A-Za-z0-9._-]``, at most 128 characters) before any path is made from them.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from typing import Any

from ..errors import InvalidParameter
from ..jsonfile import load_json, save_json
from ..outdir import make_dir

__all__ = ["PARTITIONS", "SCHEMA_VERSION", "TABLES", "check_name", "open_dataset", "partition_digest",
           "partition_path", "schemas", "write_partitions"]

#: bumped when a table's columns change meaning or type (a dataset of another version is refused)
SCHEMA_VERSION = 1
_NAME = re.compile(r"[A-Za-z0-9._-]{1,128}")


def schemas() -> dict[str, Any]:
    """table -> its pyarrow schema (data columns; the partition columns are in the paths)."""
    import pyarrow as pa

    u64, i64, i32, s, f = pa.uint64(), pa.int64(), pa.int32(), pa.string(), pa.float64()
    return {
        # one row per alignment
        "verdicts": pa.schema([("guest", s), ("verdict", s), ("reasons", s), ("kernel", s), ("tsc_khz", i64),
                               ("evidence_checked", i64), ("evidence_violated", i64), ("error_bound_cycles", i64),
                               ("error_bound_ns", i64), ("offset_changes", i64), ("offsets_distinct", i64),
                               ("host_events", i64), ("guest_events", i64), ("lost_events", i64), ("source", s)]),
        # every event of an alignment's timeline (aligned/timeline.parquet; tsalign.traces.export), on the guest axis
        "events": pa.schema([("guest_tsc", u64), ("side", s), ("host_tsc", u64), ("cpu", i32), ("pid", i32),
                             ("tgid", i32), ("vcpu", i32), ("comm", s), ("event", s), ("payload", s), ("track", s)]),
        # one row per vCPU of an alignment: its evidence and the offsets it ran with
        "vcpus": pa.schema([("vcpu", i32), ("width_cycles", i64), ("width_ns", i64), ("checked", i64),
                            ("violated", i64), ("offsets_in_use", i64), ("offset_first_signed", i64)]),
        # every offset segment of an alignment's timeline (aligned/offsets.jsonl; `offset` is an SQL keyword)
        "offsets": pa.schema([("vcpu", i32), ("start_host_tsc", u64), ("tsc_offset", u64), ("tsc_offset_signed", i64),
                              ("ratio", u64), ("frac_bits", i32), ("source", s)]),
        # host IRQ injection -> guest handler (tsalign analyze irq rows)
        "latencies": pa.schema([("vcpu", i32), ("line", s), ("injection", s), ("handler", s),
                                ("injected_guest_tsc", u64), ("latency_cycles", i64), ("latency_ns", i64)]),
        # vCPU threads off their CPU (tsalign analyze vcpu rows)
        "preemptions": pa.schema([("vcpu", i32), ("tid", i64), ("out_guest_tsc", u64), ("duration_cycles", i64),
                                  ("duration_ns", i64), ("host_state", s), ("preempted", pa.bool_()), ("guest_task", s)]),
        # one row per node of a precheck.yml run (its fleet-summary.json): checked, unreachable or failed, and why
        "reachability": pa.schema([("state", s), ("verdict", s), ("message", s)]),
        # one row per node and check (precheck.yml's per-node JSON)
        "prechecks": pa.schema([("role", s), ("kernel", s), ("node_verdict", s), ("check_id", s), ("status", s),
                                ("evidence", s), ("fix", s), ("tsc_khz", i64), ("elapsed_ms", f)]),
    }


#: table -> partition columns, outermost first
PARTITIONS: dict[str, tuple[str, ...]] = {t: ("node", "vm", "run") for t in
                                          ("verdicts", "vcpus", "offsets", "latencies", "preemptions", "events")}
PARTITIONS["prechecks"] = PARTITIONS["reachability"] = ("node", "run")
TABLES = tuple(PARTITIONS)


def check_name(what: str, value: str, where: str) -> str:
    """``value`` as a partition value, or an error naming it (``what``, from ``where``) and the rule."""
    if not isinstance(value, str) or not _NAME.fullmatch(value) or value in (".", ".."):
        raise InvalidParameter(what, value, f"a name of 1-128 letters, digits, '.', '_' or '-' (from {where})")
    return value


def open_dataset(path: str, create: bool = False) -> dict[str, Any]:
    """The dataset's ``fleet.json`` (created with ``create``); refuses another schema version or a non-dataset."""
    doc_path = os.path.join(path, "fleet.json")
    if not os.path.exists(doc_path):
        if not create:
            raise InvalidParameter("--dataset", path, "a fleet dataset (made by `tsalign fleet ingest --dataset DIR`)")
        make_dir(path, "--dataset")
        doc = {"schema_version": SCHEMA_VERSION, "tables": {t: list(p) for t, p in PARTITIONS.items()}}
        save_json(doc_path, doc, "--dataset")
        return doc
    doc = load_json(doc_path, "--dataset", "a fleet dataset's fleet.json")
    if not isinstance(doc, dict) or doc.get("schema_version") != SCHEMA_VERSION:
        raise InvalidParameter("--dataset", path, f"a fleet dataset of schema version {SCHEMA_VERSION} (this one: "
                               f"{doc.get('schema_version') if isinstance(doc, dict) else '?'}); ingest into a new one")
    return doc


def partition_path(dataset: str, table: str, keys: Mapping[str, str]) -> str:
    """The file of one partition (keys checked)."""
    parts = [f"{k}={check_name(k, keys[k], 'the partition keys')}" for k in PARTITIONS[table]]
    return os.path.join(dataset, table, *parts, "part-0.parquet")


def partition_digest(path: str) -> str | None:
    """The input digest a partition file was made from (None: no file, or not one of ours)."""
    import pyarrow.parquet as pq

    if not os.path.isfile(path):
        return None
    try:
        meta = pq.read_schema(path).metadata or {}
    except (OSError, ValueError):
        return None
    d = meta.get(b"tsalign.fleet.digest")
    return d.decode() if d else None


def write_partitions(dataset: str, keys: Mapping[str, str], tables: Mapping[str, Any], digest: str) -> list[str]:
    """Write each table's rows (dicts, or a pyarrow table) of one run (or one node's prechecks) as its partition;
    returns the files written.
    All files are made in a staging directory inside ``dataset`` and moved into place after the last one was
    written; the staging directory is removed on every path."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables_schema = schemas()
    stage = tempfile.mkdtemp(prefix=".staging-", dir=dataset)
    moves: list[tuple[str, str]] = []
    try:
        for table, rows in tables.items():
            schema = tables_schema[table].with_metadata({"tsalign.fleet.schema_version": str(SCHEMA_VERSION),
                                                   "tsalign.fleet.digest": digest})
            if isinstance(rows, pa.Table):
                t = rows.cast(tables_schema[table]).replace_schema_metadata(schema.metadata)
            else:
                t = pa.Table.from_pydict({f.name: [r.get(f.name) for r in rows] for f in schema}, schema=schema)
            tmp = os.path.join(stage, f"{table}.parquet")
            pq.write_table(t, tmp, compression="zstd")
            moves.append((tmp, partition_path(dataset, table, keys)))
        for tmp, dest in moves:
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            os.replace(tmp, dest)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return [d for _, d in moves]
