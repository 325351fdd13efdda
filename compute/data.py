"""Data processing: chunked map/reduce over CSV and Parquet with pyarrow, equal to pandas.

A job reads one file (a path or an fsspec URL), splits it into chunks (Parquet
row groups, or CSV byte ranges cut at line ends), and each chunk becomes one
small task on whichever volunteer is idle: map (optional registered
function), filter, then partial group-by aggregates. One assemble task merges
the partials and writes the result (CSV, Parquet or JSON by extension).
Only references and partial aggregates travel through Redis.

Spec (JSON)::

    {"filter": [["amount", ">", 10], ["country", "in", ["fr", "de"]]],
     "group_by": ["country"],
     "aggregate": {"total": ["amount", "sum"], "n": ["*", "count"],
                   "avg": ["amount", "mean"]},
     "map": "team.add_vat"}          # optional, see register_map

Aggregations: sum, count (non-null values; ``*`` counts rows), min, max,
mean. CSV chunks are cut at newlines, so a quoted field must not span lines.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Callable
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from compute import validate
from compute.errors import InvalidArgument
from compute.sdk import compute_task

AGGREGATIONS = ("sum", "count", "min", "max", "mean")
OPERATORS = {"==": pc.equal, "!=": pc.not_equal, "<": pc.less, "<=": pc.less_equal,
             ">": pc.greater, ">=": pc.greater_equal}
DEFAULT_CHUNK_BYTES = 8 * 1024 * 1024
#: Largest byte offset or row group number a chunk may name.
MAX_OFFSET = 2**53
#: Errors Arrow raises on data it cannot read, convert or compute (bad input, not a bug here).
_ARROW_ERRORS = (pa.ArrowException, OverflowError)

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


# ---- planning (on the submitter) ----------------------------------------------------

def file_format(source: str) -> str:
    lowered = source.lower().split("?")[0]
    if lowered.endswith((".parquet", ".pq")):
        return "parquet"
    if lowered.endswith((".csv", ".csv.txt", ".tsv")):
        return "csv"
    raise InvalidArgument(f"data: cannot tell the format of {source!r}: "
                          "name it .csv or .parquet")


def _open(source: str, task: str) -> Any:
    try:
        return fsspec.open(source, "rb").open()
    except FileNotFoundError:
        raise InvalidArgument(f"{task}: argument 'source': {source!r} does not exist") from None
    except (OSError, ValueError, ImportError) as exc:  # ImportError: a protocol's package
        raise InvalidArgument(f"{task}: argument 'source': cannot open {source!r}: "
                              f"{exc}") from None


def csv_schema(source: str) -> dict[str, str]:
    """Column name -> Arrow type of a CSV, inferred once from its first block."""
    with _open(source, "data") as handle:
        head = handle.read(1024 * 1024)
    if not head.strip():
        raise InvalidArgument(f"data: {source!r} is empty")
    if len(head) == 1024 * 1024:
        head = head[: head.rfind(b"\n") + 1]
    try:
        table = pacsv.read_csv(io.BytesIO(head), convert_options=pacsv.ConvertOptions(
            strings_can_be_null=True))
    except pa.ArrowInvalid as exc:
        raise InvalidArgument(f"data: {source!r} is not readable CSV: {exc}") from None
    return {field.name: str(field.type) for field in table.schema}


def plan(source: str, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> list[dict[str, Any]]:
    """The chunks of ``source``: one per Parquet row group, or CSV byte ranges."""
    kind = file_format(source)
    if kind == "parquet":
        with _open(source, "data") as handle:
            try:
                groups = pq.ParquetFile(handle).metadata.num_row_groups
            except pa.ArrowInvalid as exc:
                raise InvalidArgument(f"data: {source!r} is not Parquet: {exc}") from None
        return [{"row_group": index} for index in range(groups)]
    fs, path = fsspec.core.url_to_fs(source)
    size = int(fs.size(path))
    return [{"start": start, "end": min(size, start + chunk_bytes)}
            for start in range(0, size, chunk_bytes)]


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float)  # bool is an int


def check_spec(spec: Any, columns: list[str] | None = None, task: str = "data"
               ) -> dict[str, Any]:
    """``spec`` if it is well formed (and names only ``columns``), else InvalidArgument."""
    where = f"{task}: argument 'spec'"
    if not isinstance(spec, dict):
        raise InvalidArgument(f"{where} must be a JSON object; got {validate.shown(spec)}")
    unknown = set(spec) - {"filter", "group_by", "aggregate", "map"}
    if unknown:
        raise InvalidArgument(f"{where} has unknown keys {sorted(unknown)}; allowed: "
                              "filter, group_by, aggregate, map")
    aggregate = spec.get("aggregate")
    if not isinstance(aggregate, dict) or not aggregate:
        raise InvalidArgument(f"{where}: 'aggregate' must map output names to "
                              f"[column, one of {', '.join(AGGREGATIONS)}]")
    named = []
    for out, rule in aggregate.items():
        if (not isinstance(rule, list) or len(rule) != 2 or rule[1] not in AGGREGATIONS
                or not isinstance(rule[0], str)):
            raise InvalidArgument(f"{where}: aggregate {out!r} must be [column, one of "
                                  f"{', '.join(AGGREGATIONS)}]; got {validate.shown(rule)}")
        if rule[0] == "*" and rule[1] != "count":
            raise InvalidArgument(f"{where}: aggregate {out!r}: '*' only counts rows")
        named.append(rule[0])
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
        named.append(rule[0])
    if "map" in spec and not isinstance(spec["map"], str):
        raise InvalidArgument(f"{where}: 'map' must be the name of a registered function")
    if columns is not None and "map" not in spec:
        missing = sorted({c for c in [*named, *group_by] if c != "*"} - set(columns))
        if missing:
            raise InvalidArgument(f"{where} names columns {missing} that the input does not "
                                  f"have; it has {columns}")
    return spec


def check_chunk(task: str, chunk: Any) -> dict[str, int]:
    """``{"row_group": N}`` or ``{"start": A, "end": B}`` (whole numbers, A <= B): see ``plan``."""
    keys = set(chunk) if isinstance(chunk, dict) else set()
    ok = keys in ({"row_group"}, {"start", "end"}) and all(
        validate.is_a(value, int) and 0 <= value <= MAX_OFFSET for value in chunk.values())
    if not ok or (keys == {"start", "end"} and chunk["start"] > chunk["end"]):
        raise InvalidArgument(f"{task}: argument 'chunk' must be {{\"row_group\": N}} or "
                              f"{{\"start\": A, \"end\": B}} with whole numbers "
                              f"0 <= A <= B <= {MAX_OFFSET}; got {validate.shown(chunk)}")
    return chunk


def check_schema(task: str, schema: Any) -> dict[str, str] | None:
    """None, or column name -> Arrow type name (as ``csv_schema`` makes)."""
    if schema is not None and not (isinstance(schema, dict) and all(
            isinstance(v, str) for v in schema.values())):
        raise InvalidArgument(f"{task}: argument 'schema' must be null or an object of column "
                              f"name -> Arrow type name; got {validate.shown(schema)}")
    return schema


# ---- map (on a volunteer) ---------------------------------------------------------

def _read_chunk(source: str, chunk: dict[str, Any], schema: dict[str, str] | None,
                task: str) -> pa.Table | None:
    if "row_group" in chunk:
        index = chunk["row_group"]
        with _open(source, task) as handle:
            try:
                parquet = pq.ParquetFile(handle)
                if index >= parquet.num_row_groups:
                    raise InvalidArgument(f"{task}: argument 'chunk': row group {index} does not "
                                          f"exist; {source!r} has {parquet.num_row_groups}")
                return parquet.read_row_group(index)
            except _ARROW_ERRORS as exc:
                raise InvalidArgument(f"{task}: argument 'source': {source!r} is not readable "
                                      f"Parquet: {exc}") from None
    start, end = chunk["start"], chunk["end"]
    with _open(source, task) as handle:
        header = handle.readline()
        if start > 0:
            handle.seek(start - 1)
            handle.readline()  # finish the line the previous chunk owns
        else:
            handle.seek(len(header))
        lines = []
        while handle.tell() < end:
            line = handle.readline()
            if not line:
                break
            lines.append(line)
    body = b"".join(lines)
    if not body.strip():
        return None  # the range holds no line of its own (the end of a file, say)
    try:
        names = [name.strip().strip('"')
                 for name in header.decode().rstrip("\r\n").split(",")]
    except UnicodeDecodeError:
        raise InvalidArgument(f"{task}: argument 'source': the first line of {source!r} is not "
                              "UTF-8 CSV column names") from None
    types = {}
    for name, alias in (schema or {}).items():
        try:
            types[name] = pa.type_for_alias(alias)
        except (ValueError, KeyError):
            continue  # an exotic type: let this chunk infer it
    try:
        return pacsv.read_csv(io.BytesIO(body),
                              read_options=pacsv.ReadOptions(column_names=names),
                              convert_options=pacsv.ConvertOptions(
                                  column_types=types, strings_can_be_null=True))
    except _ARROW_ERRORS as exc:
        raise InvalidArgument(f"{task}: argument 'source': bytes {start}-{end} of {source!r} "
                              f"are not valid CSV for its columns: {exc}") from None


def _filtered(table: pa.Table, filters: list[list[Any]], task: str) -> pa.Table:
    for column, op, value in filters:
        if column not in table.column_names:
            raise InvalidArgument(f"{task}: argument 'spec': filter column {column!r} does not "
                                  f"exist; columns: {table.column_names}")
        try:
            if op == "in":
                mask = pc.is_in(table[column], value_set=pa.array(value))
            else:
                mask = OPERATORS[op](table[column], pa.scalar(value))
            table = table.filter(mask)
        except _ARROW_ERRORS as exc:
            raise InvalidArgument(
                f"{task}: argument 'spec': filter {validate.shown([column, op, value])} does not "
                f"apply to column {column!r} ({table.schema.field(column).type}): {exc}"
            ) from None
    return table


def _partials(table: pa.Table, spec: dict[str, Any], task: str) -> list[list[Any]]:
    group_by = spec.get("group_by", [])
    wanted: list[tuple[str, str]] = []
    for column, how in spec["aggregate"].values():
        if column != "*" and column not in table.column_names:
            raise InvalidArgument(f"{task}: argument 'spec': aggregate column {column!r} does "
                                  f"not exist; columns: {table.column_names}")
        parts = {"mean": ("sum", "count")}.get(how, (how,))
        wanted += [(column, part) for part in parts]
    wanted = list(dict.fromkeys(wanted))
    missing = [c for c in group_by if c not in table.column_names]
    if missing:
        raise InvalidArgument(f"{task}: argument 'spec': group_by columns {missing} do not "
                              f"exist; columns: {table.column_names}")
    if "*" in {column for column, _ in wanted}:
        table = table.append_column("__rows__", pa.array([1] * table.num_rows, pa.int64()))
    aggs = [("__rows__" if column == "*" else column, "sum" if column == "*" else how)
            for column, how in wanted]
    try:
        grouped = table.group_by(group_by).aggregate(aggs) if table.num_rows else None
    except _ARROW_ERRORS as exc:
        raise InvalidArgument(f"{task}: argument 'spec': aggregate {spec['aggregate']} by "
                              f"{group_by} does not apply to these columns: {exc}") from None
    rows = []
    if grouped is not None:
        names = [f"{column}_{how}" for column, how in aggs]
        for record in grouped.to_pylist():
            rows.append([[record[c] for c in group_by],
                         {f"{c}|{h}": record[n] for (c, h), n in zip(wanted, names,
                                                                     strict=True)}])
    return rows


@compute_task("compute.data.map_chunk")
def map_chunk(self, source: str, chunk: dict, spec: dict,
              schema: dict | None = None) -> dict:
    """Map, filter and partially aggregate one chunk; returns partials and row counts."""
    check_spec(spec, task=self.name)
    source = validate.path(self.name, "source", source)
    chunk = check_chunk(self.name, chunk)
    schema = check_schema(self.name, schema)
    table = _read_chunk(source, chunk, schema, self.name)
    if table is None:
        return {"hostname": self.request.hostname, "rows_in": 0, "rows_kept": 0,
                "partials": []}
    rows_in = table.num_rows
    if "map" in spec:
        function = _MAPS.get(spec["map"])
        if function is None:
            raise InvalidArgument(f"{self.name}: argument 'spec': no map function "
                                  f"{spec['map']!r} is registered on this worker "
                                  f"(known: {sorted(_MAPS)})")
        table = function(table)
    table = _filtered(table, spec.get("filter", []), self.name)
    return {"hostname": self.request.hostname, "rows_in": rows_in, "rows_kept": table.num_rows,
            "partials": _partials(table, spec, self.name)}


# ---- reduce (on a volunteer) ------------------------------------------------------

_PARTIALS = ("sum", "count", "min", "max")  # what a chunk's partials hold (mean = sum, count)


def check_parts(task: str, parts: Any, spec: dict[str, Any]) -> list[dict[str, Any]]:
    """``parts`` as ``map_chunk`` returns them, with group keys as long as ``group_by``."""
    parts = validate.records(task, "parts", parts, {"hostname": str, "rows_in": int,
                                                    "rows_kept": int, "partials": list})
    width = len(spec.get("group_by", []))
    for index, part in enumerate(parts):
        where = f"{task}: argument 'parts': item {index}"
        if part["rows_in"] < 0 or part["rows_kept"] < 0:
            raise InvalidArgument(f"{where}: row counts must not be negative")
        for partial in part["partials"]:
            if not (isinstance(partial, list) and len(partial) == 2
                    and isinstance(partial[0], list) and len(partial[0]) == width
                    and all(map(_scalar, partial[0])) and isinstance(partial[1], dict)):
                raise InvalidArgument(f"{where}: a partial must be [group key of {width} "
                                      f"values, {{column|how: value}}]; got "
                                      f"{validate.shown(partial)}")
            for name, value in partial[1].items():
                how = name.rpartition("|")[2]
                number = value is None or validate.is_a(value, (int, float))
                if (how not in _PARTIALS or not _scalar(value)
                        or (how in ("sum", "count") and not number)):
                    raise InvalidArgument(f"{where}: partial {name!r} = {validate.shown(value)} "
                                          f"is not a column|{'/'.join(_PARTIALS)} value")
    return parts


def _merge(how: str, old: Any, new: Any) -> Any:
    if old is None:
        return new
    if new is None:
        return old
    if how in ("sum", "count"):
        return old + new
    return min(old, new) if how == "min" else max(old, new)


def merge(parts: list[dict[str, Any]], spec: dict[str, Any],
          task: str = "data") -> list[dict[str, Any]]:
    """The final rows from every chunk's partials, sorted by group key."""
    groups: dict[tuple[Any, ...], dict[str, Any]] = {}
    try:
        for part in parts:
            for key, values in part["partials"]:
                slot = groups.setdefault(tuple(key), {})
                for name, value in values.items():
                    slot[name] = _merge(name.rpartition("|")[2], slot.get(name), value)
        ordered = sorted(groups, key=lambda k: tuple((v is None, v) for v in k))
    except TypeError as exc:  # min("a", 1), or keys "fr" and 1 in one column
        raise InvalidArgument(f"{task}: argument 'parts': partial values of different kinds "
                              f"cannot be merged: {exc}") from None
    group_by = spec.get("group_by", [])
    if not group_by and not groups:
        groups[()] = {}
        ordered = [()]
    rows = []
    for key in ordered:
        values = groups[key]
        row = dict(zip(group_by, key, strict=True))
        for out, (column, how) in spec["aggregate"].items():
            if how == "mean":
                total, count = values.get(f"{column}|sum"), values.get(f"{column}|count")
                row[out] = total / count if count and total is not None else None
            elif how == "count":
                row[out] = values.get(f"{column}|count") or 0
            else:
                row[out] = values.get(f"{column}|{how}")
        rows.append(row)
    return rows


def write_table(rows: list[dict[str, Any]], output: str, task: str = "data") -> None:
    """Write ``rows`` to ``output``: JSON, Parquet or (any other name) CSV."""
    lowered = output.lower()
    if lowered.endswith(".json"):
        content: Any = json.dumps(rows, default=_plain).encode()
    else:
        try:
            content = pa.Table.from_pylist(rows)
        except _ARROW_ERRORS as exc:
            raise InvalidArgument(f"{task}: argument 'parts': the merged rows do not make a "
                                  f"table: {exc}") from None
    try:
        with fsspec.open(output, "wb") as handle:
            if isinstance(content, bytes):
                handle.write(content)
            elif lowered.endswith((".parquet", ".pq")):
                pq.write_table(content, handle)
            else:
                pacsv.write_csv(content, handle)
    except (OSError, ValueError, ImportError, pa.ArrowException) as exc:
        raise InvalidArgument(f"{task}: argument 'output': cannot write {output!r}: "
                              f"{exc}") from None


def _plain(value: Any) -> Any:
    return None if isinstance(value, float) and math.isnan(value) else str(value)


@compute_task("compute.data.assemble")
def assemble(self, parts: list, spec: dict, output: str) -> dict:
    """Merge every chunk's partial aggregates and write the result to ``output``."""
    spec = check_spec(spec, task=self.name)
    output = validate.path(self.name, "output", output)
    parts = check_parts(self.name, parts, spec)
    rows = merge(parts, spec, self.name)
    write_table(rows, output, self.name)
    return {"hostname": self.request.hostname, "output": output, "groups": len(rows),
            "rows_in": sum(part["rows_in"] for part in parts),
            "rows_kept": sum(part["rows_kept"] for part in parts), "chunks": len(parts),
            "workers": sorted({part["hostname"] for part in parts})}
