"""``idle-accel flower [FLOWER OPTIONS]``: Flower for the app, with the Fleet page."""

from __future__ import annotations

import typer


def flower(ctx: typer.Context) -> None:
    """Flower with a Fleet page (owners, credit, capacity, the emergency switch).

    Takes Flower's own options (``--port=5555``, ``--basic-auth``, ``--read_only``...)
    and its FLOWER_* variables; ``idle-accel flower --help`` shows them.
    """
    from worker.flower_fleet import run  # Flower and Tornado load only for this command

    run(list(ctx.args))
