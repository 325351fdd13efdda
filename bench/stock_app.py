"""Stock Celery for the recovery benchmark: Celery's defaults, late acknowledgement on.

    celery -A bench.stock_app worker

The same diagnostic tasks as the project (``compute.diag``), none of the
project's worker steps (no leases, no fencing), Celery's own defaults for
everything that decides recovery: Redis ``visibility_timeout`` 3,600 s,
AMQP heartbeat 120 s. Late acknowledgement is on (with Celery's default,
early acknowledgement, a killed worker's task is simply lost), as a team
that cares about losing tasks would set it.
"""

from __future__ import annotations

import os

from celery import Celery

app = Celery("stock", broker=os.environ["CELERY_BROKER_URL"],
             backend=os.environ["CELERY_RESULT_BACKEND"], include=["compute.diag"])
app.conf.update(task_acks_late=True, task_reject_on_worker_lost=True,
                worker_prefetch_multiplier=1, task_default_queue="cpu",
                accept_content=["json"], task_serializer="json", result_serializer="json",
                task_track_started=True, result_extended=True)
# The failover benchmark (bench/failover.py): what a stock Celery user sets for the same
# engines, Celery's own options only.
if os.environ.get("STOCK_SENTINEL_MASTER"):
    sentinel = {"master_name": os.environ["STOCK_SENTINEL_MASTER"]}
    app.conf.update(broker_transport_options=sentinel, result_backend_transport_options=sentinel)
if os.environ.get("STOCK_QUEUE_TYPE"):
    app.conf.update(task_default_queue_type=os.environ["STOCK_QUEUE_TYPE"],
                    task_create_missing_queue_type=os.environ["STOCK_QUEUE_TYPE"])
