"""One SELECT split into a per-part query and a merge query, exactly: the pure rewrite.

``split(query)`` parses DuckDB SQL with sqlglot and returns two statements:

- the **part** query runs on every slice of the scanned input (the table
  ``__scan``): the WHERE, the joins to small tables, and partial aggregates
  (``sum``, ``count``, ``min``, ``max``, ``avg`` as sum and count, ``bool_and``,
  ``bool_or``, ``count_if``; one DISTINCT expression by grouping on it);
- the **merge** query runs once over every part's rows (the table
  ``__partials``): the aggregates of the partials, HAVING, ORDER BY, LIMIT.

A query without aggregates concatenates the parts (each part already cut to
its own top ``LIMIT + OFFSET`` rows when ordered). Whatever cannot be split
exactly raises :class:`NotSplittable` with one line naming the construct:
window functions, non-decomposable aggregates (median, stddev, string_agg,
...), set operations, CTEs, subqueries over the scanned input, RIGHT/FULL
joins. No I/O here: ``compute.sql_plan`` checks the result against DuckDB.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sqlglot
from sqlglot import exp

from compute.duck import PARTIALS, SCAN
from compute.errors import InvalidArgument

DIALECT = "duckdb"

#: Aggregates that split: how the merge query combines each part's value.
_MERGE = {exp.Sum: "sum", exp.Count: "sum", exp.CountIf: "sum", exp.Min: "min",
          exp.Max: "max", exp.LogicalAnd: "bool_and", exp.LogicalOr: "bool_or"}
#: The reason given for aggregates that need every row at once.
_WHOLE = "needs every row at once, so it is not split across parts"


class NotSplittable(InvalidArgument):
    """The query is valid SQL but cannot be split into parts exactly."""


@dataclass
class Split:
    """The two halves; ``scan`` is the table expression the part query reads as ``__scan``."""

    part: exp.Select
    merge: exp.Select
    scan: exp.Expression
    joined: list[exp.Expression] = field(default_factory=list)
    aggregated: bool = False

    def part_sql(self) -> str:
        return self.part.sql(dialect=DIALECT)

    def merge_sql(self) -> str:
        return self.merge.sql(dialect=DIALECT)


def parse(query: str) -> exp.Select:
    """The one SELECT in ``query``; a syntax error or anything else is one line."""
    try:
        statements = sqlglot.parse(query, read=DIALECT)
    except sqlglot.errors.ParseError as error:
        first = error.errors[0] if error.errors else {}
        where = (f" at line {first.get('line')}, column {first.get('col')}"
                 if first.get("line") else "")
        description = first.get("description") or str(error).splitlines()[0]
        raise InvalidArgument(f"sql: syntax error{where}: {description}") from None
    statements = [s for s in statements if s is not None]
    if len(statements) != 1:
        raise InvalidArgument(f"sql: give exactly one SELECT statement; got {len(statements)}")
    (statement,) = statements
    if isinstance(statement, exp.SetOperation):
        raise NotSplittable(f"sql: {statement.key.upper()} is not split: submit each SELECT "
                            "as its own job")
    if not isinstance(statement, exp.Select):
        raise InvalidArgument(f"sql: only a SELECT is run; got {statement.key.upper()}")
    return statement


def split(query: str | exp.Select, columns: set[str] | None = None,
          aggregate_names: set[str] | None = None, names: list[str] | None = None) -> Split:
    """``query`` as a part query and a merge query (see the module doc).

    ``columns``: the input's column names (to tell a GROUP BY alias from a column).
    ``aggregate_names``: lower-case names of every aggregate function the engine
    knows, to refuse one sqlglot does not model (``compute.sql_plan`` passes DuckDB's).
    ``names``: the engine's names of the output columns (``sum(amount)`` for an item
    without an alias), which the merge query gives its own columns.
    """
    select = parse(query) if isinstance(query, str) else query.copy()
    check_shape(select)
    scan, joined = _scan_and_joins(select)
    _refuse_inside(select, scan, aggregate_names or set())
    scan_node = select.args["from_"].this
    select.args["from_"].set("this", exp.Table(this=exp.to_identifier(SCAN),
                                               alias=scan_node.args.get("alias")))
    if _aggregates(select) or select.args.get("group"):
        part, merge = _split_aggregate(select, columns or set(), names)
        return Split(part, merge, scan, joined, aggregated=True)
    part, merge = _split_rows(select)
    return Split(part, merge, scan, joined)


# ---- what is refused --------------------------------------------------------------

def check_shape(select: exp.Select) -> None:
    """Refuse, before any file is looked at, what is never split (WITH, QUALIFY, ...)."""
    if select.args.get("with_"):
        raise NotSplittable("sql: WITH (common table expressions) is not split; write the "
                            "query over the files directly")
    if not select.args.get("from_"):
        raise NotSplittable("sql: the query reads no table: there is nothing to split")
    if isinstance(select.args["from_"].this, exp.Subquery):
        raise NotSplittable("sql: a subquery in FROM is not split; select from the files")
    for join in select.args.get("joins") or []:
        side = (join.args.get("side") or "").upper()
        if side in ("RIGHT", "FULL"):
            raise NotSplittable(f"sql: a {side} JOIN keeps rows of the joined table that no "
                                "part sees; only INNER, LEFT and CROSS joins are split")
    for key, what in (("qualify", "QUALIFY"), ("windows", "WINDOW")):
        if select.args.get(key):
            raise NotSplittable(f"sql: {what} needs every row at once; it is not split")
    distinct = select.args.get("distinct")
    if distinct is not None and distinct.args.get("on"):
        raise NotSplittable("sql: DISTINCT ON is not split; use GROUP BY with min/max")
    group = select.args.get("group")
    if group is not None and (any(group.args.get(k) for k in ("grouping_sets", "rollup", "cube"))
                              or group.find(exp.Rollup, exp.Cube, exp.GroupingSets)):
        raise NotSplittable("sql: GROUPING SETS, ROLLUP and CUBE are not split; "
                            "submit one GROUP BY per job")


def _scan_and_joins(select: exp.Select) -> tuple[exp.Expression, list[exp.Expression]]:
    scan = select.args["from_"].this
    if isinstance(scan, exp.Subquery):
        raise NotSplittable("sql: a subquery in FROM is not split; select from the files")
    if not isinstance(scan, exp.Table):
        raise NotSplittable(f"sql: FROM {scan.sql(dialect=DIALECT)} is not a file to split")
    joined = []
    for join in select.args.get("joins") or []:  # RIGHT and FULL: refused by check_shape
        kind = (join.args.get("kind") or "").upper()
        if kind in ("SEMI", "ANTI", "ASOF", "POSITIONAL") or join.args.get("method"):
            raise NotSplittable(f"sql: {kind or join.args['method']} JOIN is not split")
        if not isinstance(join.this, exp.Table):
            raise NotSplittable(f"sql: JOIN {join.this.sql(dialect=DIALECT)} is not a file; "
                                "joins are split only to small files shipped to every part")
        joined.append(join.this)
    return scan, joined


def _function_name(node: exp.Expression) -> str:
    """The function as DuckDB spells it (``quantile_cont``, not sqlglot's own name)."""
    if isinstance(node, exp.Anonymous):
        return str(node.this).lower()
    return node.sql(dialect=DIALECT).split("(", 1)[0].lower()


def _refuse_inside(select: exp.Select, scan: exp.Expression,
                   aggregate_names: set[str]) -> None:
    if select.find(exp.Window):
        window = select.find(exp.Window)
        raise NotSplittable(f"sql: the window function {window.sql(dialect=DIALECT)} needs "
                            "every row at once; window functions are not split")
    for sub in select.find_all(exp.Subquery, exp.Exists):
        inner = sub.this if isinstance(sub, exp.Subquery | exp.Exists) else sub
        for table in inner.find_all(exp.Table):
            if table.this == scan.this:
                raise NotSplittable("sql: a subquery reads the scanned input again; no part "
                                    "holds all of it")
    for node in _own(select, exp.Func):
        if isinstance(node, exp.AggFunc) and type(node) not in _MERGE and not isinstance(
                node, exp.Avg):
            raise NotSplittable(f"sql: {_function_name(node)}() {_WHOLE}")
        if isinstance(node, exp.Anonymous) and _function_name(node) in aggregate_names:
            raise NotSplittable(f"sql: {_function_name(node)}() {_WHOLE}")
    for node in _own(select, exp.Order):
        if isinstance(node.parent, exp.AggFunc):
            raise NotSplittable(f"sql: an ordered aggregate {node.parent.sql(dialect=DIALECT)} "
                                f"{_WHOLE}")


# ---- queries without aggregates: concatenate ---------------------------------------

def _split_rows(select: exp.Select) -> tuple[exp.Select, exp.Select]:
    part = select.copy()
    limit, offset = _limit(select)
    order = select.args.get("order")
    hidden: list[str] = []
    merge_order = []
    names = {_output_name(item) for item in select.expressions}
    for index, ordered in enumerate(order.expressions if order else []):
        key = ordered.this
        if isinstance(key, exp.Column) and not key.table and key.name in names:
            merge_order.append(ordered.copy())
            continue
        if isinstance(key, exp.Literal) and key.is_int:  # a position: the same column there
            merge_order.append(ordered.copy())
            continue
        if select.args.get("distinct"):  # DuckDB itself requires these to be selected
            merge_order.append(ordered.copy())
            continue
        name = f"__o{index}"
        hidden.append(name)
        part.select(exp.alias_(key.copy(), name), copy=False)
        copied = ordered.copy()
        copied.set("this", exp.column(name))
        merge_order.append(copied)
    part.set("limit", None)
    part.set("offset", None)
    if limit is not None:  # each part keeps only what could be in the first LIMIT + OFFSET
        part.set("limit", exp.Limit(expression=exp.Literal.number(limit + (offset or 0))))
    if not order:
        part.set("order", None)
    star = exp.Star(**({"except_": [exp.column(n) for n in hidden]} if hidden else {}))
    merge = exp.select(star).from_(PARTIALS)
    if select.args.get("distinct"):
        merge.set("distinct", exp.Distinct())
    if merge_order:
        merge.set("order", exp.Order(expressions=merge_order))
    _set_limit(merge, limit, offset)
    return part, merge


def _output_name(item: exp.Expression) -> str:
    return item.alias_or_name


def _limit(select: exp.Select) -> tuple[int | None, int | None]:
    def number(node: exp.Expression | None, what: str) -> int | None:
        if node is None:
            return None
        value = node.args.get("expression") if isinstance(node, exp.Limit | exp.Offset) else node
        value = value if value is not None else node.this
        if not (isinstance(value, exp.Literal) and value.is_int):
            raise NotSplittable(f"sql: {what} must be a whole number to split; got "
                                f"{value.sql(dialect=DIALECT)}")
        return int(value.this)

    limit = select.args.get("limit")
    if isinstance(limit, exp.Fetch):
        raise NotSplittable("sql: FETCH is not split; use LIMIT")
    return number(limit, "LIMIT"), number(select.args.get("offset"), "OFFSET")


def _set_limit(merge: exp.Select, limit: int | None, offset: int | None) -> None:
    if limit is not None:
        merge.set("limit", exp.Limit(expression=exp.Literal.number(limit)))
    if offset:
        merge.set("offset", exp.Offset(expression=exp.Literal.number(offset)))


# ---- queries with aggregates: partial aggregates, then their aggregate -------------

def _aggregates(node: exp.Expression) -> list[exp.Expression]:
    """The outermost aggregates of ``node``, leaving out those of its subqueries."""
    found = []
    for candidate in _own(node, exp.AggFunc):
        if not any(isinstance(a, exp.AggFunc) for a in _ancestors(candidate)):
            found.append(candidate)
    return found


def _own(node: exp.Expression, kind: type) -> list[exp.Expression]:
    """Nodes of ``kind`` in ``node`` outside any subquery (a subquery runs whole in a part:
    it reads only small tables, or the plan refused it)."""
    return [found for found in node.find_all(kind)
            if not any(isinstance(a, exp.Subquery | exp.Exists | exp.Select) and a is not node
                       and a is not _select_of(node) for a in _ancestors(found))]


def _select_of(node: exp.Expression) -> exp.Expression | None:
    return node if isinstance(node, exp.Select) else node.find_ancestor(exp.Select)


def _ancestors(node: exp.Expression):
    parent = node.parent
    while parent is not None:
        yield parent
        parent = parent.parent


class _Rewriter:
    """Builds the part's select list while it rewrites expressions for the merge."""

    def __init__(self, groups: list[exp.Expression], aliases: dict[str, exp.Expression]) -> None:
        self.groups = groups
        self.aliases = aliases
        self.part_items: list[exp.Expression] = [
            exp.alias_(g.copy(), f"__g{i}") for i, g in enumerate(groups)]
        self.distinct: exp.Expression | None = None
        self.count = 0

    def _column(self, expression: exp.Expression) -> exp.Column:
        for item in self.part_items:  # the same partial twice (SELECT and HAVING): once
            if item.this == expression and item.alias.startswith("__a"):
                return exp.column(item.alias)
        name = f"__a{self.count}"
        self.count += 1
        self.part_items.append(exp.alias_(expression, name))
        return exp.column(name)

    def _distinct_column(self, inner: exp.Expression) -> exp.Column:
        if self.distinct is None:
            self.distinct = inner.copy()
            self.part_items.append(exp.alias_(inner.copy(), "__d"))
        elif self.distinct != inner:
            raise NotSplittable(f"sql: DISTINCT over more than one expression "
                                f"({self.distinct.sql(dialect=DIALECT)} and "
                                f"{inner.sql(dialect=DIALECT)}) is not split; one per query")
        return exp.column("__d")

    def aggregate(self, node: exp.Expression) -> exp.Expression:
        """The merge expression for one aggregate (possibly wrapped in FILTER)."""
        agg = node.this if isinstance(node, exp.Filter) else node
        argument = agg.this
        if isinstance(argument, exp.Distinct):
            if isinstance(node, exp.Filter):
                raise NotSplittable(f"sql: {node.sql(dialect=DIALECT)}: DISTINCT with FILTER "
                                    "is not split")
            if len(argument.expressions) != 1:
                raise NotSplittable(f"sql: {agg.sql(dialect=DIALECT)}: DISTINCT over several "
                                    "columns is not split")
            column = self._distinct_column(argument.expressions[0])
            merged = agg.copy()
            merged.set("this", exp.Distinct(expressions=[column]))
            return merged
        if isinstance(agg, exp.Avg):
            total = agg.copy()
            total = exp.Sum(this=total.this)
            count = exp.Count(this=agg.this.copy())
            if isinstance(node, exp.Filter):
                total = exp.Filter(this=total, expression=node.expression.copy())
                count = exp.Filter(this=count, expression=node.expression.copy())
            sum_column, count_column = self._column(total), self._column(count)
            return exp.Div(this=exp.Sum(this=sum_column),
                           expression=exp.Nullif(this=exp.Sum(this=count_column),
                                                 expression=exp.Literal.number(0)))
        # Every group of the merge comes from at least one part's row (and an ungrouped
        # part always answers one row), so a sum of counts is never over nothing.
        return exp.func(_MERGE[type(agg)], self._column(node.copy()), dialect=DIALECT)

    def rewrite(self, node: exp.Expression, *, aliases: bool = False) -> exp.Expression:
        """``node`` over the partials: aggregates merged, group expressions as ``__gN``."""
        for index, group in enumerate(self.groups):
            if node == group:
                return exp.column(f"__g{index}")
        if isinstance(node, exp.Filter | exp.AggFunc) and (
                isinstance(node, exp.AggFunc) or isinstance(node.this, exp.AggFunc)):
            return self.aggregate(node)
        if aliases and isinstance(node, exp.Column) and not node.table \
                and node.name in self.aliases:
            return self.rewrite(self.aliases[node.name])
        if isinstance(node, exp.Column):
            raise NotSplittable(f"sql: column {node.sql(dialect=DIALECT)} must be in GROUP BY "
                                "or inside an aggregate")
        copied = node.copy()
        for key, value in node.args.items():
            if isinstance(value, exp.Expression):
                copied.set(key, self.rewrite(value, aliases=aliases))
            elif isinstance(value, list):
                copied.set(key, [self.rewrite(v, aliases=aliases)
                                 if isinstance(v, exp.Expression) else v for v in value])
        return copied


def _groups(select: exp.Select, columns: set[str]) -> list[exp.Expression]:
    group = select.args.get("group")
    items = [item.unalias() if isinstance(item, exp.Alias) else item
             for item in select.expressions]
    if group is None:
        return []
    if group.args.get("all"):
        return [item.copy() for item in items if not _aggregates(item)]
    aliases = {item.alias: item.this for item in select.expressions if isinstance(item, exp.Alias)}
    resolved = []
    for key in group.expressions:
        if isinstance(key, exp.Literal) and key.is_int:
            position = int(key.this)
            if not 1 <= position <= len(items):
                raise InvalidArgument(f"sql: GROUP BY {position}: the SELECT list has "
                                      f"{len(items)} items")
            resolved.append(items[position - 1].copy())
        elif (isinstance(key, exp.Column) and not key.table and key.name not in columns
              and key.name in aliases):
            resolved.append(aliases[key.name].copy())
        else:
            resolved.append(key.copy())
    return resolved


def _split_aggregate(select: exp.Select, columns: set[str],
                     names: list[str] | None) -> tuple[exp.Select, exp.Select]:
    groups = _groups(select, columns)
    aliases = {item.alias: item.this for item in select.expressions if isinstance(item, exp.Alias)}
    rewriter = _Rewriter(groups, aliases)
    merged_items = []
    if names is not None and len(names) != len(select.expressions):
        raise NotSplittable("sql: the SELECT list expands to other columns than it names; "
                            "name each column")
    for position, item in enumerate(select.expressions):
        if isinstance(item, exp.Star) or (isinstance(item, exp.Column)
                                          and isinstance(item.this, exp.Star)):
            raise NotSplittable("sql: SELECT * with GROUP BY or aggregates is not split; "
                                "name the columns")
        inner = item.this if isinstance(item, exp.Alias) else item
        merged = rewriter.rewrite(inner)
        name = names[position] if names is not None else _output_name(item)
        merged_items.append(exp.alias_(merged, name, quoted=True))
    merge = exp.select(*merged_items).from_(PARTIALS)
    if groups:
        merge.group_by(*[exp.column(f"__g{i}") for i in range(len(groups))], copy=False)
    having = select.args.get("having")
    if having is not None:
        merge.set("having", exp.Having(this=rewriter.rewrite(having.this, aliases=True)))
    order = select.args.get("order")
    if order is not None:
        names = {_output_name(item) for item in select.expressions}
        keys = []
        for ordered in order.expressions:
            key = ordered.this
            copied = ordered.copy()
            if isinstance(key, exp.Column) and not key.table and key.name in names:
                copied.set("this", exp.column(key.name, quoted=True))
            elif isinstance(key, exp.Literal) and key.is_int:
                pass
            else:
                copied.set("this", rewriter.rewrite(key, aliases=True))
            keys.append(copied)
        merge.set("order", exp.Order(expressions=keys))
    limit, offset = _limit(select)
    _set_limit(merge, limit, offset)
    part = select.copy()
    part.set("expressions", rewriter.part_items)
    for key in ("having", "order", "limit", "offset", "distinct"):
        part.set(key, None)
    keys = [g.copy() for g in groups] + ([rewriter.distinct.copy()] if rewriter.distinct else [])
    part.set("group", exp.Group(expressions=keys) if keys else None)
    if select.args.get("distinct"):
        merge.set("distinct", exp.Distinct())
    return part, merge
