"""CSV byte ranges cut at line ends: every row lands in exactly one chunk, whatever the size."""

from __future__ import annotations

import pytest

from compute import data


@pytest.fixture
def csv_file(tmp_path):
    path = tmp_path / "t.csv"
    rows = [f"{i},{'x' * (i % 7)},{i * 0.5}" for i in range(200)]
    path.write_text("id,name,value\n" + "\n".join(rows) + "\n")
    return str(path)


@pytest.mark.parametrize("chunk_bytes", [1, 2, 13, 64, 999, 10_000])
def test_chunks_partition_the_rows(csv_file, chunk_bytes):
    schema = data.csv_schema(csv_file)
    ids = []
    for chunk in data.plan(csv_file, chunk_bytes):
        table = data._read_chunk(csv_file, chunk, schema, "test")
        if table is not None:
            ids += table["id"].to_pylist()

    assert ids == list(range(200))


def test_merge_combines_partials_like_one_pass():
    spec = {"group_by": ["k"], "aggregate": {"s": ["v", "sum"], "m": ["v", "mean"],
                                             "n": ["*", "count"], "lo": ["v", "min"]}}
    parts = [{"partials": [[["a"], {"v|sum": 3, "v|count": 2, "*|count": 2, "v|min": 1}]]},
             {"partials": [[["a"], {"v|sum": 4, "v|count": 1, "*|count": 2, "v|min": 4}],
                           [["b"], {"v|sum": None, "v|count": 0, "*|count": 1,
                                    "v|min": None}]]}]

    assert data.merge(parts, spec) == [
        {"k": "a", "s": 7, "m": 7 / 3, "n": 4, "lo": 1},
        {"k": "b", "s": None, "m": None, "n": 1, "lo": None}]


def test_a_bad_spec_is_refused_naming_what_is_wrong():
    with pytest.raises(data.InvalidArgument, match="unknown keys"):
        data.check_spec({"aggregate": {"n": ["*", "count"]}, "sort": "x"})
    with pytest.raises(data.InvalidArgument, match="'\\*' only counts rows"):
        data.check_spec({"aggregate": {"n": ["*", "sum"]}})
    with pytest.raises(data.InvalidArgument, match="filter"):
        data.check_spec({"aggregate": {"n": ["*", "count"]}, "filter": [["a", "~", 1]]})
