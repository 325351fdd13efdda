"""Planning a SQL job on the submitter: check the query, split it, cut the input into parts.

Nothing is sent before the query has bound in DuckDB against the input's real
columns, so a syntax error, an unknown column or file, or a type error is one
line here. The part and merge queries are bound too, and the merge's output
columns are given the names and types the query has when DuckDB runs it whole,
so the answer of the split job and of one DuckDB process have one schema.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import sqlglot
from sqlglot import exp

from compute import duck, sql_inputs, sql_rewrite
from compute.errors import InvalidArgument
from compute.sql_rewrite import DIALECT, NotSplittable

#: Most parts one SQL job is split into. Each part's result travels to the merge
#: as a file reference (or inline when tiny), so the merge's message stays small.
MAX_PARTS = 10_000
#: All inline partials together stay under this many bytes (the merge's message).
INLINE_BUDGET = 4 * 1024 * 1024


@dataclass
class SqlPlan:
    query: str
    part_sql: str
    merge_sql: str
    format: str
    dialect: dict[str, Any] | None
    parts: list[list[dict[str, Any]]]
    small_files: list[str]
    partial_schema: list[list[str]]
    names: list[str]
    types: list[str]
    aggregated: bool
    inline_limit: int = field(default=64 * 1024)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _table_alias(table: exp.Table, path: str) -> None:
    """The name DuckDB gives ``FROM 'x/sales.parquet'`` (``sales``), kept as an alias."""
    if table.args.get("alias") is not None or not isinstance(table.this, exp.Identifier):
        return
    stem = PurePosixPath(path.split("?")[0]).name.split(".")[0]
    if stem and stem.isidentifier():
        table.set("alias", exp.TableAlias(this=exp.to_identifier(stem)))


def _reader_table(source: sql_inputs.Source, dialect: dict[str, Any] | None,
                  original: exp.Table) -> exp.Table:
    reader = sqlglot.parse_one(f"SELECT * FROM {sql_inputs.reader(source, dialect)}",
                               read=DIALECT).args["from_"].this
    reader.set("alias", original.args.get("alias"))
    return reader


def _aggregate_names(connection: Any) -> set[str]:
    rows = connection.execute("SELECT DISTINCT function_name FROM duckdb_functions() "
                              "WHERE function_type = 'aggregate'").fetchall()
    return {name.lower() for (name,) in rows}


def _describe(connection: Any, sql: str, where: str) -> tuple[list[str], list[str]]:
    try:
        rows = connection.execute(f"DESCRIBE {sql}").fetchall()
    except Exception as error:  # duckdb.Error: binder, catalog, conversion errors
        raise duck.engine_error(where, error) from None
    return [row[0] for row in rows], [row[1] for row in rows]


def plan(query: str, *, part_bytes: int = sql_inputs.DEFAULT_PART_BYTES,
         small_bytes: int = sql_inputs.DEFAULT_SMALL_BYTES,
         map_name: str | None = None) -> SqlPlan:
    """Check ``query`` and split it. ``map_name``: a registered Arrow function the parts
    apply to their rows first (the JSON spec's ``map``); its columns are not checked here."""
    select = sql_rewrite.parse(query)
    sql_rewrite.check_shape(select)
    scan_table = select.args["from_"].this
    if not isinstance(scan_table, exp.Table):
        raise NotSplittable("sql: FROM names no file to split")
    scan = sql_inputs.source_of(scan_table)
    _table_alias(scan_table, scan.files[0] if len(scan.files) == 1 else "")
    small_files: list[str] = []
    joined: list[tuple[exp.Table, sql_inputs.Source]] = []
    # Every other table (joined, or read by a subquery) is read whole by every part.
    for table in [t for t in select.find_all(exp.Table) if t is not scan_table]:
        source = sql_inputs.source_of(table)
        if set(source.files) & set(scan.files):
            raise NotSplittable(f"sql: {source.text} is the scanned input read a second time "
                                "(a self-join or a subquery over it); no part holds all of it")
        if not source.local:
            raise InvalidArgument(f"sql: {source.text}: a joined table must be a local "
                                  "file (every part reads it whole)")
        size = sql_inputs.size_of(source.files)
        if size > small_bytes:
            raise NotSplittable(
                f"sql: {source.text} is {size / 2**20:.1f} MiB; a table joined to the scan "
                f"is read whole by every part, so at most {small_bytes / 2**20:.0f} MiB: "
                "joins between two big tables are not split")
        joined.append((table, source))
        small_files += [sql_inputs.local_path(f) for f in source.files]
    scan_files = [sql_inputs.local_path(f) for f in scan.files if sql_inputs.is_local(f)]
    with tempfile.TemporaryDirectory(prefix="idle-accel-plan-") as scratch:
        connection = duck.connect(read=scan_files + small_files, scratch=scratch)
        try:
            dialect = (sql_inputs.sniff_csv(scan, connection, scratch)
                       if scan.format == "csv" else None)
            for table, source in joined:
                small_dialect = (sql_inputs.sniff_csv(source, connection, scratch)
                                 if source.format == "csv" else None)
                table.replace(_reader_table(source, small_dialect, table))
            _scan_table(connection, scan, dialect)
            return _bind(connection, select, scan, dialect, small_files,
                         part_bytes, map_name)
        finally:
            connection.close()


def _scan_table(connection: Any, scan: sql_inputs.Source, dialect: dict[str, Any] | None
                ) -> None:
    """``__scan``: an empty table with the input's columns, for binding."""
    if scan.format == "csv":
        assert dialect is not None
        columns = ", ".join(f'"{name}" {kind}' for name, kind in dialect["columns"].items())
        connection.execute(f"CREATE TEMP TABLE {duck.SCAN} ({columns})")
        return
    if sql_inputs.is_local(scan.files[0]):  # DuckDB's own reading, as the parts will do
        first = sql_inputs.quote(sql_inputs.local_path(scan.files[0]))
        try:
            connection.execute(f"CREATE TEMP TABLE {duck.SCAN} AS "
                               f"SELECT * FROM read_parquet({first}) LIMIT 0")
        except Exception as error:  # duckdb.Error: not Parquet
            raise duck.engine_error(f"sql: {scan.text}: {scan.files[0]!r}", error) from None
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        import fsspec

        with fsspec.open(scan.files[0], "rb") as handle:
            schema = pq.ParquetFile(handle).schema_arrow
    except (pa.ArrowException, OSError) as exc:
        raise InvalidArgument(f"sql: {scan.text}: {scan.files[0]!r} is not readable Parquet: "
                              f"{exc}") from None
    connection.register("__scan_schema", schema.empty_table())
    connection.execute(f"CREATE TEMP TABLE {duck.SCAN} AS SELECT * FROM __scan_schema")


def _bind(connection: Any, select: exp.Select, scan: sql_inputs.Source,
          dialect: dict[str, Any] | None, small_files: list[str],
          part_bytes: int, map_name: str | None) -> SqlPlan:
    whole = select.copy()
    alias = whole.args["from_"].this.args.get("alias")
    whole.args["from_"].set("this", exp.Table(this=exp.to_identifier(duck.SCAN),
                                              alias=alias))
    columns = {row[0] for row in connection.execute(
        f"DESCRIBE {duck.SCAN}").fetchall()}
    if map_name is None:
        names, types = _describe(connection, whole.sql(dialect=DIALECT), "sql")
    else:
        names, types = [i.alias_or_name for i in select.expressions], []
    split = sql_rewrite.split(select, columns, _aggregate_names(connection),
                              names if split_needs_names(select) else None)
    if map_name is None:
        _describe(connection, split.part_sql(), "sql (part query)")
        connection.execute(f"CREATE TEMP TABLE {duck.PARTIALS} AS "
                           f"SELECT * FROM ({split.part_sql()}) LIMIT 0")
        merge_sql = split.merge_sql()
        got_names, got_types = _describe(connection, merge_sql, "sql (merge query)")
        if split.aggregated and got_types != types:
            merge_sql = _cast(split.merge, types).sql(dialect=DIALECT)
            got_names, got_types = _describe(connection, merge_sql, "sql (merge query)")
        if (got_names, got_types) != (names, types):
            got = list(zip(got_names, got_types, strict=True))
            want = list(zip(names, types, strict=False))
            raise NotSplittable(f"sql: the split query answers {got} instead of {want}; "
                                "it is not split")
        schema = connection.execute(f"SELECT * FROM {duck.PARTIALS}"
                                    ).to_arrow_table().schema
        partial_schema = [[f.name, str(f.type)] for f in schema]
    else:
        merge_sql, partial_schema = split.merge_sql(), []
    parts = (sql_inputs.parquet_pieces(scan, part_bytes) if scan.format == "parquet"
             else sql_inputs.csv_pieces(scan, part_bytes))
    if len(parts) > MAX_PARTS:
        raise InvalidArgument(f"sql: {scan.text} makes {len(parts)} parts, more than "
                              f"{MAX_PARTS}; make each part bigger")
    return SqlPlan(query=select.sql(dialect=DIALECT), part_sql=split.part_sql(),
                   merge_sql=merge_sql, format=scan.format, dialect=dialect, parts=parts,
                   small_files=small_files, partial_schema=partial_schema, names=names,
                   types=types, aggregated=split.aggregated,
                   inline_limit=max(1024, min(64 * 1024, INLINE_BUDGET // len(parts))))


def split_needs_names(select: exp.Select) -> bool:
    return not any(isinstance(i, exp.Star) for i in select.expressions)


def _cast(merge: exp.Select, types: list[str]) -> exp.Select:
    """``merge`` with each output column cast to the type the whole query gives it."""
    cast = merge.copy()
    items = []
    for item, kind in zip(cast.expressions, types, strict=True):
        inner = item.this if isinstance(item, exp.Alias) else item
        typed = exp.cast(inner, exp.DataType.build(kind, dialect=DIALECT))
        items.append(exp.alias_(typed, item.alias_or_name, quoted=True))
    cast.set("expressions", items)
    return cast


def output_folder(output: str, token: str) -> str:
    """Where the parts of one job leave results too big to travel inline."""
    return f"{output}.parts/{token}" if "://" in output else str(
        Path(output).with_name(Path(output).name + ".parts") / token)
