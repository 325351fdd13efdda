"""Task signatures and grants (compute/signing.py), without a broker."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from celery import Task

from compute import signing
from compute.app import create_app
from compute.errors import ConfigError
from compute.settings import Settings
from worker.runner import require_checked_tasks


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    key_path, pub_path = signing.new_keys(tmp_path_factory.mktemp("keys"))
    return signing.load_private(str(key_path)), signing.load_public(str(pub_path)), pub_path


def received(task_id, args, kwargs, headers):
    """The request a worker builds from the message (headers become attributes)."""
    return SimpleNamespace(id=task_id, args=list(args), kwargs=dict(kwargs), **headers)


def test_a_signature_covers_name_id_args_and_kwargs(keys):
    private, public, _ = keys
    options = {"task_id": "t-1"}
    signing.sign_options(private, "team.add", (1, (2, 3)), {"k": {"n": 1}}, options)
    headers = options["headers"]

    signing.check(public, received("t-1", [1, [2, 3]], {"k": {"n": 1}}, headers), "team.add")
    for task_id, args, kwargs, name in (("t-2", [1, [2, 3]], {"k": {"n": 1}}, "team.add"),
                                        ("t-1", [1, [2, 4]], {"k": {"n": 1}}, "team.add"),
                                        ("t-1", [1, [2, 3]], {"k": {"n": 2}}, "team.add"),
                                        ("t-1", [1, [2, 3]], {"k": {"n": 1}}, "team.rm")):
        with pytest.raises(signing.UnsignedTask, match="does not match"):
            signing.check(public, received(task_id, args, kwargs, headers), name)


def test_no_signature_or_garbage_is_refused(keys):
    _, public, _ = keys
    with pytest.raises(signing.UnsignedTask, match="not signed"):
        signing.check(public, received("t", [], {}, {}), "x")
    with pytest.raises(signing.UnsignedTask, match="does not match"):
        signing.check(public, received("t", [], {}, {signing.SIGNATURE_HEADER: "!!"}), "x")
    with pytest.raises(signing.UnsignedTask, match="grant does not match"):
        signing.check(public, received("t", [], {}, {signing.GRANT_HEADER: {"tail": "x"}}), "x")


def test_grants_reach_nested_continuations_and_pin_their_trailing_args(keys):
    private, public, _ = keys
    app = create_app(Settings.load(broker_url="redis://localhost:1/0"))
    inner = app.signature("team.notify", ("done",), {"to": "ops"}, task_id="n-1")
    chord_body = app.signature("team.assemble", ("out.csv",), {}, task_id="a-1",
                               link=[inner])
    options = {"task_id": "p-1", "chord": chord_body}
    signing.sign_options(private, "team.part", (0,), {}, options)

    grant = chord_body["options"]["headers"][signing.GRANT_HEADER]
    nested = inner["options"]["headers"][signing.GRANT_HEADER]
    headers = {signing.GRANT_HEADER: grant}
    signing.check(public, received("a-1", [[1, 2], "out.csv"], {}, headers), "team.assemble")
    for task_id, args in (("a-1", [[1, 2], "elsewhere.csv"]), ("a-2", [[1, 2], "out.csv"]),
                          ("a-1", [])):
        with pytest.raises(signing.UnsignedTask):
            signing.check(public, received(task_id, args, {}, headers), "team.assemble")
    signing.check(public, received("n-1", [None, "done"], {"to": "ops"},
                                   {signing.GRANT_HEADER: nested}), "team.notify")


def test_keys_are_not_overwritten_and_must_be_ed25519(tmp_path):
    signing.new_keys(tmp_path)
    with pytest.raises(ConfigError, match="refusing to overwrite"):
        signing.new_keys(tmp_path)
    (tmp_path / "bad.pub").write_text("not a key")
    with pytest.raises(ConfigError, match="cannot be read"):
        signing.load_public(str(tmp_path / "bad.pub"))


def test_a_worker_that_trusts_a_key_refuses_to_start_with_unchecked_tasks(keys):
    _, _, pub_path = keys
    app = create_app(Settings.load(broker_url="redis://localhost:1/0"))
    require_checked_tasks(app, str(pub_path))  # every built-in task checks signatures

    @app.task(name="team.raw", base=Task)
    def raw():
        return 1

    with pytest.raises(ConfigError, match=r"team\.raw"):
        require_checked_tasks(app, str(pub_path))
