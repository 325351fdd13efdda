"""Data module end to end: SQL split across two real workers equals one DuckDB process;
the JSON spec of earlier versions still equals pandas."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from compute import plans
from compute.errors import InvalidArgument, PayloadTooLarge
from tests.unit.sql_compare import assert_same_answer, run_whole
from worker.local.worker_process import cli_command

TIMEOUT = 120
SPEC = {"filter": [["amount", ">", 20.0], ["qty", ">=", 1]],
        "group_by": ["country"],
        "aggregate": {"total": ["amount", "sum"], "rows": ["*", "count"],
                      "avg": ["amount", "mean"], "lo": ["qty", "min"], "hi": ["qty", "max"],
                      "priced": ["amount", "count"]}}


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> dict:
    rng = np.random.default_rng(7)
    n = 40_000
    frame = pd.DataFrame({"country": rng.choice(["fr", "de", "it", None], n),
                          "amount": rng.normal(50, 20, n).round(2),
                          "qty": rng.integers(0, 10, n)})
    frame.loc[rng.choice(n, 200, replace=False), "amount"] = np.nan
    folder = tmp_path_factory.mktemp("data")
    frame.to_csv(folder / "sales.csv", index=False)
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), folder / "sales.parquet",
                   row_group_size=5_000)
    return {"frame": frame, "csv": str(folder / "sales.csv"),
            "parquet": str(folder / "sales.parquet"), "folder": folder}


def expected(frame: pd.DataFrame) -> pd.DataFrame:
    kept = frame[(frame.amount > 20.0) & (frame.qty >= 1)]
    return kept.groupby("country", dropna=False).agg(
        total=("amount", "sum"), rows=("amount", "size"), avg=("amount", "mean"),
        lo=("qty", "min"), hi=("qty", "max"), priced=("amount", "count"))


def assert_equal_to_pandas(output: str, frame: pd.DataFrame) -> None:
    got = pd.read_csv(output).set_index("country")
    got.index = got.index.where(got.index.notna(), None)
    want = expected(frame)
    want.index = want.index.where(want.index.notna(), None)
    got, want = got.sort_index(), want.sort_index()
    assert list(got.index) == list(want.index)
    for column in want.columns:
        np.testing.assert_allclose(got[column].to_numpy(float), want[column].to_numpy(float),
                                   rtol=1e-9, err_msg=column)


@pytest.mark.parametrize("kind", ["csv", "parquet", "url"])
def test_aggregate_across_two_workers_equals_pandas(app, workers, table, kind, tmp_path):
    nodes = {workers(name, "--concurrency", "1").node for name in ("data-a", "data-b")}
    output = str(tmp_path / "result.csv")
    source = f"file://{table['parquet']}" if kind == "url" else table[kind]

    job = plans.aggregate(app, source, SPEC, output, chunk_bytes=50_000)
    summary = app.AsyncResult(job.assemble).get(timeout=TIMEOUT)

    assert len(job.parts) >= 8
    assert summary["parts"] == len(job.parts)
    assert set(summary["workers"]) == nodes  # both volunteers took parts
    assert_equal_to_pandas(output, table["frame"])


def test_bad_inputs_fail_before_anything_is_sent(app, table, tmp_path):
    out = str(tmp_path / "x.csv")
    with pytest.raises(InvalidArgument, match="does not exist"):
        plans.aggregate(app, str(tmp_path / "missing.csv"), SPEC, out)
    with pytest.raises(InvalidArgument, match=r'Referenced column "price" not found'):
        plans.aggregate(app, table["csv"], {"aggregate": {"p": ["price", "sum"]}}, out)
    with pytest.raises(InvalidArgument, match=r"median\(\) needs every row at once"):
        plans.sql(app, f"SELECT median(qty) FROM '{table['csv']}'", out)
    with pytest.raises(InvalidArgument, match=r"syntax error at line 1"):
        plans.sql(app, f"SELECT qty FROM '{table['csv']}' WHERE", out)
    with pytest.raises(InvalidArgument, match="aggregate 'p' must be"):
        plans.aggregate(app, table["parquet"], {"aggregate": {"p": ["qty", "median"]}}, out)


def test_a_failing_chunk_fails_its_job_clearly_and_the_worker_keeps_serving(
        app, workers, table, tmp_path):
    worker = workers("data-a", "--concurrency", "1")

    job = plans.aggregate(app, table["csv"], {**SPEC, "map": "team.nothing"},
                          str(tmp_path / "x.csv"), chunk_bytes=400_000)
    broken = tmp_path / "broken.csv"
    broken.write_text("country,qty\nfr,1\n")
    later = plans.sql(app, f"SELECT sum(qty) FROM '{broken}'", str(tmp_path / "y.csv"))
    broken.write_text("country,qty\nfr,many\n")  # changed after planning: not a number
    part = app.AsyncResult(job.parts[0])
    part.get(timeout=TIMEOUT, propagate=False)
    bad_row = app.AsyncResult(later.parts[0])
    bad_row.get(timeout=TIMEOUT, propagate=False)
    after = app.signature("compute.diag.noop").delay().get(timeout=TIMEOUT)

    assert part.state == "FAILURE"
    assert "no map function 'team.nothing' is registered on this worker" in str(part.result)
    assert bad_row.state == "FAILURE"
    assert str(broken) in str(bad_row.result) and "many" in str(bad_row.result)
    assert after == {"hostname": worker.node}


def test_a_registered_map_function_runs_on_the_workers(app, workers, table, tmp_path):
    (tmp_path / "team_maps.py").write_text(textwrap.dedent('''
        import pyarrow.compute as pc
        from compute.data import register_map

        @register_map("team.with_value")
        def with_value(table):
            return table.append_column("value", pc.multiply(table["amount"], table["qty"]))
    '''))
    env = {"PYTHONPATH": str(tmp_path)}
    workers("data-a", "--concurrency", "1", "--include", "team_maps", env=env)
    spec = {"map": "team.with_value", "group_by": ["country"],
            "aggregate": {"value": ["value", "sum"]}}

    job = plans.aggregate(app, table["parquet"], spec, str(tmp_path / "v.csv"))
    app.AsyncResult(job.assemble).get(timeout=TIMEOUT)

    frame = table["frame"].assign(value=lambda f: f.amount * f.qty)
    want = frame.groupby("country").value.sum()
    got = pd.read_csv(tmp_path / "v.csv").dropna(subset=["country"]).set_index("country").value
    np.testing.assert_allclose(got.sort_index(), want.sort_index(), rtol=1e-9)


def test_submit_and_job_status_from_the_command_line(app, workers, broker_env, table, tmp_path):
    workers("data-a", "--concurrency", "1")
    output = str(tmp_path / "cli.csv")
    env = {**os.environ, **broker_env, "COLUMNS": "200"}

    done = subprocess.run([*cli_command(), "submit", "aggregate", table["parquet"],
                           "--spec", json.dumps(SPEC), "--output", output,
                           "--chunk-mb", "0.01"],
                          env=env, capture_output=True, text=True, timeout=TIMEOUT)
    job_id = done.stdout.split("job ")[1].split()[0]
    status = subprocess.run([*cli_command(), "job", "status", job_id, "--json"],
                            env=env, capture_output=True, text=True, timeout=60)

    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS, 8/8 parts done" in done.stdout
    assert_equal_to_pandas(output, table["frame"])
    report = json.loads(status.stdout)
    assert (report["state"], report["done"], report["total"]) == ("SUCCESS", 8, 8)
    assert report["result"]["output"] == output


def test_oversized_arguments_are_refused_before_sending_and_on_the_worker(app, workers):
    from compute.data import sql_part

    worker = workers("data-a", "--concurrency", "1")
    huge = "x" * 300_000

    with pytest.raises(PayloadTooLarge, match="over the 262144-byte message limit"):
        sql_part.apply_async(args=[{}, [], huge])
    sent = app.send_task("compute.data.sql_part", args=[{}, [], huge])  # by name: no check
    sent.get(timeout=TIMEOUT, propagate=False)
    after = app.signature("compute.diag.noop").delay().get(timeout=TIMEOUT)

    assert sent.state == "FAILURE" and "message limit" in str(sent.result)
    assert after == {"hostname": worker.node}


def test_sql_from_the_command_line_over_a_glob_equals_one_duckdb_process(
        app, workers, broker_env, table, tmp_path):
    nodes = {workers(name, "--concurrency", "1").node for name in ("data-a", "data-b")}
    folder = tmp_path / "sales"
    folder.mkdir()
    frame = table["frame"]
    for number, start in enumerate(range(0, len(frame), 10_000)):
        pq.write_table(pa.Table.from_pandas(frame[start:start + 10_000], preserve_index=False),
                       folder / f"part{number}.parquet", row_group_size=2_500)
    (tmp_path / "names.csv").write_text("country,name\nfr,France\nde,Germany\n")
    query = (f"SELECT s.country, n.name, sum(amount) AS total, count(*) AS n, "
             f"count(DISTINCT qty) AS kinds FROM '{folder}/*.parquet' s "
             f"LEFT JOIN '{tmp_path}/names.csv' n ON s.country = n.country "
             f"WHERE amount > 20 GROUP BY ALL HAVING count(*) > 10 ORDER BY total DESC")
    output = str(tmp_path / "totals.parquet")
    env = {**os.environ, **broker_env, "COLUMNS": "200"}

    done = subprocess.run([*cli_command(), "submit", "sql", query, "--output", output,
                           "--part-mb", "0.02"], env=env, capture_output=True, text=True,
                          timeout=TIMEOUT)
    job_id = done.stdout.split("job ")[1].split()[0]
    status = subprocess.run([*cli_command(), "job", "status", job_id, "--json"],
                            env=env, capture_output=True, text=True, timeout=60)

    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(status.stdout)
    assert report["state"] == "SUCCESS" and report["total"] >= 8
    assert set(report["result"]["workers"]) == nodes
    assert_same_answer(pq.read_table(output), run_whole(query), ordered=True)


def test_large_partials_travel_as_files_that_the_merge_removes(app, workers, table, tmp_path):
    workers("data-a", "--concurrency", "1")
    query = (f"SELECT country, amount, qty FROM '{table['csv']}' WHERE qty > 0 "
             f"ORDER BY amount DESC NULLS LAST, qty, country NULLS LAST LIMIT 30000")
    output = str(tmp_path / "top.csv")

    job = plans.sql(app, query, output, part_bytes=200_000)
    summary = app.AsyncResult(job.assemble).get(timeout=TIMEOUT)

    assert summary["by_file"] >= 1 and summary["parts"] == len(job.parts) >= 3
    assert not list(tmp_path.glob("top.csv.parts/*"))  # the merge tidied up
    got = pa.Table.from_pandas(pd.read_csv(output, keep_default_na=False,
                                           na_values=[""]), preserve_index=False)
    want = run_whole(query)
    assert got.num_rows == want.num_rows == 30000
    np.testing.assert_allclose(got["amount"].to_numpy(), want["amount"].to_numpy(), rtol=1e-12)
