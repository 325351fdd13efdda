"""``BaseTask``: the base of every task of the app (``task_cls``), plain ``@app.task`` ones too.

A task sent with ``verify=k`` (``compute/app.py``) arrives as k replicas; in
the worker, each goes through the claim-and-record steps of
``compute/verify.py`` around the task's own body.
"""

from __future__ import annotations

from typing import Any

from celery import Task

from compute import verify


def _host(app: Any) -> str:
    settings = getattr(app, "idle_accel_settings", None)
    if settings is not None:
        return settings.host
    from compute.hostid import machine_host_id

    return machine_host_id()


class BaseTask(Task):
    """A Celery task whose replicas (``verify=k``) are claimed and recorded."""

    abstract = True

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        verification_id = getattr(self.request, verify.HEADER, None)
        if not verification_id or self.request.called_directly:
            return super().__call__(*args, **kwargs)
        return verify.run_replica(self, str(verification_id), _host(self.app),
                                  lambda: super(BaseTask, self).__call__(*args, **kwargs))
