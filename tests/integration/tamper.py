"""Test only: a worker started with ``--include tests.integration.tamper`` cheats.

Its ``compute.diag.checksum`` answers a wrong digest, as a broken or
dishonest volunteer would; verified results must catch it.
"""

from __future__ import annotations

from typing import Any

from celery import current_app
from celery.signals import worker_process_init

WRONG = "0" * 64


@worker_process_init.connect
def _tamper(**_: Any) -> None:
    task = current_app.tasks["compute.diag.checksum"]
    honest = task.run

    def wrong(*args: Any, **kwargs: Any) -> dict:
        return {**honest(*args, **kwargs), "sha256": WRONG}

    task.run = wrong
