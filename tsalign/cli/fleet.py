"""``tsalign fleet ingest|query|report``: capture runs and precheck results as one dataset, queried in-process."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .. import exitcodes
from . import emit

__all__ = ["register"]

DEFAULT_DATASET = "out/fleet"


def register(sub: Any) -> None:
    p = sub.add_parser("fleet", help="fleet dataset: ingest runs and prechecks, query them (DuckDB), report",
                       description="A Parquet dataset (Hive-style partitions node=/vm=/run=) of every capture run's "
                                   "verdict, per-vCPU evidence, offsets, IRQ latencies and vCPU preemptions, and of "
                                   "precheck results; SQL on it in-process (DuckDB).")
    fs = p.add_subparsers(dest="fleet_verb", metavar="ACTION")
    fs.required = True
    i = fs.add_parser("ingest", help="add runs and precheck results found under DIRs (re-ingesting changes nothing)")
    i.add_argument("dirs", nargs="+", metavar="DIR")
    q = fs.add_parser("query", help="run SQL on the views (verdicts, vcpus, offsets, latencies, preemptions, "
                                    "prechecks, untraceable, error_bounds, latency_per_node, preemption_per_node)")
    q.add_argument("sql")
    r = fs.add_parser("report", help="report.html (plots) and report.json of the ready views")
    r.add_argument("-o", "--out", required=True)
    for x in (i, q, r):
        x.add_argument("--dataset", default=DEFAULT_DATASET, help=f"dataset directory (default {DEFAULT_DATASET})")
        x.add_argument("--json", action="store_true")
    for x in (q, r):
        x.add_argument("--engine", choices=("duckdb", "spark"), default="duckdb",
                       help="duckdb: in-process (default); spark: Apache Spark (pyspark, Java)")
        x.add_argument("--spark-master", help="Spark master URL (default $TSALIGN_SPARK_MASTER or local[2]; a cluster's "
                                              "spark://HOST:7077 reads the dataset from a path its executors share)")
    i.set_defaults(handler=run_ingest)
    q.set_defaults(handler=run_query)
    r.set_defaults(handler=run_report)


def run_ingest(args: argparse.Namespace) -> int:
    from ..fleet.ingest import ingest

    rep = ingest(args.dataset, args.dirs)
    lines = [f"{len(rep.written)} written, {len(rep.unchanged)} unchanged, {len(rep.skipped)} skipped -> {args.dataset}"]
    lines += [f"  written {w['kind']} node={w['node']} run={w['run']}: {w['path']}" for w in rep.written]
    lines += [f"  skipped {s['path']}: {s['reason']}" for s in rep.skipped]
    lines += [f"  note: {n}" for n in rep.notes]
    emit(args, rep.to_dict() | {"dataset": args.dataset}, lines)
    return exitcodes.VERDICT_WARN if rep.skipped else exitcodes.OK


def run_query(args: argparse.Namespace) -> int:
    from ..fleet.query import query

    cols, rows = query(args.dataset, args.sql, args.engine, args.spark_master)
    if args.json:
        sys.stdout.write(json.dumps([dict(zip(cols, r)) for r in rows], indent=1, default=str) + "\n")
    else:
        sys.stdout.write("\t".join(cols) + "\n")
        for r in rows:
            sys.stdout.write("\t".join("" if v is None else str(v) for v in r) + "\n")
    return exitcodes.OK


def run_report(args: argparse.Namespace) -> int:
    from ..fleet.report import write_report

    doc = write_report(args.dataset, args.out, args.engine, args.spark_master)
    emit(args, {k: doc[k] for k in ("dataset", "alignments", "artifacts")},
         [f"{doc['alignments']} alignments; " + ", ".join(f"{k}: {v}" for k, v in doc["artifacts"].items())])
    return exitcodes.OK
