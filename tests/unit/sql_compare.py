"""Run a SQL job's plan in this process, part by part, and compare it with one DuckDB process."""

from __future__ import annotations

import datetime as dt
import decimal
import math
from typing import Any

import duckdb
import pyarrow as pa

from compute import data, sql_plan


def run_split(query: str, **options: Any) -> tuple[pa.Table, sql_plan.SqlPlan]:
    """The split job's answer: every part, then the merge, as the tasks run them."""
    plan = sql_plan.plan(query, **options)
    shared = {"sql": plan.part_sql, "format": plan.format, "dialect": plan.dialect,
              "small_files": plan.small_files}
    tables = [data.run_part(shared, pieces) for pieces in plan.parts]
    return data.run_merge(tables, plan.merge_sql), plan


def run_whole(query: str) -> pa.Table:
    with duckdb.connect() as connection:
        return connection.execute(query).to_arrow_table()


def _key(value: Any) -> tuple:
    if value is None:
        return (0, "")
    if isinstance(value, float) and math.isnan(value):
        return (1, "")
    if isinstance(value, int | float | decimal.Decimal):
        return (2, float(value))
    return (3, str(value))


def _same(a: Any, b: Any, rtol: float) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return math.isclose(a, b, rel_tol=rtol, abs_tol=1e-9)
    if isinstance(a, dt.date | str | int | decimal.Decimal | bool) or a is None:
        return a == b
    return a == b


def assert_same_answer(got: pa.Table, want: pa.Table, *, ordered: bool,
                       rtol: float = 1e-9) -> None:
    """Same columns and types; the same rows (in order when ``ordered``): integers, text
    and decimals exact, floats within ``rtol``."""
    assert got.schema.names == want.schema.names
    assert [str(t) for t in got.schema.types] == [str(t) for t in want.schema.types]
    rows_got = [tuple(r.values()) for r in got.to_pylist()]
    rows_want = [tuple(r.values()) for r in want.to_pylist()]
    if not ordered:
        rows_got.sort(key=lambda row: tuple(_key(v) for v in row))
        rows_want.sort(key=lambda row: tuple(_key(v) for v in row))
    assert len(rows_got) == len(rows_want), (len(rows_got), len(rows_want))
    for row_got, row_want in zip(rows_got, rows_want, strict=True):
        assert all(_same(a, b, rtol) for a, b in zip(row_got, row_want, strict=True)), (
            row_got, row_want)
