"""``BaseTask``: the base of every task of the app (``task_cls``), plain ``@app.task`` ones too.

A call that does not fit the task's signature (wrong arity, an unknown or
repeated keyword) fails with :class:`~compute.errors.WrongCall` (an
``InvalidArgument`` and a ``TypeError``, as Celery promises) naming the task
and what it takes, not with Python's ``TypeError`` that counts ``self`` and
names no task. Before a task's code runs in a worker that trusts a key
(``IDLE_ACCEL_TRUSTED_KEY``), its signature is checked (``compute/signing.py``);
an unsigned or altered task fails with :class:`~compute.signing.UnsignedTask`
and its code never runs, nor does anything else on its behalf: its
continuations (links, errbacks, the rest of its chain, its chord and group)
are dropped from the request first, the one Celery's failure handling then
reads, so no errback is called (an old-style one would run in this very
process, as a direct call that no signature check sees), no chain is failed
and no chord part counted. A task sent with ``verify=k`` (``compute/app.py``)
arrives as k replicas; each goes through the claim-and-record steps of
``compute/verify.py`` around the task's own body.
"""

from __future__ import annotations

import inspect
from typing import Any

from celery import Task

from compute import signing, verify
from compute.errors import InvalidArgument, WrongCall


def check_call(task: Any, args: tuple, kwargs: dict) -> None:
    """WrongCall unless ``args`` and ``kwargs`` fit ``task.run`` (``self`` excluded)."""
    signature = inspect.signature(task.run)  # a bound method: no ``self``
    try:
        signature.bind(*args, **kwargs)
    except TypeError as exc:
        takes = ", ".join(f"'{name}'" for name in signature.parameters) or "no arguments"
        raise WrongCall(f"{task.name}: takes {takes}; got {len(args)} positional and "
                              f"keywords {sorted(kwargs)}: {exc}") from None


def _host(app: Any) -> str:
    settings = getattr(app, "idle_accel_settings", None)
    if settings is not None:
        return settings.host
    from compute.hostid import machine_host_id

    return machine_host_id()


def _trusted(app: Any) -> Any:
    """The public key this worker trusts, loaded once per process; None when signing is off."""
    cached = getattr(app, "_idle_accel_trusted", False)
    if cached is False:
        settings = getattr(app, "idle_accel_settings", None)
        path = settings.trusted_key if settings is not None else None
        cached = signing.load_public(path) if path else None
        app._idle_accel_trusted = cached
    return cached


#: What Celery's worker does on a task's behalf once it ran or failed (the request's
#: fields): call links or errbacks, send or fail the rest of its chain, count its chord part.
CONTINUATIONS = (*signing.CONTINUATIONS, "group", "group_index")


def _drop_continuations(request: Any) -> None:
    """Nothing is done on behalf of a task refused by the signature check.

    ``request`` is the ``Context`` that Celery's tracer (``celery/app/trace.py``)
    pushed for this run and hands to ``mark_as_failure``, which reads these fields.
    """
    for field in CONTINUATIONS:
        setattr(request, field, None)


class BaseTask(Task):
    """A Celery task whose replicas (``verify=k``) are claimed and recorded."""

    abstract = True
    throws = (InvalidArgument,)  # expected: logged without a traceback

    def __call__(self, /, *args: Any, **kwargs: Any) -> Any:
        if self.request.called_directly:
            return super().__call__(*args, **kwargs)
        key = _trusted(self.app)
        if key is not None:
            try:
                signing.check(key, self.request, self.name)  # unsigned: refused first
            except Exception:
                _drop_continuations(self.request)
                raise
        check_call(self, args, kwargs)
        verification_id = getattr(self.request, verify.HEADER, None)
        if not verification_id:
            return super().__call__(*args, **kwargs)
        return verify.run_replica(self, str(verification_id), _host(self.app),
                                  lambda: super(BaseTask, self).__call__(*args, **kwargs))
