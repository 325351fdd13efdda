"""Signed tasks: only the team's key can make a worker run a task.

Anyone holding the broker's credentials (every volunteer does) can push a
message into a queue. With signing on, the team signs each task it sends
with an Ed25519 private key (``IDLE_ACCEL_SIGNING_KEY``); workers hold only
the public key (``IDLE_ACCEL_TRUSTED_KEY``) and refuse, before the task's
code runs, every task whose signature is missing or does not match its name,
id, arguments and keyword arguments. A volunteer can verify but never sign.

Work that a worker itself sends on (a chord's assemble step, a chain's next
task, a link) cannot be signed by the worker: its arguments are the results.
So when the team sends a task, every continuation embedded in it receives a
*grant*: the team's signature over the continuation's name, id, keyword
arguments and its own trailing arguments. The worker that sends it on passes
the grant along; the receiver checks it, and that the message's arguments
end with the granted ones. Only the leading arguments, the results of
earlier steps, are unsigned: no more than a volunteer could already forge by
returning a wrong result (which verified results, ``verify=k``, catch).

Signatures cover the JSON form the worker receives (``tuple`` -> list, keys
-> strings), so both sides compute the same bytes.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from compute.errors import ConfigError, IdleAccelError

SIGNATURE_HEADER = "idle_accel_sig"
GRANT_HEADER = "idle_accel_grant"


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
    return json.loads(json.dumps(value))


def _canonical(*parts: Any) -> bytes:
    return json.dumps(_as_received(list(parts)), sort_keys=True, separators=(",", ":"),
                      ensure_ascii=True).encode()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def task_payload(name: str, task_id: str, args: Any, kwargs: Any) -> bytes:
    return _canonical("task", name, task_id, list(args or ()), dict(kwargs or {}))


def grant_payload(name: str, task_id: str | None, tail: Any, kwargs: Any) -> bytes:
    return _canonical("grant", name, task_id, list(tail or ()), dict(kwargs or {}))


# -- the sending side ---------------------------------------------------------------------------

def _continuations(embed: dict) -> Iterator[dict]:
    """Every signature the receiver of a message may send on, nested ones too."""
    stack: list[Any] = [embed.get("chord"), *(embed.get("callbacks") or []),
                        *(embed.get("errbacks") or []), *(embed.get("chain") or [])]
    while stack:
        sig = stack.pop()
        if not isinstance(sig, dict) or "task" not in sig:
            continue
        yield sig
        options = sig.get("options") or {}
        for key in ("link", "link_error", "chain"):
            found = options.get(key) or []
            stack.extend(_listed(found))
        stack.extend((sig.get("kwargs") or {}).get("tasks") or [])  # group / chain / chord
        stack.append((sig.get("kwargs") or {}).get("body"))  # chord's body


def _listed(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def sign_options(key: Ed25519PrivateKey, name: str, args: Any, kwargs: Any,
                 options: dict) -> None:
    """Sign a task about to be sent (``send_task`` options, with its ``task_id``), in place."""
    headers = options["headers"] = dict(options.get("headers") or {})
    headers[SIGNATURE_HEADER] = _b64(key.sign(task_payload(name, options["task_id"], args,
                                                           kwargs)))
    embed = {"chord": options.get("chord"), "callbacks": _listed(options.get("link")),
             "errbacks": _listed(options.get("link_error")),
             "chain": _listed(options.get("chain"))}
    for sig in _continuations(embed):
        sig_options = sig.setdefault("options", {})
        task_id = sig_options.get("task_id")
        grant = {"id": task_id, "tail": _as_received(list(sig.get("args") or ())),
                 "sig": _b64(key.sign(grant_payload(sig["task"], task_id, sig.get("args"),
                                                    sig.get("kwargs"))))}
        sig_options["headers"] = {**(sig_options.get("headers") or {}), GRANT_HEADER: grant}


# -- the receiving side -------------------------------------------------------------------------

def _valid(key: Ed25519PublicKey, signature: Any, payload: bytes) -> bool:
    try:
        key.verify(base64.b64decode(str(signature), validate=True), payload)
    except (InvalidSignature, ValueError):
        return False
    return True


def check(key: Ed25519PublicKey, request: Any, name: str) -> None:
    """Raise :class:`UnsignedTask` unless the team's key signed this task (or granted it)."""
    args, kwargs = list(request.args or ()), dict(request.kwargs or {})
    signature = getattr(request, SIGNATURE_HEADER, None)
    if signature is not None:
        if _valid(key, signature, task_payload(name, request.id, args, kwargs)):
            return
        raise UnsignedTask(f"{name}[{request.id}] refused: its signature does not match "
                           "(wrong key, or the task was altered)")
    grant = getattr(request, GRANT_HEADER, None)
    if isinstance(grant, dict):
        tail = grant.get("tail")
        task_id = grant.get("id")
        if (isinstance(tail, list) and (task_id is None or task_id == request.id)
                and args[len(args) - len(tail):] == tail and len(tail) <= len(args)
                and _valid(key, grant.get("sig"), grant_payload(name, task_id, tail, kwargs))):
            return
        raise UnsignedTask(f"{name}[{request.id}] refused: its grant does not match "
                           "(wrong key, or the continuation was altered)")
    raise UnsignedTask(f"{name}[{request.id}] refused: not signed, and this worker runs "
                       "only tasks signed with the team's key (IDLE_ACCEL_TRUSTED_KEY)")
