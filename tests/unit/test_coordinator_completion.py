"""A volunteer's failure is rebuilt only as a harmless exception type."""

from __future__ import annotations

from compute.coordinator.completion import rebuild_error
from compute.errors import InvalidArgument, TaskFailedRemotely


def test_project_and_builtin_errors_keep_their_type() -> None:
    exc = rebuild_error({"exc_type": "InvalidArgument", "exc_module": "compute.errors",
                         "exc_message": ["compute.diag.sleep: bad"]})
    assert isinstance(exc, InvalidArgument) and "bad" in str(exc)
    assert isinstance(rebuild_error({"exc_type": "ValueError", "exc_module": "builtins",
                                     "exc_message": ["x"]}), ValueError)


def test_anything_else_is_text_only() -> None:
    for forged in ({"exc_type": "system", "exc_module": "os", "exc_message": ["rm -rf /"]},
                   {"exc_type": "Popen", "exc_module": "subprocess", "exc_message": []},
                   {"exc_type": "print", "exc_module": "builtins", "exc_message": ["x"]},
                   "not a dict"):
        exc = rebuild_error(forged)
        assert type(exc) is TaskFailedRemotely
