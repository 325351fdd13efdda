"""The files a query reads: which they are, how they split into parts, how a part reads its slice.

A table in a query is a quoted path or glob (``'sales/*.parquet'``), a URL any
fsspec protocol reads, or ``read_parquet(...)``/``read_csv(...)`` of one of
those (or of a list of them), without options. The scanned table (the FROM)
is split: Parquet by row groups (grouped up to ``part_bytes`` of compressed
data, small files together), CSV by byte ranges cut at line ends (so a quoted
field must not span lines). Joined tables are small: every part reads them whole.

Local files are read by DuckDB itself; other URLs through fsspec (Parquet row
groups with pyarrow, CSV slices copied to the part's scratch folder).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import fsspec

from compute.errors import InvalidArgument

if TYPE_CHECKING:  # sqlglot is for planning: a worker never imports it
    from sqlglot import exp

DEFAULT_PART_BYTES = 64 * 1024 * 1024
#: A joined table is shipped to every part: at most this many bytes of files.
DEFAULT_SMALL_BYTES = 64 * 1024 * 1024
_READERS = {"read_parquet": "parquet", "parquet_scan": "parquet", "read_csv": "csv",
            "read_csv_auto": "csv"}


@dataclass
class Source:
    """One table of a query: its format and the files it names (absolute paths or URLs)."""

    format: str
    files: list[str]
    text: str  # as the query wrote it, for messages

    @property
    def local(self) -> bool:
        return all(is_local(f) for f in self.files)


def is_local(path: str) -> bool:
    return "://" not in path or path.startswith("file://")


def local_path(path: str) -> str:
    return path[len("file://"):] if path.startswith("file://") else path


def file_format(path: str) -> str:
    lowered = path.lower().split("?")[0]
    if lowered.endswith((".parquet", ".pq")):
        return "parquet"
    if lowered.endswith((".csv", ".tsv", ".txt")):
        return "csv"
    raise InvalidArgument(f"sql: cannot tell the format of {path!r}: name it .csv or .parquet, "
                          "or read it with read_csv(...) or read_parquet(...)")


def _literal_paths(node: exp.Expression, text: str) -> list[str]:
    from sqlglot import exp

    if isinstance(node, exp.Literal) and node.is_string:
        return [node.this]
    if isinstance(node, exp.Array) and node.expressions and all(
            isinstance(e, exp.Literal) and e.is_string for e in node.expressions):
        return [e.this for e in node.expressions]
    raise InvalidArgument(f"sql: {text}: name the files as a quoted path or a list of them")


def source_of(table: exp.Expression) -> Source:
    """The files a table expression of the query reads (globs expanded, paths absolute)."""
    from sqlglot import exp

    from compute.sql_rewrite import DIALECT

    text = table.sql(dialect=DIALECT)
    text = text if len(text) <= 80 else text[:77] + "..."
    inner = table.this if isinstance(table, exp.Table) else table
    if isinstance(inner, exp.Identifier):
        if not inner.quoted:
            parts = [table.args[k].name for k in ("catalog", "db")
                     if isinstance(table, exp.Table) and table.args.get(k) is not None]
            name = ".".join([*parts, inner.name])
            like = name if parts else f"{name}.parquet"
            raise InvalidArgument(f"sql: FROM {name}: name a file in quotes, like "
                                  f"FROM '{like}'")
        paths, kind = [inner.name], None
    elif isinstance(inner, exp.Func):
        name = (inner.this if isinstance(inner, exp.Anonymous) else inner.sql_name()).lower()
        if name not in _READERS:
            raise InvalidArgument(f"sql: {text} is not a file; read files with a quoted path, "
                                  "read_parquet(...) or read_csv(...)")
        arguments = ([inner.this] if not isinstance(inner, exp.Anonymous) else []) + list(
            inner.expressions)
        arguments = [a for a in arguments if a is not None]
        if len(arguments) != 1:
            raise InvalidArgument(f"sql: {text}: options to {name}() are not supported; "
                                  "the CSV dialect and types are detected")
        paths, kind = _literal_paths(arguments[0], text), _READERS[name]
    else:
        raise InvalidArgument(f"sql: {text} is not a file to read")
    files = expand(paths, text)
    kinds = {kind or file_format(f) for f in files}
    if len(kinds) != 1:
        raise InvalidArgument(f"sql: {text} mixes Parquet and CSV files")
    return Source(format=kinds.pop(), files=files, text=text)


def expand(paths: list[str], text: str) -> list[str]:
    """Every file ``paths`` name, globs expanded, sorted; none found is an error."""
    files: list[str] = []
    for path in paths:
        try:
            fs, bare = fsspec.core.url_to_fs(path)
        except (ValueError, ImportError) as exc:
            raise InvalidArgument(f"sql: {text}: cannot open {path!r}: {exc}") from None
        protocol = fs.protocol[0] if isinstance(fs.protocol, tuple | list) else fs.protocol
        if any(ch in bare for ch in "*?["):
            found = sorted(fs.glob(bare))
        else:
            found = [bare] if fs.exists(bare) else []
        if not found:
            raise InvalidArgument(f"sql: {text}: {path!r} does not exist")
        for name in found:
            if fs.isdir(name):
                raise InvalidArgument(f"sql: {text}: {name!r} is a folder; use a glob like "
                                      f"'{name}/*.parquet'")
            files.append(os.path.abspath(name) if protocol in ("file", "local")
                         else f"{protocol}://{name}")
    return files


def size_of(files: list[str]) -> int:
    total = 0
    for name in files:
        fs, bare = fsspec.core.url_to_fs(name)
        total += int(fs.size(bare))
    return total


# ---- CSV: the dialect and the columns, detected once on the submitter ---------------

def sniff_csv(source: Source, connection: Any, scratch: str) -> dict[str, Any]:
    """DuckDB's reading of the first CSV file: dialect and column types, to give every part.
    A remote file's first MiB is copied into ``scratch`` (where ``connection`` may read)."""
    first = source.files[0]
    sample = local_path(first)
    cleanup = None
    if not is_local(first):  # the first MiB, copied locally, for DuckDB to look at
        with fsspec.open(first, "rb") as handle:
            head = handle.read(1024 * 1024)
        with tempfile.NamedTemporaryFile(suffix=".csv", dir=scratch, delete=False) as cleanup:
            cleanup.write(head[: head.rfind(b"\n") + 1] if len(head) == 1024 * 1024 else head)
        sample = cleanup.name
    try:
        row = connection.execute("SELECT * FROM sniff_csv(?)", [sample]).fetchone()
        names = [d[0] for d in connection.description]
    except Exception as error:  # duckdb.Error: bad CSV, unreadable file
        from compute.duck import one_line
        raise InvalidArgument(f"sql: {source.text}: {first!r} is not readable CSV: "
                              f"{one_line(error)}") from None
    finally:
        if cleanup is not None:
            os.unlink(cleanup.name)
    found = {name: (None if value == "(empty)" else value)  # DuckDB's word for none
             for name, value in zip(names, row, strict=True)}
    if found["SkipRows"]:
        raise InvalidArgument(f"sql: {source.text}: the CSV starts with {found['SkipRows']} "
                              "lines that are not rows; remove them")
    return {"delim": found["Delimiter"], "quote": found["Quote"], "escape": found["Escape"],
            "comment": found["Comment"], "header": bool(found["HasHeader"]),
            "columns": {c["name"]: c["type"] for c in found["Columns"]},
            "dateformat": found["DateFormat"], "timestampformat": found["TimestampFormat"]}


def quote(value: str) -> str:
    """``value`` as a SQL string literal (a path in a query)."""
    return "'" + value.replace("'", "''") + "'"


def csv_reader(paths: list[str], dialect: dict[str, Any], *, header: bool) -> str:
    """``read_csv([paths], ...)`` with every option fixed: no detection, the same types."""
    options = [f"auto_detect=false, header={'true' if header else 'false'}"]
    for key in ("delim", "quote", "escape", "comment", "dateformat", "timestampformat"):
        if dialect.get(key):
            options.append(f"{key}={quote(dialect[key])}")
    columns = ", ".join(f"{quote(name)}: {quote(kind)}"
                        for name, kind in dialect["columns"].items())
    options.append(f"columns={{{columns}}}")
    listed = "[" + ", ".join(quote(p) for p in paths) + "]"
    return f"read_csv({listed}, {', '.join(options)})"


def reader(source: Source, dialect: dict[str, Any] | None) -> str:
    """SQL that reads all of a (local) small table, as every part does."""
    paths = [local_path(f) for f in source.files]
    if source.format == "parquet":
        return "read_parquet([" + ", ".join(quote(p) for p in paths) + "])"
    assert dialect is not None
    return csv_reader(paths, dialect, header=dialect["header"])


# ---- splitting the scanned table into parts ----------------------------------------

def stored_bytes(group: Any) -> int:
    """A row group's bytes in the file (compressed), from its column chunks' metadata."""
    return sum(group.column(i).total_compressed_size for i in range(group.num_columns))


def parquet_pieces(source: Source, part_bytes: int) -> list[list[dict[str, Any]]]:
    """Parts of whole row groups: ``{"path", "groups": [a, b], "rows": [r0, r1]}`` pieces."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    parts: list[list[dict[str, Any]]] = []
    current: list[dict[str, Any]] = []
    size = 0
    for path in source.files:
        try:
            with fsspec.open(path, "rb") as handle:
                meta = pq.ParquetFile(handle).metadata
        except (pa.ArrowException, OSError) as exc:
            raise InvalidArgument(f"sql: {source.text}: {path!r} is not readable Parquet: "
                                  f"{exc}") from None
        row = 0
        for index in range(meta.num_row_groups):
            group = meta.row_group(index)
            stored = stored_bytes(group)
            if current and size + stored > part_bytes:
                parts.append(current)
                current, size = [], 0
            last = current[-1] if current else None
            if last is not None and last["path"] == path and last["groups"][1] == index:
                last["groups"][1] = index + 1
                last["rows"][1] = row + group.num_rows
            else:
                current.append({"path": path, "groups": [index, index + 1],
                                "rows": [row, row + group.num_rows]})
            size += stored
            row += group.num_rows
    if current:
        parts.append(current)
    return parts


def csv_pieces(source: Source, part_bytes: int) -> list[list[dict[str, Any]]]:
    """Parts of byte ranges ``{"path", "bytes": [a, b]}``: a line belongs to the range it
    starts in (after the first line when the files have a header)."""
    parts = []
    for path in source.files:
        fs, bare = fsspec.core.url_to_fs(path)
        size = int(fs.size(bare))
        for start in range(0, max(size, 1), part_bytes):
            parts.append([{"path": path, "bytes": [start, min(size, start + part_bytes)]}])
    return parts


def read_range(path: str, start: int, end: int, header: bool) -> bytes:
    """The lines that start in ``[start, end)`` of ``path`` (the header line left out),
    read in one block: the line that started before ``start`` is the previous part's,
    the one running past ``end`` is this part's."""
    with fsspec.open(path, "rb") as handle:
        if start == 0:
            if header:
                handle.readline()
        else:
            handle.seek(start - 1)
            handle.readline()
        begin = handle.tell()
        if begin >= end:
            return b""
        body = handle.read(end - begin)
        if body and not body.endswith(b"\n"):
            body += handle.readline()
    return body


def local_reads(pieces: list[dict[str, Any]], fmt: str) -> list[str]:
    """The local files DuckDB itself reads for ``pieces`` (the rest comes through fsspec)."""
    return [local_path(p["path"]) for p in pieces if fmt == "parquet" and is_local(p["path"])]


def scan_sql(pieces: list[dict[str, Any]], fmt: str, dialect: dict[str, Any] | None,
             scratch: Path, connection: Any) -> str:
    """A query over the rows of ``pieces``: CSV slices copied into ``scratch``, remote
    Parquet row groups registered in ``connection`` as Arrow tables."""
    selects = []
    for number, piece in enumerate(pieces):
        path = piece["path"]
        if fmt == "parquet" and is_local(path):
            first, last = piece["rows"]
            selects.append(f"SELECT * EXCLUDE (file_row_number) FROM read_parquet("
                           f"{quote(local_path(path))}, file_row_number=true) WHERE "
                           f"file_row_number >= {int(first)} AND file_row_number < {int(last)}")
        elif fmt == "parquet":
            import pyarrow.parquet as pq

            with fsspec.open(path, "rb") as handle:
                table = pq.ParquetFile(handle).read_row_groups(list(range(*piece["groups"])))
            name = f"__piece{number}"
            connection.register(name, table)
            selects.append(f"SELECT * FROM {name}")
        else:
            assert dialect is not None
            local = scratch / f"slice-{number}.csv"
            local.write_bytes(read_range(path, *piece["bytes"], header=dialect["header"]))
            selects.append(f"SELECT * FROM {csv_reader([str(local)], dialect, header=False)}")
    return " UNION ALL ".join(selects)
