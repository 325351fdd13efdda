"""Signed tasks: only the team's key can make a worker run a task.

Anyone holding the broker's credentials (every volunteer does) can push a
message into a queue. With signing on, the team signs each task it sends
with an Ed25519 private key (``IDLE_ACCEL_SIGNING_KEY``); workers hold only
the public key (``IDLE_ACCEL_TRUSTED_KEY``) and refuse, before the task's
code runs, every task whose signature is missing or does not match. A
volunteer can verify but never sign.

A signature covers the task's name, id, arguments and keyword arguments, and
its *continuations*: what a worker does on the task's behalf once it ran,
its links (``callbacks``), errbacks, the rest of its chain and its chord's
body, with the group and place in it (``group``, ``group_index``) that its
chord part counts as. Continuations are covered whole, every field of each
signature (options and nested continuations included): Celery hands them
from ``send_task`` to the worker's request unchanged but for JSON (tuples
become lists, a single link a list of one; checked on a real worker in
tests/integration/test_signing.py), so both sides take the digest of the
same JSON form (``EMBED_HEADER``), written with kombu's JSON, the message's
own serializer. A message whose continuations were altered, added or
swapped is refused. One that carries none at all is not: nothing is done on
its behalf then, and that is how the coordinator hands a team task to a
volunteer (``compute/coordinator/envelope.py`` drops them and runs them
itself). A refused task gets nothing done on its behalf either: its
continuations are dropped before Celery's failure handling would call its
errbacks, fail its chain or count its chord part (``compute/base.py``).

Work that a worker itself sends on (a chord's assemble step, a chain's next
task, a link, an errback) cannot be signed by the worker: its first argument
is a result. So when the team sends a task, every continuation embedded in
it, nested ones too, receives a *grant*: the team's signature over the
continuation's name, its id (frozen when the team sends it: a grant is good
for that one task id), its keyword arguments, its own trailing arguments,
``lead``, the number of arguments the worker that sends it on puts before
them (1: the previous step's result, or the failed task's id for an errback;
0 for an immutable signature), and the digest of the continuations it will
carry in turn (exactly those, or none, as for a signed task). The worker
that sends it on passes the grant along; the receiver checks it, that its id
is the granted one, and that its arguments are exactly ``lead`` unsigned
ones followed by the granted ones. Only those leading arguments, the results
of earlier steps, are unsigned: no more than a volunteer could already forge
by returning a wrong result (which verified results, ``verify=k``, catch).

Continuations are plain task signatures, nested as deep as wanted (links of
links, a chord body's link, ``a | b | c``, ``chain=``). A group, chain or
chord *given as* a continuation (``link=b | c``, a chord whose body is a
chain) is rebuilt by Celery on the worker that sends it on, into messages
no grant can foresee: its tasks are refused.

Signatures and digests cover the JSON the worker receives (kombu's JSON:
``tuple`` -> list, keys -> strings, a ``datetime`` stays one), so both sides
compute the same bytes. ``sign_options`` signs copies of the continuations in
that form, so the caller's signatures are left as they were.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from kombu.utils import json as kombu_json

from compute.errors import ConfigError, IdleAccelError

SIGNATURE_HEADER = "idle_accel_sig"
GRANT_HEADER = "idle_accel_grant"
#: The digest of the continuations a signed task carries (its signature covers it).
EMBED_HEADER = "idle_accel_embed"
#: What a worker may do on a task's behalf once it ran (the request's fields).
CONTINUATIONS = ("callbacks", "errbacks", "chain", "chord")


class UnsignedTask(IdleAccelError):
    """A worker that trusts a key refused a task that key did not sign (the message says why)."""


def new_keys(directory: Path) -> tuple[Path, Path]:
    """A new key pair: ``team.key`` (private, mode 0600) and ``team.pub`` (for workers)."""
    directory.mkdir(parents=True, exist_ok=True)
    private = Ed25519PrivateKey.generate()
    key_path, pub_path = directory / "team.key", directory / "team.pub"
    if key_path.exists():
        raise ConfigError(f"{key_path} exists: refusing to overwrite a signing key")
    key_path.touch(mode=0o600)
    key_path.write_bytes(private.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    pub_path.write_bytes(private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return key_path, pub_path


def _load(path: str, what: str, kind: str, read: Any, cls: type) -> Any:
    try:
        key = read(Path(path).read_bytes())
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"{what} {path}: cannot be read as a PEM {kind} key: {exc}") from None
    if not isinstance(key, cls):
        raise ConfigError(f"{what} {path}: not an Ed25519 key (use `idle-accel keys new`)")
    return key


def load_private(path: str) -> Ed25519PrivateKey:
    return _load(path, "signing key", "private",
                 lambda data: serialization.load_pem_private_key(data, password=None),
                 Ed25519PrivateKey)


def load_public(path: str) -> Ed25519PublicKey:
    return _load(path, "trusted key", "public", serialization.load_pem_public_key,
                 Ed25519PublicKey)


def _as_received(value: Any) -> Any:
    """``value`` as the worker receives it: through kombu's JSON, the message's serializer."""
    return kombu_json.loads(kombu_json.dumps(value))


def _canonical(*parts: Any) -> bytes:
    return kombu_json.dumps(_as_received(list(parts)), sort_keys=True, separators=(",", ":"),
                            ensure_ascii=True).encode()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def task_payload(name: str, task_id: str, args: Any, kwargs: Any,
                 embed: str | None = None) -> bytes:
    """What the team signs for a task: ``embed`` is the digest of its continuations."""
    return _canonical("task", name, task_id, list(args or ()), dict(kwargs or {}), embed)


def grant_payload(name: str, task_id: str | None, tail: Any, kwargs: Any, lead: Any = None,
                  embed: str | None = None) -> bytes:
    """What the team signs for a continuation: its name, id, keyword arguments, trailing
    arguments, how many unsigned ones come before them, and the digest of its own."""
    return _canonical("grant", name, task_id, list(tail or ()), dict(kwargs or {}), lead, embed)


def embed_digest(carried: dict) -> str:
    """The digest of continuations (``CONTINUATIONS``, plus ``group`` and ``group_index``)."""
    return hashlib.sha256(_canonical("embed", carried)).hexdigest()


def _listed(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def _carried(callbacks: Any, errbacks: Any, chain: Any, chord: Any, group: Any,
             group_index: Any) -> dict:
    """Continuations in the one form both sides digest. A group counts only with a chord:
    without one nothing is counted, and a group a worker makes when it sends several links
    on at once gets its id there, unknown to the team."""
    return {"callbacks": callbacks, "errbacks": errbacks, "chain": chain, "chord": chord or None,
            "group": group if chord else None, "group_index": group_index if chord else None}


def _bare(carried: dict) -> bool:
    """True when a message carries no continuation: nothing is done on its behalf."""
    return not any(carried[field] for field in CONTINUATIONS)


# -- the sending side ---------------------------------------------------------------------------

def _sent_on(options: dict, chain: list | None = None) -> dict:
    """What the receiver of a message sent with ``options`` (``send_task``'s, or a
    signature's when a worker sends it on) carries; ``chain``: a chain step's, which the
    worker gives it (the steps after it) in place of its own."""
    return _carried(_listed(options.get("link")), _listed(options.get("link_error")),
                    _listed(options.get("chain")) if chain is None else chain,
                    options.get("chord"), options.get("group_id"), options.get("group_index"))


def _is_signature(sig: Any) -> bool:
    return isinstance(sig, dict) and isinstance(sig.get("task"), str)


def _grant_all(key: Ed25519PrivateKey, carried: dict) -> None:
    """Grant every continuation of ``carried``, those each will send on first (its grant
    covers them, grants included)."""
    chain = carried["chain"]
    for index, step in enumerate(chain):  # chain[-1] runs next and carries chain[:-1]
        _grant(key, step, chain[:index])
    for sig in (*carried["callbacks"], *carried["errbacks"], carried["chord"]):
        _grant(key, sig, None)


def _grant(key: Ed25519PrivateKey, sig: Any, chain: list | None) -> None:
    if not _is_signature(sig):
        return
    options = sig.get("options")
    if not isinstance(options, dict):
        options = sig["options"] = {}
    if not options.get("task_id"):
        options["task_id"] = str(uuid.uuid4())  # a grant is good for one task id
    carried = _sent_on(options, chain)
    # a chain step's own chain (the steps after it) was granted before it, by the caller
    _grant_all(key, carried if chain is None else {**carried, "chain": []})
    task_id, tail, kwargs = options["task_id"], list(sig.get("args") or ()), sig.get("kwargs")
    lead = 0 if sig.get("immutable") else 1
    digest = embed_digest(carried)
    grant = {"id": task_id, "tail": tail, "lead": lead, "next": digest,
             "sig": _b64(key.sign(grant_payload(sig["task"], task_id, tail, kwargs, lead,
                                                digest)))}
    options["headers"] = {**(options.get("headers") or {}), GRANT_HEADER: grant}


#: ``send_task``'s option for each continuation a worker's request carries.
_OPTION = {"callbacks": "link", "errbacks": "link_error", "chain": "chain", "chord": "chord"}


def sign_options(key: Ed25519PrivateKey, name: str, args: Any, kwargs: Any,
                 options: dict) -> None:
    """Sign a task about to be sent (``send_task`` options, with its ``task_id``), in place.

    Its continuations are replaced by signed copies in the form the worker receives
    (each granted, with an id of its own); the caller's signatures are not changed.
    """
    carried = _as_received(_sent_on(options))
    _grant_all(key, carried)
    for field, option in _OPTION.items():
        if carried[field]:
            options[option] = carried[field]
    digest = embed_digest(carried)
    headers = options["headers"] = dict(options.get("headers") or {})
    headers[EMBED_HEADER] = digest
    headers[SIGNATURE_HEADER] = _b64(key.sign(task_payload(name, options["task_id"], args,
                                                           kwargs, digest)))


# -- the receiving side -------------------------------------------------------------------------

def _valid(key: Ed25519PublicKey, signature: Any, payload: bytes) -> bool:
    try:
        key.verify(base64.b64decode(str(signature), validate=True), payload)
    except (InvalidSignature, ValueError):
        return False
    return True


def received(request: Any) -> dict:
    """The continuations a worker's request carries, in the form ``embed_digest`` takes."""
    def field(name: str) -> Any:
        return getattr(request, name, None) or []  # None, [], {}: Celery does nothing

    return _carried(field("callbacks"), field("errbacks"), field("chain"), field("chord"),
                    getattr(request, "group", None), getattr(request, "group_index", None))


def _carries(carried: dict, digest: Any) -> bool:
    """True when a message carries exactly the continuations of ``digest``, or none."""
    if _bare(carried):
        return True
    try:
        return isinstance(digest, str) and embed_digest(carried) == digest
    except (TypeError, ValueError):  # not JSON: nothing the team signed
        return False


def check(key: Ed25519PublicKey, request: Any, name: str) -> None:
    """Raise :class:`UnsignedTask` unless the team's key signed this task (or granted it)."""
    args, kwargs = list(request.args or ()), dict(request.kwargs or {})
    carried = received(request)
    signature = getattr(request, SIGNATURE_HEADER, None)
    if signature is not None:
        digest = getattr(request, EMBED_HEADER, None)
        if _carries(carried, digest) and _valid(key, signature, task_payload(
                name, request.id, args, kwargs, digest)):
            return
        raise UnsignedTask(f"{name}[{request.id}] refused: its signature does not match "
                           "(wrong key, or the task or its continuations were altered)")
    grant = getattr(request, GRANT_HEADER, None)
    if isinstance(grant, dict):
        tail, task_id, lead, digest = (grant.get("tail"), grant.get("id"), grant.get("lead"),
                                       grant.get("next"))
        if (isinstance(tail, list) and isinstance(task_id, str) and task_id == request.id
                and type(lead) is int and lead in (0, 1) and len(args) == lead + len(tail)
                and args[lead:] == tail and _carries(carried, digest)
                and _valid(key, grant.get("sig"), grant_payload(name, task_id, tail, kwargs,
                                                                lead, digest))):
            return
        raise UnsignedTask(f"{name}[{request.id}] refused: its grant does not match "
                           "(wrong key, another task id or other arguments, or the "
                           "continuation was altered)")
    raise UnsignedTask(f"{name}[{request.id}] refused: not signed, and this worker runs "
                       "only tasks signed with the team's key (IDLE_ACCEL_TRUSTED_KEY)")
