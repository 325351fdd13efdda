"""Data processing in SQL: one SELECT over Parquet or CSV, split across volunteers, run by DuckDB.

``idle-accel submit sql "SELECT country, sum(amount) AS total FROM 'sales/*.parquet'
GROUP BY country" --output totals.parquet`` (or :func:`compute.plans.sql`) checks
and splits the query on the submitter (``compute.sql_plan``), then sends one
``compute.data.sql_part`` per slice of the input (Parquet row groups, CSV byte
ranges) and one ``compute.data.sql_merge`` that combines the parts' partial
results and writes the answer (Parquet, JSON, or CSV by the output's name).

Each part runs DuckDB with the worker's share of cores and memory, locked to
the files it names (``compute.duck``). A part's result travels inline (Arrow,
base64) when small, else as a Parquet file beside the output
(``OUTPUT.parts/<job>/``), which the merge deletes once the answer is written.

The JSON spec of earlier versions (``submit aggregate``) is translated to SQL
by :func:`spec_to_sql`; its ``map`` (a registered Arrow function) runs on each
part's rows before the query.
"""

from __future__ import annotations

import base64
import io
import json
import math
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from compute import duck, sql_inputs, validate
from compute.duck import PARTIALS, SCAN
from compute.errors import InvalidArgument
from compute.sdk import compute_task

AGGREGATIONS = {"sum": "sum", "count": "count", "min": "min", "max": "max", "mean": "avg"}
OPERATORS = ("==", "!=", "<", "<=", ">", ">=")
MAX_PIECES = 10_000
MAX_SQL = 100_000
#: Largest byte offset, row or row group number a piece may name.
MAX_OFFSET = 2**53
_PART_FILE = re.compile(r"part-\d{5}\.parquet")

_MAPS: dict[str, Callable[[pa.Table], pa.Table]] = {}


def register_map(name: str) -> Callable[[Callable[[pa.Table], pa.Table]], Any]:
    """Register ``fn(table) -> table`` under ``name`` for specs' ``"map"``.

    The module that registers it must be imported by the workers
    (``idle-accel worker --include team_maps``).
    """
    def add(function: Callable[[pa.Table], pa.Table]) -> Callable[[pa.Table], pa.Table]:
        _MAPS[name] = function
        return function
    return add


# ---- the JSON spec of earlier versions, as SQL --------------------------------------

def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float)  # bool is an int


def check_spec(spec: Any, task: str = "data") -> dict[str, Any]:
    """``spec`` if it is a well-formed JSON spec, else InvalidArgument (one line)."""
    where = f"{task}: argument 'spec'"
    if not isinstance(spec, dict):
        raise InvalidArgument(f"{where} must be a JSON object; got {validate.shown(spec)}")
    unknown = set(spec) - {"filter", "group_by", "aggregate", "map"}
    if unknown:
        raise InvalidArgument(f"{where} has unknown keys {sorted(unknown)}; allowed: "
                              "filter, group_by, aggregate, map")
    aggregate = spec.get("aggregate")
    names = ", ".join(AGGREGATIONS)
    if not isinstance(aggregate, dict) or not aggregate:
        raise InvalidArgument(f"{where}: 'aggregate' must map output names to "
                              f"[column, one of {names}]")
    for out, rule in aggregate.items():
        if (not isinstance(rule, list) or len(rule) != 2 or rule[1] not in AGGREGATIONS
                or not isinstance(rule[0], str)):
            raise InvalidArgument(f"{where}: aggregate {out!r} must be [column, one of "
                                  f"{names}]; got {validate.shown(rule)}")
        if rule[0] == "*" and rule[1] != "count":
            raise InvalidArgument(f"{where}: aggregate {out!r}: '*' only counts rows")
    group_by = spec.get("group_by", [])
    if not isinstance(group_by, list) or not all(isinstance(c, str) for c in group_by):
        raise InvalidArgument(f"{where}: 'group_by' must be a list of column names")
    if len(set(group_by)) != len(group_by) or "*" in group_by:
        raise InvalidArgument(f"{where}: 'group_by' names a column twice, or '*'; "
                              f"got {validate.shown(group_by)}")
    filters = spec.get("filter", [])
    if not isinstance(filters, list):
        raise InvalidArgument(f"{where}: 'filter' must be a list of [column, op, value]")
    for rule in filters:
        if (not isinstance(rule, list) or len(rule) != 3 or not isinstance(rule[0], str)
                or rule[1] not in (*OPERATORS, "in")):
            raise InvalidArgument(f"{where}: filter {validate.shown(rule)} must be "
                                  f"[column, one of {', '.join([*OPERATORS, 'in'])}, value]")
        value = rule[2]
        if rule[1] == "in" and not (isinstance(value, list) and all(map(_scalar, value))):
            raise InvalidArgument(f"{where}: filter {validate.shown(rule)}: 'in' takes a list "
                                  "of values (text, numbers, true/false or null)")
        if rule[1] != "in" and not _scalar(value):
            raise InvalidArgument(f"{where}: filter {validate.shown(rule)}: compare with one "
                                  "value (text, a number, true/false or null)")
        numbers = value if isinstance(value, list) else [value]
        if any((isinstance(v, float) and not math.isfinite(v))
               or (isinstance(v, int) and abs(v) >= 2**63) for v in numbers):
            raise InvalidArgument(f"{where}: filter {validate.shown(rule)}: numbers must be "
                                  "finite and fit 64 bits")
    if "map" in spec and not isinstance(spec["map"], str):
        raise InvalidArgument(f"{where}: 'map' must be the name of a registered function")
    return spec


def _literal(value: Any) -> str:
    from sqlglot import exp

    return exp.convert(value).sql(dialect="duckdb")


def _name(column: str) -> str:
    return '"' + column.replace('"', '""') + '"'


def spec_to_sql(source: str, spec: dict[str, Any]) -> str:
    """The SQL that answers a JSON spec over ``source`` (groups sorted, nulls last)."""
    spec = check_spec(spec)
    group_by = spec.get("group_by", [])
    items = [_name(column) for column in group_by]
    for out, (column, how) in spec["aggregate"].items():
        argument = "*" if column == "*" else _name(column)
        items.append(f"{AGGREGATIONS[how]}({argument}) AS {_name(out)}")
    tests = []
    for column, op, value in spec.get("filter", []):
        if op == "in":
            listed = ", ".join(_literal(v) for v in value)
            tests.append(f"{_name(column)} IN ({listed})" if value else "false")
        else:
            tests.append(f"{_name(column)} {'=' if op == '==' else op} {_literal(value)}")
    query = f"SELECT {', '.join(items)} FROM {_literal(source)}"
    if tests:
        query += " WHERE " + " AND ".join(tests)
    if group_by:
        keys = ", ".join(_name(c) for c in group_by)
        query += f" GROUP BY {keys} ORDER BY " + ", ".join(
            f"{_name(c)} ASC NULLS LAST" for c in group_by)
    return query


# ---- the arguments a part or the merge accepts ---------------------------------------

def one_select(task: str, arg: str, sql: str) -> str:
    """``sql`` if it is exactly one SELECT statement (what the planner writes), else
    InvalidArgument: no empty text or comment, no SET, CREATE or second statement."""
    import duckdb

    where = f"{task}: argument '{arg}': 'sql'"
    if not 0 < len(sql) <= MAX_SQL:
        raise InvalidArgument(f"{where} must be 1 to {MAX_SQL} characters")
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as error:
        raise InvalidArgument(f"{where} is not SQL: {duck.one_line(error)}") from None
    if len(statements) != 1 or statements[0].type != duckdb.StatementType.SELECT:
        kinds = [statement.type.name for statement in statements]
        raise InvalidArgument(f"{where} must be exactly one SELECT statement; got "
                              f"{kinds or 'none'}")
    return sql


def check_query(task: str, query: Any) -> dict[str, Any]:
    """A part's query: ``{"sql", "format", "dialect", "small_files", "inline_limit"}``
    (and ``"map"``), as ``compute.plans.sql`` makes it."""
    where = f"{task}: argument 'query'"
    query = validate.records(task, "query", [query], {
        "sql": str, "format": str, "dialect": (dict, type(None)), "small_files": list,
        "inline_limit": int})[0]
    one_select(task, "query", query["sql"])
    if query["format"] not in ("parquet", "csv") or (query["format"] == "csv") != bool(
            query["dialect"]):
        raise InvalidArgument(f"{where}: 'format' must be parquet (no dialect) or csv (with "
                              f"its dialect); got {validate.shown(query['format'])}")
    if query["dialect"] is not None:
        dialect = query["dialect"]
        if not (isinstance(dialect.get("columns"), dict) and dialect["columns"] and all(
                isinstance(k, str) and isinstance(v, str)
                for k, v in dialect["columns"].items())
                and isinstance(dialect.get("header"), bool)
                and all(isinstance(dialect.get(k), str | type(None)) for k in (
                    "delim", "quote", "escape", "comment", "dateformat", "timestampformat"))):
            raise InvalidArgument(f"{where}: 'dialect' must hold 'columns' (name -> type), "
                                  f"'header' and the CSV options as text")
    for path in query["small_files"]:
        validate.path(task, "query.small_files", path, local=True)
    if not 0 <= query["inline_limit"] <= 1 << 20:
        raise InvalidArgument(f"{where}: 'inline_limit' must be 0 to {1 << 20} bytes")
    if "map" in query and not isinstance(query["map"], str):
        raise InvalidArgument(f"{where}: 'map' must be the name of a registered function")
    return query


def _span(value: Any) -> bool:
    return (isinstance(value, list) and len(value) == 2
            and all(validate.is_a(v, int) and 0 <= v <= MAX_OFFSET for v in value)
            and value[0] <= value[1])


def check_pieces(task: str, pieces: Any, fmt: str) -> list[dict[str, Any]]:
    """A part's slices: ``{"path", "groups", "rows"}`` (Parquet) or ``{"path", "bytes"}``."""
    keys = {"path", "groups", "rows"} if fmt == "parquet" else {"path", "bytes"}
    shape = ("{\"path\", \"groups\": [a, b], \"rows\": [a, b]}" if fmt == "parquet"
             else "{\"path\", \"bytes\": [a, b]}")
    if not (isinstance(pieces, list) and 0 < len(pieces) <= MAX_PIECES):
        raise InvalidArgument(f"{task}: argument 'pieces' must be a list of 1 to {MAX_PIECES} "
                              f"slices {shape}; got {validate.shown(pieces)}")
    for index, piece in enumerate(pieces):
        if not (isinstance(piece, dict) and set(piece) == keys
                and all(_span(piece[k]) for k in keys - {"path"})):
            raise InvalidArgument(f"{task}: argument 'pieces': item {index} must be {shape} "
                                  f"with whole numbers a <= b; got {validate.shown(piece)}")
        validate.path(task, "pieces.path", piece["path"])
    return pieces


# ---- a part (on a volunteer) --------------------------------------------------------

def _mapped(connection: Any, scan: str, name: str, task: str) -> None:
    function = _MAPS.get(name)
    if function is None:
        raise InvalidArgument(f"{task}: argument 'query': no map function {name!r} is "
                              f"registered on this worker (known: {sorted(_MAPS)})")
    connection.register(SCAN, function(connection.execute(scan).to_arrow_table()))


def run_part(query: dict[str, Any], pieces: list[dict[str, Any]], task: str = "data"
             ) -> pa.Table:
    """The part query over ``pieces``, in a locked DuckDB with this worker's share."""
    threads, memory = duck.share_of_machine()
    with tempfile.TemporaryDirectory(prefix="idle-accel-part-") as scratch:
        reads = sql_inputs.local_reads(pieces, query["format"]) + query["small_files"]
        connection = duck.connect(read=reads, scratch=scratch, threads=threads,
                                  memory_bytes=memory)
        try:
            scan = sql_inputs.scan_sql(pieces, query["format"], query["dialect"],
                                       Path(scratch), connection)
            if query.get("map"):
                _mapped(connection, scan, query["map"], task)
            else:
                connection.execute(f"CREATE TEMP VIEW {SCAN} AS {scan}")
            return connection.execute(query["sql"]).to_arrow_table()
        except (OSError, pa.ArrowException) as error:
            raise InvalidArgument(f"{task}: argument 'pieces': cannot read "
                                  f"{pieces[0]['path']!r}: {error}") from None
        except InvalidArgument:
            raise
        except Exception as error:  # duckdb.Error: bad rows, types, missing files
            files = ", ".join(sorted({p["path"] for p in pieces}))[:300]
            raise duck.engine_error(f"{task}: argument 'query' over {files}", error) from None
        finally:
            connection.close()


def _ipc(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


@compute_task("compute.data.sql_part")
def sql_part(self, query: dict, pieces: list, destination: str) -> dict:
    """Run one part of a SQL job; its rows inline when small, else in ``destination``."""
    query = check_query(self.name, query)
    pieces = check_pieces(self.name, pieces, query["format"])
    destination = validate.path(self.name, "destination", destination)
    if not _PART_FILE.fullmatch(destination.rsplit("/", 1)[-1]):
        raise InvalidArgument(f"{self.name}: argument 'destination' must name a "
                              f"part-NNNNN.parquet file; got {validate.shown(destination)}")
    table = run_part(query, pieces, self.name)
    result = {"hostname": self.request.hostname, "rows": table.num_rows, "inline": None,
              "file": None}
    encoded = _ipc(table)
    if len(encoded) <= query["inline_limit"]:
        result["inline"] = base64.b64encode(encoded).decode()
        return result
    try:
        fs, bare = fsspec.core.url_to_fs(destination)
        fs.makedirs(bare.rsplit("/", 1)[0], exist_ok=True)
        with fs.open(bare, "wb") as handle:
            pq.write_table(table, handle)
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise InvalidArgument(f"{self.name}: argument 'destination': cannot write "
                              f"{destination!r}: {exc}") from None
    result["file"] = destination
    return result


# ---- the merge (on a volunteer) -----------------------------------------------------

def check_merge(task: str, merge: Any) -> dict[str, Any]:
    """``{"sql", "schema": [[name, arrow type], ...], "folder"}`` as plans.sql makes it."""
    merge = validate.records(task, "merge", [merge], {"sql": str, "schema": list,
                                                      "folder": str})[0]
    one_select(task, "merge", merge["sql"])
    if not all(isinstance(f, list) and len(f) == 2 and all(isinstance(x, str) for x in f)
               for f in merge["schema"]):
        raise InvalidArgument(f"{task}: argument 'merge': 'schema' must be [[name, type], "
                              f"...]; got {validate.shown(merge['schema'])}")
    validate.path(task, "merge.folder", merge["folder"])
    return merge


def _partial(task: str, index: int, part: Any, merge: dict[str, Any]) -> pa.Table:
    """Part ``index``'s rows: inline, or the file the plan named for it, and no other."""
    where = f"{task}: argument 'parts': item {index}"
    if not (isinstance(part, dict) and isinstance(part.get("hostname"), str)
            and isinstance(part.get("inline"), str | type(None))
            and isinstance(part.get("file"), str | type(None))
            and (part.get("inline") is None) != (part.get("file") is None)):
        raise InvalidArgument(f"{where} must be a part's result (hostname, and inline rows or "
                              f"a file); got {validate.shown(part)}")
    try:
        if part["inline"] is not None:
            table = pa.ipc.open_stream(base64.b64decode(part["inline"], validate=True)
                                       ).read_all()
        else:
            expected = f"{merge['folder']}/part-{index:05d}.parquet"
            if part["file"] != expected:
                raise InvalidArgument(f"{where}: its file must be {expected!r}; got "
                                      f"{validate.shown(part['file'])}")
            with fsspec.open(expected, "rb") as handle:
                table = pq.read_table(handle)
        table.validate(full=True)
    except (ValueError, OSError, pa.ArrowException) as exc:
        raise InvalidArgument(f"{where}: its rows are not readable: {exc}") from None
    got = [[f.name, str(f.type)] for f in table.schema]
    if merge["schema"] and got != merge["schema"]:
        raise InvalidArgument(f"{where}: its columns {got} are not the part query's "
                              f"{merge['schema']}")
    return table


def write_output(table: pa.Table, output: str, task: str = "data") -> None:
    """Write ``table`` to ``output``: JSON (a list of records), Parquet, or else CSV."""
    lowered = output.lower()
    try:
        with fsspec.open(output, "wb") as handle:
            if lowered.endswith(".json"):
                handle.write(json.dumps(table.to_pylist(), default=_plain).encode())
            elif lowered.endswith((".parquet", ".pq")):
                pq.write_table(table, handle)
            else:
                pacsv.write_csv(table, handle)
    except (OSError, ValueError, ImportError, pa.ArrowException) as exc:
        raise InvalidArgument(f"{task}: argument 'output': cannot write {output!r}: "
                              f"{exc}") from None


def _plain(value: Any) -> Any:
    return None if isinstance(value, float) and math.isnan(value) else str(value)


def run_merge(tables: list[pa.Table], sql: str, task: str = "data") -> pa.Table:
    """The merge query over every part's rows, in a locked DuckDB."""
    threads, memory = duck.share_of_machine()
    with tempfile.TemporaryDirectory(prefix="idle-accel-merge-") as scratch:
        connection = duck.connect(scratch=scratch, threads=threads, memory_bytes=memory)
        try:
            try:
                partials = pa.concat_tables(tables)
            except pa.ArrowInvalid as exc:
                raise InvalidArgument(f"{task}: argument 'parts': the parts' columns differ: "
                                      f"{exc}") from None
            connection.register(PARTIALS, partials)
            return connection.execute(sql).to_arrow_table()
        except InvalidArgument:
            raise
        except Exception as error:  # duckdb.Error
            raise duck.engine_error(f"{task}: argument 'merge': the merge query",
                                    error) from None
        finally:
            connection.close()


@compute_task("compute.data.sql_merge")
def sql_merge(self, parts: list, merge: dict, output: str) -> dict:
    """Combine every part's rows with the merge query and write the answer to ``output``."""
    merge = check_merge(self.name, merge)
    output = validate.path(self.name, "output", output)
    if not isinstance(parts, list) or not parts:
        raise InvalidArgument(f"{self.name}: argument 'parts' must be the list of the parts' "
                              f"results; got {validate.shown(parts)}")
    tables = [_partial(self.name, index, part, merge) for index, part in enumerate(parts)]
    answer = run_merge(tables, merge["sql"], self.name)
    write_output(answer, output, self.name)
    if any(part["file"] for part in parts):
        try:
            fs, bare = fsspec.core.url_to_fs(merge["folder"])
            fs.rm(bare, recursive=True)
        except (OSError, ValueError):
            pass  # only tidying: the answer is written
    return {"hostname": self.request.hostname, "output": output, "rows": answer.num_rows,
            "parts": len(parts), "partial_rows": sum(t.num_rows for t in tables),
            "by_file": sum(1 for p in parts if p["file"]),
            "workers": sorted({part["hostname"] for part in parts})}


def sql(app: Any, query: str, output: str, **options: Any) -> Any:
    """Submit ``query`` as a job (``compute.plans.sql``): ``compute.data.sql(app, q, out)``."""
    from compute import plans

    return plans.sql(app, query, output, **options)
