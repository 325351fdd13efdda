"""The files a SQL job reads: found from the query, cut into parts, each part's slice read.

Every CSV line and every Parquet row lands in exactly one part, whatever the part size;
a query's table names files (a quoted path, a glob, read_parquet/read_csv of one or a
list), and anything else is refused with a message saying what to write instead.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlglot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compute import sql_inputs
from compute.errors import InvalidArgument
from compute.sql_inputs import Source, stored_bytes

FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])

#: Text of one CSV line: anything but a line end (a quoted field must not span lines).
LINE = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"),
               max_size=12)


def table_of(query: str) -> sqlglot.exp.Expression:
    """The FROM table of ``query``, as the planner hands it to ``source_of``."""
    return sqlglot.parse_one(query, read="duckdb").args["from_"].this


def write_csv(path: Path, header: bool, lines: list[str], newline: str, trailing: bool) -> bytes:
    """Write the file; return the bytes a reader of all of its rows gets (no header)."""
    head = ("id,name" + newline).encode() if header else b""
    body = newline.join(lines).encode() + (newline.encode() if trailing and lines else b"")
    path.write_bytes(head + body)
    return body


def read_parts(source: Source, part_bytes: int, header: bool) -> list[list[bytes]]:
    """Each part's bytes, piece by piece, as the parts read them."""
    return [[sql_inputs.read_range(piece["path"], *piece["bytes"], header=header)
             for piece in part] for part in sql_inputs.csv_pieces(source, part_bytes)]


# ---- CSV: byte ranges cut at line ends --------------------------------------------------

@FUZZ
@given(lines=st.lists(LINE, max_size=30), header=st.booleans(), trailing=st.booleans(),
       newline=st.sampled_from(["\n", "\r\n"]), part_bytes=st.integers(1, 200))
def test_every_csv_line_lands_in_exactly_one_part(tmp_path, lines, header, trailing, newline,
                                                  part_bytes):
    path = tmp_path / "t.csv"
    body = write_csv(path, header, lines, newline, trailing)
    source = Source(format="csv", files=[str(path)], text="'t.csv'")

    parts = read_parts(source, part_bytes, header)

    assert b"".join(b"".join(part) for part in parts) == body  # in order, once each
    chunks = [chunk for part in parts for chunk in part if chunk]
    assert all(chunk.endswith(newline.encode()) for chunk in chunks[:-1])  # whole lines
    size = path.stat().st_size
    ranges = [piece["bytes"] for part in sql_inputs.csv_pieces(source, part_bytes)
              for piece in part]
    assert ranges[0][0] == 0 and ranges[-1][1] == size
    assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))
    assert all(0 < end - start <= part_bytes for start, end in ranges) or size == 0


@pytest.mark.parametrize("part_bytes", [1, 2, 13, 64, 999, 10_000])
def test_a_csv_of_200_rows_splits_into_its_ids_in_order(tmp_path, part_bytes):
    path = tmp_path / "t.csv"
    rows = [f"{i},{'x' * (i % 7)},{i * 0.5}" for i in range(200)]
    path.write_text("id,name,value\n" + "\n".join(rows) + "\n")
    source = Source(format="csv", files=[str(path)], text="'t.csv'")

    lines = b"".join(b"".join(part) for part in read_parts(source, part_bytes, True))

    assert [int(line.split(b",")[0]) for line in lines.splitlines()] == list(range(200))


def test_a_range_holds_the_lines_that_start_in_it(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes(b"h\naa\nbb\ncc")  # lines start at 0, 2, 5, 8

    def read(start: int, end: int, header: bool = True) -> bytes:
        return sql_inputs.read_range(str(path), start, end, header)

    assert read(0, 2) == b""  # the header only, left out
    assert read(0, 3) == b"aa\n"
    assert read(0, 3, header=False) == b"h\naa\n"
    assert read(1, 3) == b"aa\n"  # inside the header: it is still not a row
    assert read(2, 5) == b"aa\n" and read(3, 5) == b""  # 3-5: no line starts there
    assert read(5, 9) == b"bb\ncc"  # the last line, without its line end
    assert read(9, 11) == b"" and read(20, 30) == b""  # past the end


def test_several_csv_files_make_parts_of_their_own(tmp_path):
    bodies = []
    for name, count in (("a.csv", 7), ("b.csv", 0), ("c.csv", 20)):
        bodies.append(write_csv(tmp_path / name, True, [str(i) for i in range(count)], "\n",
                                True))
    source = sql_inputs.source_of(table_of(f"SELECT * FROM '{tmp_path}/*.csv'"))

    parts = sql_inputs.csv_pieces(source, 16)

    assert all(len(part) == 1 for part in parts)  # a part is one slice of one file
    for file, body in zip(source.files, bodies, strict=True):
        pieces = [part[0] for part in parts if part[0]["path"] == file]
        assert pieces, f"{file} has no part"
        assert b"".join(sql_inputs.read_range(file, *p["bytes"], header=True)
                        for p in pieces) == body


def test_an_empty_csv_is_one_empty_part(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    source = Source(format="csv", files=[str(path)], text="'empty.csv'")

    assert sql_inputs.csv_pieces(source, 64) == [[{"path": str(path), "bytes": [0, 0]}]]
    assert sql_inputs.read_range(str(path), 0, 0, header=True) == b""


# ---- Parquet: row groups, grouped up to part_bytes -------------------------------------

def write_parquet(path: Path, rows: int, group_rows: int, start: int = 0) -> None:
    table = pa.table({"id": pa.array(range(start, start + rows), pa.int64()),
                      "text": [f"row {i}" * (i % 5) for i in range(rows)]})
    pq.write_table(table, path, row_group_size=group_rows)


def check_parquet_parts(source: Source, parts: list[list[dict]], part_bytes: int) -> None:
    """Every row in one piece; pieces hold whole row groups, their rows matching; a part
    holds at most ``part_bytes`` of groups unless one group alone is bigger, and parts are
    as full as they can be."""
    metas = {path: pq.ParquetFile(path).metadata for path in source.files}
    sizes = []
    for part in parts:
        assert part, "an empty part"
        size = 0
        for piece in part:
            meta = metas[piece["path"]]
            first, last = piece["groups"]
            assert 0 <= first < last <= meta.num_row_groups
            before = sum(meta.row_group(i).num_rows for i in range(first))
            inside = sum(meta.row_group(i).num_rows for i in range(first, last))
            assert piece["rows"] == [before, before + inside]
            size += sum(stored_bytes(meta.row_group(i)) for i in range(first, last))
        groups = sum(p["groups"][1] - p["groups"][0] for p in part)
        assert size <= part_bytes or groups == 1
        sizes.append(size)
    for size, following in zip(sizes, parts[1:], strict=False):  # greedy: nothing more fit
        piece = following[0]
        first = stored_bytes(metas[piece["path"]].row_group(piece["groups"][0]))
        assert size + first > part_bytes
    for path, meta in metas.items():  # each row exactly once, in order
        spans = [p["rows"] for part in parts for p in part if p["path"] == path]
        assert [r for span in spans for r in range(*span)] == list(range(meta.num_rows))


@FUZZ
@given(files=st.lists(st.tuples(st.integers(0, 60), st.integers(1, 25)), min_size=1,
                      max_size=4),
       part_bytes=st.integers(1, 4000))
def test_every_parquet_row_lands_in_exactly_one_part(tmp_path, files, part_bytes):
    folder = tmp_path / f"set-{len(list(tmp_path.iterdir()))}"
    folder.mkdir()
    for number, (rows, group_rows) in enumerate(files):
        write_parquet(folder / f"f{number}.parquet", rows, group_rows)
    source = sql_inputs.source_of(table_of(f"SELECT * FROM '{folder}/*.parquet'"))

    parts = sql_inputs.parquet_pieces(source, part_bytes)

    check_parquet_parts(source, parts, part_bytes)


def test_small_parquet_files_share_a_part_and_big_groups_have_their_own(tmp_path):
    for name in ("a", "b", "c"):
        write_parquet(tmp_path / f"{name}.parquet", 10, 10)
    write_parquet(tmp_path / "d.parquet", 100, 25)  # 4 row groups
    source = sql_inputs.source_of(table_of(f"SELECT * FROM '{tmp_path}/*.parquet'"))

    together = sql_inputs.parquet_pieces(source, 1 << 30)
    apart = sql_inputs.parquet_pieces(source, 1)

    assert len(together) == 1
    assert [p["path"] for p in together[0]] == source.files  # one piece per file
    assert together[0][-1] == {"path": source.files[-1], "groups": [0, 4], "rows": [0, 100]}
    assert len(apart) == 3 + 4  # every row group alone
    check_parquet_parts(source, together, 1 << 30)
    check_parquet_parts(source, apart, 1)


def test_a_file_that_is_not_parquet_is_named(tmp_path):
    (tmp_path / "bad.parquet").write_text("not parquet")
    source = Source(format="parquet", files=[str(tmp_path / "bad.parquet")], text="'x'")

    with pytest.raises(InvalidArgument, match=r"bad\.parquet' is not readable Parquet"):
        sql_inputs.parquet_pieces(source, 1024)


# ---- expand: which files a path names ---------------------------------------------------

def test_a_glob_names_its_files_sorted_and_absolute(tmp_path, monkeypatch):
    for name in ("b.csv", "a.csv", "c.txt", "sub/d.csv"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("x\n")
    monkeypatch.chdir(tmp_path)

    assert sql_inputs.expand(["*.csv"], "t") == [str(tmp_path / "a.csv"), str(tmp_path / "b.csv")]
    assert sql_inputs.expand(["**/*.csv"], "t")[-1] == str(tmp_path / "sub" / "d.csv")
    assert sql_inputs.expand(["c.txt", "a.csv"], "t") == [str(tmp_path / "c.txt"),
                                                          str(tmp_path / "a.csv")]
    assert sql_inputs.expand([f"file://{tmp_path}/a.csv"], "t") == [str(tmp_path / "a.csv")]


@pytest.mark.parametrize(("path", "says"), [
    ("missing.csv", "'missing.csv' does not exist"),
    ("*.parquet", "'*.parquet' does not exist"),  # a glob that finds nothing
    ("sub", "is a folder; use a glob like '{root}/sub/*.parquet'"),
    ("nope://bucket/x.csv", "cannot open 'nope://bucket/x.csv'"),
])
def test_paths_that_name_no_file_are_refused(tmp_path, monkeypatch, path, says):
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path)

    with pytest.raises(InvalidArgument) as refused:
        sql_inputs.expand([path], "FROM x")

    assert str(refused.value).startswith("sql: FROM x: ")
    assert says.format(root=tmp_path) in str(refused.value)


def test_a_url_stays_a_url_to_the_same_file():
    import fsspec

    with fsspec.open("memory://expand-test/x.parquet", "wb") as handle:
        handle.write(b"PAR1")
    try:
        [url] = sql_inputs.expand(["memory://expand-test/*.parquet"], "t")
        assert url.startswith("memory://") and url.endswith("/expand-test/x.parquet")
        with fsspec.open(url, "rb") as handle:
            assert handle.read() == b"PAR1"
        assert not sql_inputs.is_local(url)
    finally:
        fsspec.filesystem("memory").rm("/expand-test", recursive=True)


# ---- source_of: a table of the query ---------------------------------------------------

@pytest.fixture
def data_files(tmp_path):
    for name in ("a.parquet", "b.parquet", "a.csv", "b.tsv", "notes.data", "x.json"):
        (tmp_path / name).write_text("")
    return tmp_path


@pytest.mark.parametrize(("table", "format_", "names"), [
    ("'{d}/a.parquet'", "parquet", ["a.parquet"]),
    ('"{d}/a.csv"', "csv", ["a.csv"]),  # a quoted identifier is a path too
    ("'{d}/*.parquet'", "parquet", ["a.parquet", "b.parquet"]),
    ("read_parquet('{d}/notes.data')", "parquet", ["notes.data"]),  # the reader says
    ("read_parquet(['{d}/b.parquet', '{d}/a.parquet'])", "parquet", ["b.parquet", "a.parquet"]),
    ("read_csv(['{d}/a.csv', '{d}/b.tsv'])", "csv", ["a.csv", "b.tsv"]),
    ("read_csv_auto('{d}/notes.data')", "csv", ["notes.data"]),
    ("parquet_scan('{d}/a.parquet')", "parquet", ["a.parquet"]),
    ("'{d}/a.parquet' AS t", "parquet", ["a.parquet"]),
])
def test_a_table_names_its_files_and_format(data_files, table, format_, names):
    source = sql_inputs.source_of(table_of(f"SELECT * FROM {table.format(d=data_files)}"))

    assert source.format == format_
    assert source.files == [str(data_files / name) for name in names]
    assert source.local


@pytest.mark.parametrize(("table", "says"), [
    ("sales", "FROM sales: name a file in quotes, like FROM 'sales.parquet'"),
    ("read_csv('{d}/a.csv', header = true)",
     "options to read_csv() are not supported; the CSV dialect and types are detected"),
    ("read_parquet('{d}/a.parquet', filename = true)", "options to read_parquet() are not"),
    ("read_csv('{d}/a.csv', '{d}/b.tsv')", "options to read_csv() are not supported"),
    ("read_csv(name)", "name the files as a quoted path or a list of them"),
    ("read_csv([])", "name the files as a quoted path or a list of them"),
    ("read_json('{d}/x.json')", "is not a file; read files with a quoted path, read_parquet"),
    ("range(10)", "is not a file; read files with a quoted path"),
    ("(SELECT 1)", "is not a file to read"),
    ("'{d}/x.json'", "cannot tell the format of '{d}/x.json': name it .csv or .parquet"),
    ("'{d}/[ab].*'", "mixes Parquet and CSV files"),
    ("'{d}/missing.parquet'", "'{d}/missing.parquet' does not exist"),
])
def test_a_table_that_names_no_files_is_refused_saying_what_to_write(data_files, table, says):
    query = f"SELECT * FROM {table.format(d=data_files)}"

    with pytest.raises(InvalidArgument) as refused:
        sql_inputs.source_of(table_of(query))

    message = str(refused.value)
    assert message.startswith("sql: ") and "\n" not in message
    assert says.format(d=data_files) in message


def test_an_unquoted_file_name_gets_the_hint_to_quote_it():
    with pytest.raises(InvalidArgument) as refused:
        sql_inputs.source_of(table_of("SELECT * FROM sales.parquet"))

    assert "'sales.parquet'" in str(refused.value)
