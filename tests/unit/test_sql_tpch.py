"""The 22 TPC-H queries (DuckDB's tpch extension, scale factor 0.01, as Parquet files):
the decomposable ones split into parts and answer exactly what one DuckDB process
answers; every other one is refused before anything is sent, in one line naming why."""

from __future__ import annotations

import os

import duckdb
import duckdb_extension_tpch as tpch_package
import pyarrow.parquet as pq
import pytest
import sqlglot
from sqlglot import exp

from compute.errors import InvalidArgument
from tests.unit.sql_compare import assert_same_answer, run_split, run_whole

#: lineitem (2.1 MiB here) is "big": joins to it are refused. The rest joins whole.
SMALL_BYTES = 1_000_000
SPLIT = {1, 2, 6, 14, 16, 19}
REFUSED = {
    "a table joined to the scan is read whole": {3, 4, 5, 10, 12, 18, 20, 21},
    "a subquery in FROM is not split": {7, 8, 9, 13, 22},
    "the scanned input read a second time": {11, 17},
    "WITH (common table expressions) is not split": {15},
}


@pytest.fixture(scope="module")
def tpch(tmp_path_factory) -> dict[int, str]:
    folder = tmp_path_factory.mktemp("tpch")
    extension = os.path.join(os.path.dirname(tpch_package.__file__), "extensions",
                             f"v{duckdb.__version__}", "tpch.duckdb_extension")
    with duckdb.connect() as connection:
        connection.execute(f"LOAD '{extension}'")
        connection.execute("CALL dbgen(sf = 0.01)")
        tables = [row[0] for row in connection.execute("SHOW TABLES").fetchall()]
        for table in tables:  # small row groups: even part (2,000 rows) makes several parts
            pq.write_table(connection.execute(f"SELECT * FROM {table}").to_arrow_table(),
                           folder / f"{table}.parquet",
                           row_group_size=5000 if table == "lineitem" else 500)
        queries = dict(connection.execute("SELECT query_nr, query FROM tpch_queries()"
                                          ).fetchall())
    return {number: _on_files(query, tables, str(folder))
            for number, query in queries.items()}


def _on_files(query: str, tables: list[str], folder: str) -> str:
    """The query with each table name replaced by its Parquet file (aliased by the name)."""
    tree = sqlglot.parse_one(query, read="duckdb")
    for table in tree.find_all(exp.Table):
        if table.name in tables and not table.args.get("db"):
            alias = table.args.get("alias") or exp.TableAlias(this=exp.to_identifier(table.name))
            table.set("this", exp.to_identifier(f"{folder}/{table.name}.parquet", quoted=True))
            table.set("alias", alias)
    return tree.sql(dialect="duckdb")


@pytest.mark.parametrize("number", sorted(SPLIT))
def test_decomposable_tpch_queries_equal_one_duckdb_process(tpch, number):
    queries = tpch

    got, plan = run_split(queries[number], part_bytes=30_000,
                          small_bytes=SMALL_BYTES)

    assert len(plan.parts) >= 2
    assert_same_answer(got, run_whole(queries[number]), ordered=True)


def test_every_other_tpch_query_is_refused_in_one_line_naming_why(tpch):
    queries = tpch
    refused: dict[str, set[int]] = {}
    for number in sorted(set(queries) - SPLIT):
        with pytest.raises(InvalidArgument) as caught:
            run_split(queries[number], small_bytes=SMALL_BYTES)
        message = str(caught.value)
        assert "\n" not in message and message.startswith("sql: ")
        reason = next((r for r in REFUSED if r in message), message)
        refused.setdefault(reason, set()).add(number)

    assert refused == REFUSED
