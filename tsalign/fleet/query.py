"""Fleet questions on the dataset: one view per table and ready-made views, by name in SQL, on DuckDB
in-process (default) or on Apache Spark (``engine="spark"``: a local Spark, or a cluster's master URL).

Tables (tsalign.fleet.dataset), each with its partition columns ``node``, ``vm``, ``run`` (prechecks and
reachability: ``node``, ``run``; partition values are read as strings): ``verdicts``, ``vcpus``, ``offsets``,
``latencies``, ``preemptions``, ``prechecks``, ``reachability``. Ready views (SQL both engines run alike):

- ``untraceable``: one row per failed check of a failed precheck result (node, run, role, kernel, check, fix),
  and per node a fleet precheck could not check (check ``unreachable`` or ``failed``, fix: why);
- ``error_bounds``: per host kernel, alignments, passed, failed, error bound in ns (median, max);
- ``latency_per_node``: per host node, IRQ injections measured and their latency in ns (median, p99, max);
- ``preemption_per_node``: per host node, vCPU preemptions and their total and longest time in ns.

Percentiles are nearest-rank: the value of rank ceil(q * n) among the n non-null values in order (a value
that occurred; the same on both engines, computed with window functions rather than either's own quantile).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..errors import InvalidParameter, Unavailable
from .dataset import PARTITIONS, TABLES, open_dataset, schemas

__all__ = ["ENGINES", "READY_VIEWS", "engine", "query"]

ENGINES = ("duckdb", "spark")
ENGINE_NAMES = {"duckdb": "DuckDB", "spark": "Spark"}


def _ranked(table: str, key: str, value: str, where: str = "") -> str:
    """``table`` with, per ``key``, each row's rank by ``value`` (nulls last) and the count of non-null values."""
    return (f"SELECT *, row_number() OVER (PARTITION BY {key} ORDER BY {value} ASC NULLS LAST) AS _rank, "
            f"count({value}) OVER (PARTITION BY {key}) AS _n FROM {table} {where}")


def _pct(value: str, q: str) -> str:
    return f"max(CASE WHEN _rank = ceil(_n * {q}) THEN {value} END)"


READY_VIEWS: dict[str, str] = {
    "untraceable": """
        SELECT node, run, role, kernel, check_id, fix FROM prechecks WHERE node_verdict = 'fail' AND status = 'fail'
        UNION ALL
        SELECT node, run, CAST(NULL AS VARCHAR(64)) AS role, CAST(NULL AS VARCHAR(64)) AS kernel, state AS check_id,
               message AS fix
        FROM reachability WHERE state <> 'checked'""",
    "error_bounds": f"""
        SELECT kernel, count(*) AS alignments, count(CASE WHEN verdict = 'pass' THEN 1 END) AS passed,
               count(CASE WHEN verdict = 'fail' THEN 1 END) AS failed,
               {_pct('error_bound_ns', '0.5')} AS error_bound_ns_median, max(error_bound_ns) AS error_bound_ns_max
        FROM ({_ranked('verdicts', 'kernel', 'error_bound_ns')}) r GROUP BY kernel""",
    "latency_per_node": f"""
        SELECT node, count(*) AS injections, {_pct('latency_ns', '0.5')} AS latency_ns_median,
               {_pct('latency_ns', '0.99')} AS latency_ns_p99, max(latency_ns) AS latency_ns_max
        FROM ({_ranked('latencies', 'node', 'latency_ns')}) r GROUP BY node""",
    "preemption_per_node": """
        SELECT node, count(*) AS preemptions, sum(duration_ns) AS preempted_ns_total, max(duration_ns) AS preempted_ns_max
        FROM preemptions WHERE preempted GROUP BY node""",
}


def _has_files(dataset: str, table: str) -> bool:
    return any("part-0.parquet" in names for _, _, names in os.walk(os.path.join(dataset, table)))


class _DuckDB:
    """In-process DuckDB: each table a view over its partition files."""

    def __init__(self, dataset: str) -> None:
        import duckdb

        self.error: type[Exception] = duckdb.Error
        self.con = duckdb.connect(":memory:")
        for t in TABLES:
            if _has_files(dataset, t):
                path = os.path.join(os.path.abspath(dataset), t, *("*" for _ in PARTITIONS[t]), "part-0.parquet")
                self.con.execute(f"CREATE VIEW {t} AS SELECT * FROM read_parquet('{path.replace(chr(39), chr(39) * 2)}', "
                                 "hive_partitioning = true, hive_types_autocast = false)")
            else:  # no partition yet: an empty view with the table's columns, so every question can be asked
                self.con.register(f"_{t}_empty", _empty(t))
                self.con.execute(f"CREATE VIEW {t} AS SELECT * FROM _{t}_empty")
        for name, sql in READY_VIEWS.items():
            self.con.execute(f"CREATE VIEW {name} AS {sql}")

    def run(self, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        cur = self.con.execute(sql)
        return [d[0] for d in cur.description or []], [tuple(_plain(v) for v in r) for r in cur.fetchall()]

    def close(self) -> None:
        self.con.close()


class _Spark:
    """Apache Spark (pyspark): ``master`` local[N] (default local[2]) or a cluster's URL; each table read with
    Hive partition discovery (partition values as strings, as DuckDB reads them)."""

    def __init__(self, dataset: str, master: str | None) -> None:
        try:
            from pyspark.errors import PySparkException
            from pyspark.sql import SparkSession
        except ImportError:
            raise Unavailable("pyspark", "pip install 'pyspark>=3.5' (and a Java runtime: Debian openjdk-17-jre-headless)"
                              ) from None
        self.error: type[Exception] = PySparkException
        self.spark = (SparkSession.builder.master(master or os.environ.get("TSALIGN_SPARK_MASTER", "local[2]"))
                      .appName("tsalign-fleet").config("spark.ui.enabled", "false")
                      .config("spark.ui.showConsoleProgress", "false")
                      .config("spark.sql.sources.partitionColumnTypeInference.enabled", "false")
                      .config("spark.sql.session.timeZone", "UTC").getOrCreate())
        self.spark.sparkContext.setLogLevel("ERROR")
        for t in TABLES:
            d = os.path.join(os.path.abspath(dataset), t)
            df = (self.spark.read.option("basePath", d).parquet(d) if _has_files(dataset, t)
                  else self.spark.createDataFrame([], _spark_schema(t)))
            df.createOrReplaceTempView(t)
        for name, sql in READY_VIEWS.items():
            self.spark.sql(f"CREATE OR REPLACE TEMP VIEW {name} AS {sql}")

    def run(self, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        df = self.spark.sql(sql)
        return list(df.columns), [tuple(_plain(v) for v in r) for r in df.collect()]

    def close(self) -> None:
        self.spark.stop()


def _plain(v: Any) -> Any:
    """A whole Decimal (Spark reads uint64 as DECIMAL(20,0); DuckDB's ceil gives DECIMAL) as an int."""
    from decimal import Decimal

    return int(v) if isinstance(v, Decimal) and v == v.to_integral_value() else v


def _empty(table: str) -> Any:
    import pyarrow as pa

    t = schemas()[table].empty_table()
    for k in PARTITIONS[table]:
        t = t.append_column(k, pa.array([], pa.string()))
    return t


def _spark_schema(table: str) -> Any:
    from pyspark.sql import types as T

    kinds = {"uint64": T.DecimalType(20, 0), "int64": T.LongType(), "int32": T.IntegerType(), "string": T.StringType(),
             "bool": T.BooleanType(), "double": T.DoubleType()}
    fields = [T.StructField(f.name, kinds[str(f.type)]) for f in schemas()[table]]
    return T.StructType(fields + [T.StructField(k, T.StringType()) for k in PARTITIONS[table]])


@contextmanager
def engine(dataset: str, name: str = "duckdb", master: str | None = None) -> Iterator[Any]:
    """The dataset's tables and ready views on engine ``name`` (closed on exit)."""
    open_dataset(dataset)
    if name not in ENGINES:
        raise InvalidParameter("--engine", name, f"one of {', '.join(ENGINES)}")
    e: Any = _DuckDB(dataset) if name == "duckdb" else _Spark(dataset, master)
    try:
        yield e
    finally:
        e.close()


def query(dataset: str, sql: str, name: str = "duckdb", master: str | None = None) -> tuple[list[str], list[tuple[Any, ...]]]:
    """(column names, rows) of ``sql`` on the dataset; an SQL error names the views there are."""
    with engine(dataset, name, master) as e:
        try:
            cols: list[str]
            rows: list[tuple[Any, ...]]
            cols, rows = e.run(sql)
            return cols, rows
        except e.error as err:
            raise InvalidParameter("SQL", sql[:200], f"a query {ENGINE_NAMES[name]} runs on the views "
                                   f"{', '.join([*TABLES, *READY_VIEWS])} ({str(err).strip().splitlines()[0]})") from None
