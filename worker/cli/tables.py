"""The CLI's tables: a cell too wide for the terminal folds onto more lines, never ends in '…'."""

from __future__ import annotations

from typing import Any

from rich.table import Column, Table


def folding_table(*headers: str, **options: Any) -> Table:
    """A rich ``Table`` with these column headers, every column folding its long cells."""
    return Table(*(Column(header, overflow="fold") for header in headers), **options)
