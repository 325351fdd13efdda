"""One exception tree for everything a user of Idle Accelerator can see go wrong."""


class IdleAccelError(Exception):
    """Root of every error raised on purpose by Idle Accelerator."""


class ConfigError(IdleAccelError):
    """A setting (environment variable or CLI flag) has a value that cannot work."""


class InvalidArgument(IdleAccelError, ValueError):
    """A task was called with an argument outside what it accepts.

    The message names the task, the argument, the allowed range and what was
    given. It takes a single message so Celery can rebuild it from a JSON result.
    """


class WrongCall(InvalidArgument, TypeError):
    """A call that does not fit the task's signature (arity, unknown or repeated keyword).

    An :class:`InvalidArgument` like every refused input, and a ``TypeError``
    as Celery promises for a call that does not fit (``Task.__call__``).
    """


class PayloadTooLarge(InvalidArgument):
    """Arguments or a result too large for a message: send a reference to the data instead."""


class JobError(IdleAccelError):
    """A job could not be planned, submitted or found (the message says which and why)."""


class VerificationFailed(IdleAccelError):
    """A verified task's replicas disagreed (or its record is gone); the message names the hosts."""


class TaskFailedRemotely(IdleAccelError):
    """A task failed on a volunteer with an error the coordinator does not rebuild as its type.

    The message is ``Type: message`` as the volunteer reported it.
    """
