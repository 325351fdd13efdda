"""The compose stack's secrets folder: one file per password, made once, never in .env.

``docker-compose.yml`` mounts each file into only the containers of its role
(compose secrets, at ``/run/secrets/NAME``); the services read them there
(``IDLE_ACCEL_BROKER_PASSWORD_FILE``, ``CELERY_BROKER_URL_FILE``), so no
password is in a container's environment, ``docker inspect`` or
``docker compose config``. The folder is the owner's only (0700); the files in
it are 0644, since compose mounts them as they are and the services run as
their own users (10001, 10002).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

#: The passwords ``init`` makes; ``volunteer_broker_url`` is written after enrolling.
PASSWORDS = ("redis_admin_password", "redis_team_password", "redis_coordinator_password",
             "flower_password")
VOLUNTEER_URL = "volunteer_broker_url"


def init(folder: Path) -> dict[str, str]:
    """Make ``folder`` and every missing password file in it: name -> 'made' | 'kept'."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    done = {}
    for name in PASSWORDS:
        path = folder / name
        if path.exists() and path.read_text().strip():
            done[name] = "kept"
            continue
        write(path, secrets.token_urlsafe(32))
        done[name] = "made"
    return done


def write(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` (mode 0644: read by the containers' users)."""
    temp = path.with_name(f".{path.name}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    with os.fdopen(fd, "w") as handle:
        handle.write(text + "\n")
    os.chmod(temp, 0o644)
    os.replace(temp, path)
