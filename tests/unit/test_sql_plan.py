"""Planning a SQL job: bad input is one line before anything is sent; the DuckDB a part
runs in reads only its files; the JSON spec of earlier versions still answers."""

from __future__ import annotations

import json

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from compute import data, duck, sql_plan
from compute.errors import InvalidArgument
from compute.sql_rewrite import NotSplittable
from tests.unit.sql_compare import assert_same_answer, run_split, run_whole


@pytest.fixture(scope="module")
def sales(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("plan")
    table = pa.table({"country": ["fr", "de", None, "fr"] * 500,
                      "amount": [10.5, 30.0, 25.0, None] * 500, "qty": [1, 2, 3, 4] * 500})
    pq.write_table(table, folder / "sales.parquet", row_group_size=250)
    return str(folder / "sales.parquet")


def refused(query: str, **options) -> str:
    with pytest.raises(InvalidArgument) as caught:
        sql_plan.plan(query, **options)
    message = str(caught.value)
    assert "\n" not in message, message
    return message


def test_syntax_errors_name_the_line_and_column(sales):
    message = refused(f"SELECT country, FROM '{sales}' WHERE")
    assert message.startswith("sql: syntax error at line 1, column")


def test_unknown_columns_files_and_type_errors_are_named(sales, tmp_path):
    assert '"price"' in refused(f"SELECT sum(price) FROM '{sales}'")
    assert "does not exist" in refused(f"SELECT * FROM '{tmp_path}/missing.parquet'")
    assert "sum(VARCHAR)" in refused(f"SELECT sum(country) FROM '{sales}'")
    assert "name a file in quotes, like FROM 'sales.parquet'" in refused("SELECT * FROM sales")
    assert "FROM sales.parquet: name a file in quotes, like FROM 'sales.parquet'" in refused(
        "SELECT * FROM sales.parquet")


@pytest.mark.parametrize(("query", "named"), [
    ("SELECT median(amount) FROM '{}'", "median() needs every row at once"),
    ("SELECT quantile_cont(amount, 0.5) FROM '{}'", "quantile_cont() needs every row"),
    ("SELECT stddev(amount) FROM '{}'", "stddev"),
    ("SELECT string_agg(country, ',') FROM '{}'", "needs every row at once"),
    ("SELECT amount, rank() OVER (ORDER BY amount) FROM '{}'", "window function"),
    ("SELECT count(DISTINCT country), count(DISTINCT qty) FROM '{}'", "DISTINCT over more"),
    ("SELECT * FROM '{0}' a JOIN '{0}' b USING (qty)", "read a second time"),
    ("SELECT * FROM '{}' RIGHT JOIN 'x.csv' USING (qty)", "RIGHT JOIN"),
    ("SELECT qty FROM '{0}' UNION SELECT qty FROM '{0}'", "UNION is not split"),
    ("SELECT country, sum(qty) FROM '{}' GROUP BY ROLLUP (country)", "ROLLUP"),
    ("SELECT country FROM '{}' QUALIFY count(*) OVER () > 1", "QUALIFY"),
])
def test_what_cannot_be_split_exactly_is_refused_naming_the_construct(sales, query, named):
    with pytest.raises(NotSplittable, match=named.replace("(", r"\(").replace(")", r"\)")):
        sql_plan.plan(query.format(sales))


def test_a_big_joined_table_is_refused_with_its_size(sales):
    message = refused(f"SELECT count(*) FROM '{sales}' a JOIN '{sales}'",
                      small_bytes=10)
    assert "read a second time" in message  # the same file: never a small table
    copy = sales.replace("sales.parquet", "other.parquet")
    pq.write_table(pq.read_table(sales), copy)
    message = refused(f"SELECT count(*) FROM '{sales}' a JOIN '{copy}' b USING (qty)",
                      small_bytes=1000)
    assert "MiB; a table joined to the scan is read whole by every part" in message


def test_a_part_reads_only_its_own_files(sales, tmp_path):
    secret = tmp_path / "secret.csv"
    secret.write_text("a\n1\n")
    (tmp_path / "scratch").mkdir()
    connection = duck.connect(read=[sales], scratch=str(tmp_path / "scratch"))

    assert connection.execute(f"SELECT count(*) FROM '{sales}'").fetchone() == (2000,)
    for statement in [f"SELECT * FROM read_csv('{secret}')",
                      f"COPY (SELECT 1) TO '{tmp_path}/x.csv'",
                      "INSTALL httpfs", f"ATTACH '{tmp_path}/x.db'",
                      "SET enable_external_access = true", "SELECT * FROM glob('/*')"]:
        with pytest.raises(duckdb.Error):
            connection.execute(statement)


def test_the_json_spec_is_translated_to_sql_with_the_same_answer(sales, tmp_path):
    spec = {"filter": [["amount", ">", 20.0], ["country", "in", ["fr", "de", None]]],
            "group_by": ["country"],
            "aggregate": {"total": ["amount", "sum"], "rows": ["*", "count"],
                          "avg": ["qty", "mean"], "hi": ["qty", "max"]}}

    query = data.spec_to_sql(sales, spec)
    got, _ = run_split(query, part_bytes=1000)

    assert query == (f"SELECT \"country\", sum(\"amount\") AS \"total\", count(*) AS \"rows\", "
                     f"avg(\"qty\") AS \"avg\", max(\"qty\") AS \"hi\" FROM '{sales}' WHERE "
                     f"\"amount\" > 20.0 AND \"country\" IN ('fr', 'de', NULL) GROUP BY "
                     f"\"country\" ORDER BY \"country\" ASC NULLS LAST")
    # fr rows are 10.5 or NULL, and NULL IN (...) is NULL: only de passes the filter
    assert got.to_pylist() == [{"country": "de", "total": 15000.0, "rows": 500, "avg": 2.0,
                                "hi": 2}]
    assert_same_answer(got, run_whole(query), ordered=True)


def test_the_answer_is_written_as_parquet_json_or_csv(sales, tmp_path):
    table = pa.table({"country": ["fr", None], "n": [1, 2]})
    for name in ("a.parquet", "a.json", "a.csv"):
        data.write_output(table, str(tmp_path / name))
    assert pq.read_table(tmp_path / "a.parquet").equals(table)
    assert json.loads((tmp_path / "a.json").read_text()) == table.to_pylist()
    assert (tmp_path / "a.csv").read_text().splitlines() == ['"country","n"', '"fr",1', ',2']


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_inputs_behind_an_fsspec_url_are_read_through_fsspec(sales, fmt):
    import fsspec

    memory = fsspec.filesystem("memory")
    table = pq.read_table(sales)
    for number in range(2):
        with memory.open(f"/sql-test/s{number}.{fmt}", "wb") as handle:
            if fmt == "parquet":
                pq.write_table(table, handle, row_group_size=250)
            else:
                import pyarrow.csv as pacsv
                pacsv.write_csv(table, handle)
    query = ("SELECT country, sum(amount) AS total, count(*) AS n FROM "
             f"'memory://sql-test/*.{fmt}' GROUP BY country ORDER BY country NULLS FIRST")

    got, plan = run_split(query, part_bytes=400)

    assert len(plan.parts) >= 4
    assert all(p["path"].startswith("memory://") for part in plan.parts for p in part)
    assert got.to_pylist() == [{"country": None, "total": 25000.0, "n": 1000},
                               {"country": "de", "total": 30000.0, "n": 1000},
                               {"country": "fr", "total": 10500.0, "n": 2000}]


@pytest.mark.parametrize("query", [
    "SELECT qty, amount FROM '{}' ORDER BY 2 DESC NULLS LAST, 1 LIMIT 7 OFFSET 3",
    "SELECT qty * 2 AS qty, country FROM '{}' ORDER BY qty DESC, country NULLS FIRST LIMIT 5",
    "SELECT country, qty FROM '{}' ORDER BY amount NULLS FIRST, qty, country LIMIT 9",
    "SELECT sum(qty), country FROM '{}' GROUP BY 2 ORDER BY 1 DESC, 2 NULLS LAST",
])
def test_order_by_position_alias_or_an_unselected_column(tmp_path, query):
    rows = 3000
    table = pa.table({"country": [("fr", "de", None)[i % 3] for i in range(rows)],
                      "amount": [(i * 7919) % 10007 / 10 for i in range(rows)],
                      "qty": [(i * 31) % 97 for i in range(rows)]})
    pq.write_table(table, tmp_path / "ordered.parquet", row_group_size=200)
    query = query.format(tmp_path / "ordered.parquet")

    got, plan = run_split(query, part_bytes=500)

    assert len(plan.parts) >= 4
    assert_same_answer(got, run_whole(query), ordered=True)
