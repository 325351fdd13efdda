"""Task signatures and grants (compute/signing.py), without a broker."""

from __future__ import annotations

import base64
import datetime
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from celery import Task
from celery.app.trace import build_tracer
from celery.utils.functional import maybe_list
from kombu.utils import json as kombu_json

from compute import base, signing
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


def delivered(options: dict, args: Any = (), kwargs: dict | None = None) -> SimpleNamespace:
    """The request a worker builds from ``send_task(name, args, kwargs, **options)``: its
    continuations as Celery embeds them (``celery/app/amqp.py``), through the JSON."""
    message = {"id": options["task_id"], "args": list(args), "kwargs": kwargs or {},
               "callbacks": maybe_list(options.get("link")),
               "errbacks": maybe_list(options.get("link_error")),
               "chain": options.get("chain"), "chord": options.get("chord"),
               "group": options.get("group_id"), "group_index": options.get("group_index"),
               **(options.get("headers") or {})}
    return SimpleNamespace(**kombu_json.loads(kombu_json.dumps(message)))


def sent_on(sig: dict, args: list, chain: list | None = None) -> SimpleNamespace:
    """The request a worker builds when it sends ``sig`` on with ``args`` (``chain``: what
    Celery's tracer gives a chain step, the steps after it)."""
    options = dict(sig["options"]) if chain is None else {**sig["options"], "chain": chain}
    return delivered(options, args, sig["kwargs"])


@pytest.fixture(scope="module")
def app():
    return create_app(Settings.load(broker_url="redis://localhost:1/0"))


STARMAP = {"task": "celery.starmap", "args": [{"task": "team.touch", "args": [], "kwargs": {},
                                               "options": {}}, [["/tmp/x"]]],
           "kwargs": {}, "options": {}, "subtask_type": None, "immutable": True}


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


def test_a_signature_covers_the_continuations(keys, app):
    private, public, _ = keys
    options = {"task_id": "t-1", "link": app.signature("team.notify", ("a",)),
               "link_error": [app.signature("team.alarm")],
               "chain": [app.signature("team.last", (2,)), app.signature("team.next", (1,))],
               "chord": app.signature("team.assemble", ("out",)),
               "group_id": "g-1", "group_index": 3}
    signing.sign_options(private, "team.part", (0,), {}, options)
    signing.check(public, delivered(options, [0]), "team.part")

    alterations = {
        "a link's arguments": lambda m: m.callbacks[0]["args"].append("b"),
        "a link's task": lambda m: m.callbacks[0].update(task="team.other"),
        "a link's options": lambda m: m.callbacks[0]["options"].update(queue="gpu"),
        "a link, not a list of one": lambda m: setattr(m, "callbacks", m.callbacks[0]),
        "an errback added": lambda m: m.errbacks.append(STARMAP),
        "the errbacks dropped": lambda m: setattr(m, "errbacks", None),
        "the chain's steps swapped": lambda m: m.chain.reverse(),
        "the chord's body": lambda m: m.chord.update(args=["elsewhere"]),
        "the chord part moved": lambda m: setattr(m, "group", "g-2"),
        "its place in the group": lambda m: setattr(m, "group_index", 0),
        "the digest": lambda m: setattr(m, signing.EMBED_HEADER, "0" * 64),
    }
    for what, alter in alterations.items():
        message = delivered(options, [0])
        alter(message)
        with pytest.raises(signing.UnsignedTask, match="signature does not match"):
            signing.check(public, message, "team.part")
            pytest.fail(f"{what}: accepted")

    # none at all: nothing is done on its behalf (the coordinator's copy for a volunteer)
    stripped = delivered({**options, "link": None, "link_error": None, "chain": None,
                          "chord": None}, [0])
    signing.check(public, stripped, "team.part")
    stripped.group = "g-2"  # a group counts nothing without a chord
    signing.check(public, stripped, "team.part")
    stripped.args = [1]  # but the task itself is still covered
    with pytest.raises(signing.UnsignedTask, match="signature does not match"):
        signing.check(public, stripped, "team.part")


def test_continuations_cannot_be_added_to_a_signed_task_that_had_none(keys, app):
    private, public, _ = keys
    options = {"task_id": "t-2"}
    signing.sign_options(private, "team.add", (1,), {}, options)
    signing.check(public, delivered(options, [1]), "team.add")
    for field, value in (("errbacks", [STARMAP]), ("callbacks", [STARMAP]),
                         ("chain", [STARMAP]), ("chord", STARMAP)):
        message = delivered(options, [1])
        setattr(message, field, value)
        with pytest.raises(signing.UnsignedTask, match="does not match"):
            signing.check(public, message, "team.add")


def test_continuations_survive_json_with_the_types_kombu_keeps(keys, app):
    """A datetime in a continuation's options stays one through kombu's JSON."""
    private, public, _ = keys
    expires = datetime.datetime(2030, 1, 2, 3, 4, 5, 678, tzinfo=datetime.UTC)
    options = {"task_id": "t-3", "link": app.signature("team.notify", (("a", 1),),
                                                       expires=expires)}
    signing.sign_options(private, "team.add", (), {}, options)
    message = delivered(options)
    assert message.callbacks[0]["options"]["expires"] == expires
    signing.check(public, message, "team.add")
    signing.check(public, sent_on(options["link"][0], [None, ["a", 1]]), "team.notify")


def test_sign_options_freezes_an_id_for_every_continuation_on_copies(keys, app):
    private, _, _ = keys
    nested = app.signature("team.more")
    link = app.signature("team.notify", ("a",), link=[nested])
    ids = []
    for task_id in ("t-4", "t-5"):  # one signature object, sent twice
        options = {"task_id": task_id, "link": link}
        signing.sign_options(private, "team.add", (), {}, options)
        (copy,) = options["link"]
        for sig in (copy, copy["options"]["link"][0]):
            grant = sig["options"]["headers"][signing.GRANT_HEADER]
            assert grant["id"] == sig["options"]["task_id"] == str(uuid.UUID(grant["id"]))
            ids.append(grant["id"])
    assert len(set(ids)) == 4  # a fresh id each time: no two sends share a continuation's
    assert "task_id" not in link.options and "headers" not in link.options  # caller's: as was
    assert "task_id" not in nested.options


def test_a_grant_binds_its_id_leading_arguments_tail_and_continuations(keys, app):
    private, public, _ = keys
    inner = app.signature("team.notify", ("done",), {"to": "ops"}, task_id="n-1")
    chord_body = app.signature("team.assemble", ("out.csv",), {}, task_id="a-1", link=[inner])
    options = {"task_id": "p-1", "chord": chord_body, "group_id": "g-1", "group_index": 0}
    signing.sign_options(private, "team.part", (0,), {}, options)
    body = options["chord"]
    nested = body["options"]["link"][0]
    grant = body["options"]["headers"][signing.GRANT_HEADER]
    assert (grant["id"], grant["tail"], grant["lead"]) == ("a-1", ["out.csv"], 1)

    # sent on by the worker that finished the last part: the parts' results first
    signing.check(public, sent_on(body, [[1, 2], "out.csv"]), "team.assemble")
    signing.check(public, sent_on(nested, [None, "done"]), "team.notify")
    stripped = sent_on(body, [[1, 2], "out.csv"])
    stripped.callbacks = None  # carries none of its continuations: nothing done for it
    signing.check(public, stripped, "team.assemble")

    def refused(message, name="team.assemble"):
        with pytest.raises(signing.UnsignedTask, match="grant does not match"):
            signing.check(public, message, name)

    for args in ([[1, 2], "elsewhere.csv"], [], ["out.csv"], [[1], [2], "out.csv"]):
        refused(sent_on(body, args))  # its own tail, after exactly one leading argument
    refused(sent_on(body, [[1, 2], "out.csv"]), "team.other")
    other_id = sent_on(body, [[1, 2], "out.csv"])
    other_id.id = "a-2"
    refused(other_id)
    other_kwargs = sent_on(body, [[1, 2], "out.csv"])
    other_kwargs.kwargs = {"to": "evil"}
    refused(other_kwargs)
    link_swapped = sent_on(body, [[1, 2], "out.csv"])
    link_swapped.callbacks[0]["args"] = ["elsewhere"]
    refused(link_swapped)
    errback_added = sent_on(body, [[1, 2], "out.csv"])
    errback_added.errbacks = [STARMAP]
    refused(errback_added)
    for lead in (0, 2, True, None, "1"):  # the grant's own fields are signed, or refused
        altered = sent_on(body, [[1, 2], "out.csv"])
        altered.idle_accel_grant = {**grant, "lead": lead}
        refused(altered)


def test_an_immutable_continuation_takes_no_unsigned_argument(keys, app):
    private, public, _ = keys
    options = {"task_id": "p-2", "link": app.signature("team.ping", ("x",), immutable=True)}
    signing.sign_options(private, "team.part", (), {}, options)
    (link,) = options["link"]
    assert link["options"]["headers"][signing.GRANT_HEADER]["lead"] == 0
    signing.check(public, sent_on(link, ["x"]), "team.ping")
    with pytest.raises(signing.UnsignedTask, match="grant does not match"):
        signing.check(public, sent_on(link, [None, "x"]), "team.ping")


def test_a_grant_without_an_id_is_refused(keys, app):
    private, public, _ = keys
    options = {"task_id": "p-3", "link": app.signature("team.notify", ("a",))}
    signing.sign_options(private, "team.part", (), {}, options)
    (link,) = options["link"]
    grant = link["options"]["headers"][signing.GRANT_HEADER]
    # the team's own signature over a grant for no id in particular: still refused
    anyone = {**grant, "id": None, "sig": base64.b64encode(private.sign(signing.grant_payload(
        "team.notify", None, ["a"], {}, 1, grant["next"]))).decode()}
    for task_id in (link["options"]["task_id"], "other"):
        message = sent_on(link, [None, "a"])
        message.id, message.idle_accel_grant = task_id, anyone
        with pytest.raises(signing.UnsignedTask, match="grant does not match"):
            signing.check(public, message, "team.notify")


def test_chain_steps_are_granted_with_the_steps_after_them(keys, app):
    private, public, _ = keys
    steps = [app.signature("team.c3", (3,)), app.signature("team.c2", (2,)),
             app.signature("team.c1", (1,))]  # Celery's order: the next step last
    options = {"task_id": "c-0", "chain": steps}
    signing.sign_options(private, "team.c0", (), {}, options)
    chain = options["chain"]
    # each worker pops the last step and sends it on with the ones before it
    signing.check(public, sent_on(chain[2], [0, 1], chain[:2]), "team.c1")
    signing.check(public, sent_on(chain[1], [0, 2], chain[:1]), "team.c2")
    signing.check(public, sent_on(chain[0], [0, 3], []), "team.c3")
    for rest in (chain[:1], [chain[1], chain[0]], [*chain[:2], STARMAP]):
        with pytest.raises(signing.UnsignedTask, match="grant does not match"):
            signing.check(public, sent_on(chain[2], [0, 1], rest), "team.c1")


def test_a_refused_task_has_nothing_done_on_its_behalf(keys, tmp_path):
    """Through Celery's own tracer: the errbacks, chain and chord of a refused task."""
    _, _, pub_path = keys
    app = create_app(Settings.load(broker_url="redis://localhost:1/0",
                                   trusted_key=str(pub_path)))
    app.conf.result_backend = "cache+memory://"
    app.loader.import_default_modules()

    @app.task(name="team.touch")
    def touch(path, *rest):
        Path(path).write_text("ran")

    touched = tmp_path / "ran"
    starmap = {**STARMAP, "args": [dict(app.signature("team.touch")), [[str(touched)]]]}
    step = dict(app.signature("team.touch", (str(touched),), task_id="victim"))
    request = {"id": "t-1", "task": "compute.diag.noop", "errbacks": [starmap],
               "chain": [step], "delivery_info": {}}
    trace = build_tracer("compute.diag.noop", app.tasks["compute.diag.noop"], app=app)
    info = trace("t-1", [], {}, request).retval
    assert isinstance(info.exception, signing.UnsignedTask)
    assert app.AsyncResult("t-1").state == "FAILURE"  # refused, and recorded as such
    assert not touched.exists()  # the old-style errback (a direct call) never ran
    assert app.AsyncResult("victim").state == "PENDING"  # no chain failed on its behalf

    task = app.tasks["compute.diag.noop"]
    task.push_request(id="t-2", args=[], kwargs={}, called_directly=False,
                      callbacks=[starmap], errbacks=[starmap], chain=[step], chord=starmap,
                      group="g-1", group_index=0)
    try:
        with pytest.raises(signing.UnsignedTask, match="not signed"):
            task()
        assert {field: getattr(task.request, field) for field in base.CONTINUATIONS} == \
            dict.fromkeys(base.CONTINUATIONS)
    finally:
        task.pop_request()


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
