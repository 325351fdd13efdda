"""A split SQL job answers exactly what one DuckDB process answers on the whole input.

Random queries of every supported shape (Hypothesis) over generated Parquet and
CSV files cut into many small parts; integers, text and decimals exact, floats
within rtol 1e-9. Parts and merge run in this process, as the tasks run them.
"""

from __future__ import annotations

import datetime as dt
import decimal

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.sql_compare import assert_same_answer, run_split, run_whole

ROWS = 6_000


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    rng = np.random.default_rng(11)
    folder = tmp_path_factory.mktemp("sql-eq")
    for number in range(3):
        n = ROWS // 3
        k = rng.integers(-5, 20, n).astype(object)
        k[rng.random(n) < 0.05] = None
        g = rng.choice(["fr", "de", "it", "es", "o'q"], n).astype(object)
        g[rng.random(n) < 0.05] = None
        x = rng.normal(10, 30, n)
        x_list = [None if rng.random() < 0.05 else float(v) for v in x]
        table = pa.table({
            "k": pa.array(list(k), pa.int64()), "g": pa.array(list(g), pa.string()),
            "x": pa.array(x_list, pa.float64()), "y": pa.array(rng.integers(0, 1000, n)),
            "d": pa.array([dt.date(2024, 1, 1) + dt.timedelta(days=int(v))
                           for v in rng.integers(0, 60, n)], pa.date32()),
            "m": pa.array([decimal.Decimal(int(v)) / 100 for v in rng.integers(-9999, 9999, n)],
                          pa.decimal128(10, 2))})
        pq.write_table(table, folder / f"t{number}.parquet", row_group_size=300)
        pacsv.write_csv(table, folder / f"t{number}.csv")
    (folder / "dim.csv").write_text("g,label\nfr,France\nde,Germany\nit,Italy\n")
    return {"parquet": str(folder / "t*.parquet"), "csv": str(folder / "t*.csv"),
            "dim": str(folder / "dim.csv"), "out": str(folder / "out.parquet")}


NUMERIC = ["k", "x", "y", "m"]
COLUMNS = ["k", "g", "x", "y", "d", "m"]
FILTERS = ["x > 0", "k BETWEEN 2 AND 9", "g IN ('fr', 'de')", "g IS NULL", "y % 7 = 3",
           "d >= DATE '2024-02-01'", "m < 0 AND x IS NOT NULL", "g LIKE '%r%'",
           "coalesce(k, 0) <> 4"]
AGGREGATES = st.one_of(
    st.sampled_from(["count(*)", "count(g)", "count_if(x > 10)", "bool_or(y > 990)",
                     "bool_and(y > 3)", "min(g)", "max(d)", "sum(y) FILTER (WHERE k > 3)"]),
    st.builds(lambda f, c: f"{f}({c})", st.sampled_from(["sum", "avg", "min", "max", "count"]),
              st.sampled_from(NUMERIC)),
    st.builds(lambda c: f"sum({c}) / nullif(count(*), 0)", st.sampled_from(["y", "k"])),
)


@st.composite
def aggregate_query(draw, source: str) -> tuple[str, bool]:
    keys = draw(st.lists(st.sampled_from(["g", "k", "d", "y % 5", "year(d)"]),
                         unique=True, max_size=2))
    aggregates = draw(st.lists(AGGREGATES, min_size=1, max_size=4, unique=True))
    distinct = draw(st.sampled_from([None, "count(DISTINCT y)", "count(DISTINCT g)",
                                     "sum(DISTINCT k)", "avg(DISTINCT y)"]))
    items = [f"{key} AS key{i}" for i, key in enumerate(keys)]
    items += [f"{agg} AS a{i}" for i, agg in enumerate(aggregates)]
    if distinct:
        items.append(f"{distinct} AS dd")
    query = f"SELECT {', '.join(items)} FROM '{source}'"
    where = draw(st.lists(st.sampled_from(FILTERS), max_size=2, unique=True))
    if where:
        query += " WHERE " + " AND ".join(where)
    ordered = False
    if keys:
        query += " GROUP BY " + ", ".join(keys)
        if draw(st.booleans()):
            query += " HAVING count(*) > " + str(draw(st.integers(0, 40)))
        if draw(st.booleans()):  # every key: a total order, so LIMIT is deterministic
            query += " ORDER BY " + ", ".join(f"key{i} NULLS FIRST" for i in range(len(keys)))
            ordered = True
            if draw(st.booleans()):
                query += f" LIMIT {draw(st.integers(1, 30))}"
    return query, ordered


@st.composite
def row_query(draw, source: str) -> tuple[str, bool]:
    columns = draw(st.lists(st.sampled_from(COLUMNS), min_size=1, max_size=4, unique=True))
    items = columns + draw(st.lists(st.sampled_from(["x * 2 AS x2", "upper(g) AS ug",
                                                     "k + y AS ky"]), max_size=1))
    distinct = draw(st.booleans())
    query = f"SELECT {'DISTINCT ' if distinct else ''}{', '.join(items)} FROM '{source}'"
    where = draw(st.lists(st.sampled_from(FILTERS), max_size=2, unique=True))
    if where:
        query += " WHERE " + " AND ".join(where)
    ordered = draw(st.booleans())
    if ordered:
        names = [item.split(" AS ")[-1] for item in items]
        direction = draw(st.sampled_from(["", " DESC"]))
        # every output column: rows that tie are equal, so LIMIT is deterministic
        query += " ORDER BY " + ", ".join(f"{n}{direction} NULLS LAST" for n in names)
        query += f" LIMIT {draw(st.integers(1, 50))}"
        if draw(st.booleans()):
            query += f" OFFSET {draw(st.integers(1, 20))}"
    return query, ordered


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_queries_equal_one_duckdb_process(files, fmt, data):
    shape = data.draw(st.sampled_from([aggregate_query, row_query]))
    query, ordered = data.draw(shape(files[fmt]))

    got, plan = run_split(query, part_bytes=20_000)

    assert len(plan.parts) >= 3
    assert_same_answer(got, run_whole(query), ordered=ordered)


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_a_small_table_joined_to_every_part(files, fmt):
    query = (f"SELECT d.label, count(*) AS n, sum(t.y) AS total, avg(t.x) AS mean "
             f"FROM '{files[fmt]}' t JOIN '{files['dim']}' d ON t.g = d.g "
             f"WHERE t.k > 0 GROUP BY d.label ORDER BY d.label")

    got, plan = run_split(query, part_bytes=20_000)

    assert len(plan.parts) >= 3 and plan.small_files == [files["dim"]]
    assert_same_answer(got, run_whole(query), ordered=True)


def test_left_join_and_a_subquery_over_the_small_table(files):
    query = (f"SELECT t.g, d.label, count(*) AS n FROM '{files['parquet']}' t "
             f"LEFT JOIN '{files['dim']}' d ON t.g = d.g "
             f"WHERE t.g NOT IN (SELECT g FROM '{files['dim']}' WHERE label = 'Italy') "
             f"GROUP BY ALL")

    got, _ = run_split(query, part_bytes=20_000)

    assert_same_answer(got, run_whole(query), ordered=False)
