"""Fleet questions on the dataset, in-process on DuckDB: one view per table and ready-made views, by name in SQL.

Tables (tsalign.fleet.dataset), each with its partition columns ``node``, ``vm``, ``run`` (prechecks:
``node``, ``run``): ``verdicts``, ``vcpus``, ``offsets``, ``latencies``, ``preemptions``, ``prechecks``.
Ready views:

- ``untraceable``: one row per failed precheck result (node, run): the checks that failed and their fixes;
- ``error_bounds``: per host kernel, how many alignments, their verdicts and error bounds (ns: median, max);
- ``latency_per_node``: per host node, IRQ injections measured and their latency (ns: median, p99, max);
- ``preemption_per_node``: per host node, vCPU preemptions and their total and longest time (ns).

Percentiles are ``quantile_disc`` (a value that occurred, no interpolation).
"""

from __future__ import annotations

import os
from typing import Any

from ..errors import InvalidParameter
from .dataset import PARTITIONS, TABLES, open_dataset, schemas

__all__ = ["READY_VIEWS", "connect", "query"]

READY_VIEWS: dict[str, str] = {
    "untraceable": """
        SELECT node, run, any_value(role) AS role, any_value(kernel) AS kernel,
               string_agg(check_id || ': ' || fix, '; ' ORDER BY check_id) FILTER (WHERE status = 'fail') AS failed_checks
        FROM prechecks WHERE node_verdict = 'fail' GROUP BY node, run""",
    "error_bounds": """
        SELECT kernel, count(*) AS alignments,
               count(*) FILTER (WHERE verdict = 'pass') AS passed, count(*) FILTER (WHERE verdict = 'fail') AS failed,
               quantile_disc(error_bound_ns, 0.5) AS error_bound_ns_median, max(error_bound_ns) AS error_bound_ns_max
        FROM verdicts GROUP BY kernel""",
    "latency_per_node": """
        SELECT node, count(*) AS injections, quantile_disc(latency_ns, 0.5) AS latency_ns_median,
               quantile_disc(latency_ns, 0.99) AS latency_ns_p99, max(latency_ns) AS latency_ns_max
        FROM latencies GROUP BY node""",
    "preemption_per_node": """
        SELECT node, count(*) AS preemptions, sum(duration_ns) AS preempted_ns_total,
               max(duration_ns) AS preempted_ns_max
        FROM preemptions WHERE preempted GROUP BY node""",
}


def connect(dataset: str) -> Any:
    """An in-memory DuckDB connection with every table and ready view of ``dataset`` defined."""
    import duckdb
    import pyarrow as pa

    open_dataset(dataset)
    con = duckdb.connect(":memory:")
    tables_schema = schemas()
    for t in TABLES:
        files = os.path.join(os.path.abspath(dataset), t, *("*" for _ in PARTITIONS[t]), "part-0.parquet")
        has = os.path.isdir(os.path.join(dataset, t)) and any(
            name == "part-0.parquet" for _, _, names in os.walk(os.path.join(dataset, t)) for name in names)
        if has:
            path = files.replace("'", "''")
            con.execute(f"CREATE VIEW {t} AS SELECT * FROM read_parquet('{path}', hive_partitioning = true, "
                        "hive_types_autocast = false)")
        else:  # no partition yet: an empty view with the table's columns, so every question can be asked
            empty = tables_schema[t].empty_table()
            for k in PARTITIONS[t]:
                empty = empty.append_column(k, pa.array([], pa.string()))
            con.register(f"_{t}_empty", empty)
            con.execute(f"CREATE VIEW {t} AS SELECT * FROM _{t}_empty")
    for name, sql in READY_VIEWS.items():
        con.execute(f"CREATE VIEW {name} AS {sql}")
    return con


def query(dataset: str, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """(column names, rows) of ``sql`` on the dataset; an SQL error names the views there are."""
    import duckdb

    con = connect(dataset)
    try:
        cur = con.execute(sql)
        cols = [d[0] for d in cur.description or []]
        return cols, cur.fetchall()
    except duckdb.Error as e:
        raise InvalidParameter("SQL", sql[:200], f"a query DuckDB runs on the views {', '.join([*TABLES, *READY_VIEWS])} "
                               f"({str(e).splitlines()[0]})") from None
    finally:
        con.close()
