"""Typed settings for Idle Accelerator, read from the environment when built.

Broker and result backend use Celery's own variable names
(``CELERY_BROKER_URL``, ``CELERY_RESULT_BACKEND``); every other setting is an
``IDLE_ACCEL_*`` variable and, where it concerns the worker, also a CLI flag.
Nothing here is read at import time: build a :class:`Settings` when needed.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote, urlsplit

from kombu.utils.url import maybe_sanitize_url
from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from compute import namespace, redis_clients
from compute import queues as q
from compute.errors import ConfigError
from compute.hostid import machine_host_id

BROKER_SCHEMES = (*redis_clients.REDIS_SCHEMES, "amqp", "amqps")
BACKEND_SCHEMES = redis_clients.REDIS_SCHEMES
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

CsvTuple = Annotated[tuple[str, ...], NoDecode]

#: Programs that mean "the owner is busy" while they run: games, video calls,
#: streaming and render tools. Matched by process name, case-insensitively.
DEFAULT_EXCLUSIVE = (
    "steam", "gamescope", "lutris", "zoom", "zoom.us", "teams", "ms-teams", "webex",
    "obs", "obs64", "blender", "davinciresolve", "resolve", "premiere pro", "afterfx",
)


def redact(url: str | None) -> str | None:
    """``url`` with any password replaced, safe for logs and error messages."""
    if not url:
        return url
    return ";".join(maybe_sanitize_url(part) for part in url.split(";"))  # Sentinel: each part


def _split_csv(value: Any) -> Any:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


class Settings(BaseSettings):
    """Every setting of a client, a worker or the CLI, in one typed object."""

    model_config = SettingsConfigDict(
        env_prefix="IDLE_ACCEL_",
        extra="forbid",
        frozen=True,
        validate_by_name=True,
        validate_by_alias=True,
    )

    broker_url: str = Field(
        "redis://127.0.0.1:6379/0",
        validation_alias=AliasChoices("CELERY_BROKER_URL", "broker_url"),
        description="Broker URL: redis://, rediss:// (TLS), sentinel:// (Redis Sentinel: "
                    "sentinel://USER:PASSWORD@HOST:PORT;sentinel://HOST:PORT.../DB), amqp:// "
                    "or amqps://.",
    )
    result_backend: str | None = Field(
        None,
        validation_alias=AliasChoices("CELERY_RESULT_BACKEND", "result_backend"),
        description="Result backend URL (redis://, rediss:// or sentinel://); defaults to a "
                    "Redis broker.",
    )
    broker_url_file: str | None = Field(
        None,
        validation_alias=AliasChoices("CELERY_BROKER_URL_FILE", "broker_url_file"),
        description="File holding the whole broker URL (a container secret, e.g. a "
                    "volunteer's enrolled URL); wins over CELERY_BROKER_URL.",
    )
    broker_password_file: str | None = Field(
        None,
        description="File holding the broker user's password (a container secret): put "
                    "into CELERY_BROKER_URL, and into CELERY_RESULT_BACKEND when it names a "
                    "user without a password, so no password sits in the environment.",
    )
    sentinel_master: str = Field(
        "idle-accel", min_length=1,
        description="Redis Sentinel: the name the sentinels monitor the primary under "
                    "(sentinel:// URLs only).",
    )
    sentinel_password: str | None = Field(
        None,
        description="Redis Sentinel: the sentinels' own password, when they have one "
                    "(the data nodes' login is in the URL).",
    )
    region_redis_url: str | None = Field(
        None,
        description="Regions on separate brokers (`idle-accel coordinator --region`, "
                    "`volunteer enroll --region`): the region's own Redis, as an admin user "
                    "(redis://, rediss:// or sentinel://).",
    )
    region_redis_url_file: str | None = Field(
        None,
        description="File holding the region's Redis URL (a container secret); wins over "
                    "IDLE_ACCEL_REGION_REDIS_URL.",
    )
    region_sentinel_master: str | None = Field(
        None,
        description="The master's name of a sentinel:// regional URL (default: "
                    "IDLE_ACCEL_SENTINEL_MASTER's).",
    )
    sentinel_tls_ca: str | None = Field(
        None,
        description="Redis Sentinel over TLS: the CA file that signed the sentinels' and the "
                    "data nodes' certificates; set, every connection to them is TLS, "
                    "verified against it (sentinel:// URLs only).",
    )
    send_replicas: int = Field(
        0, ge=0, le=16,
        description="Redis: after each task sent, wait until this many replicas hold it "
                    "(Redis WAIT, 5 s at most, else the send raises NotReplicated), so a "
                    "failover cannot lose a task whose send returned. 0: do not wait.",
    )
    queue_type: Literal["classic", "quorum"] = Field(
        "classic",
        description="RabbitMQ: the type every task queue is declared with. 'quorum' "
                    "replicates each queue over the cluster's nodes (Raft), so a node's loss "
                    "loses no task; queues already declared keep their type (use a new "
                    "vhost to switch).",
    )
    result_expires: int = Field(
        86_400, ge=60, description="Seconds a task result is kept in Redis."
    )
    visibility_timeout: int = Field(
        15,
        ge=6,
        description="Seconds a vanished worker's tasks wait before going to another worker. "
                    "Redis: how long a lease may go unrenewed (workers renew every third of "
                    "it); RabbitMQ: twice the connection heartbeat.",
    )
    unacked_restore_interval: float = Field(
        5.0, gt=0, description="Redis: seconds between sweeps for tasks whose lease ran out."
    )
    unacked_restore_throttle: int = Field(
        1, ge=1, description="Redis: sweep for real only every Nth interval (kombu's default: 10)."
    )
    name: str = Field(
        "idle-accel@%h",
        min_length=1,
        description="Celery node name of the worker ('%h' is the host name).",
    )
    queues: CsvTuple = Field(
        (), description="Queues the worker consumes, comma-separated (default: cpu, and gpu "
                        "when NVML sees a GPU)."
    )
    region: str | None = Field(
        None, description="Region tag: the worker also consumes that region's pinned queues."
    )
    mode: Literal["volunteer", "dedicated"] = Field(
        "volunteer", description="volunteer: obey the owner; dedicated: always on."
    )
    host_id: str | None = Field(
        None, max_length=128,
        description="Identity of the physical machine, for verified results (default: a digest "
                    "of /etc/machine-id, else the host name).",
    )
    signing_key: str | None = Field(
        None, description="Team side: Ed25519 private key file; every task sent is signed "
                          "with it (`idle-accel keys new`)."
    )
    trusted_key: str | None = Field(
        None, description="Worker side: Ed25519 public key file; when set, the worker runs "
                          "only tasks signed with its private key."
    )
    allow_emergency_when_busy: bool = Field(
        False, description="Take emergency work even while the owner is busy (opt-in)."
    )
    sensor: str = Field(
        "auto", description="Owner sensor: 'auto' (local detectors) or 'file:PATH' (host file)."
    )
    max_message_bytes: int = Field(
        256 * 1024, ge=1024, le=64 * 1024 * 1024,
        description="Largest task arguments or result, as JSON bytes; data travels by reference.",
    )
    status_interval: float = Field(
        5.0, gt=0, le=300, description="Seconds between status reports a worker publishes."
    )
    concurrency: int | None = Field(
        None, ge=1, le=1024, description="Worker pool processes (default: one per CPU)."
    )
    include: CsvTuple = Field((), description="Extra task modules the worker imports.")
    log_level: str = Field("INFO", description="Worker log level.")

    # Owner-idle detection (worker.idle) and policy (worker.policy).
    idle_after: float = Field(
        180.0, ge=0, description="Seconds the owner must be away, without a break, before work."
    )
    preempt_after: float = Field(
        600.0, ge=0, description="Seconds busy after which suspended tasks are requeued."
    )
    locked_idle_after: float = Field(
        10.0, ge=0, description="Seconds away needed while the screen is locked."
    )
    cpu_busy_percent: float = Field(
        25.0, ge=0, le=100, description="Others' CPU use (% of the machine) that means busy."
    )
    cpu_window: float = Field(
        20.0, gt=0, description="Seconds over which others' CPU use is averaged."
    )
    gpu_busy_percent: float = Field(
        20.0, ge=0, le=100, description="Others' GPU use (% of the busiest GPU) that means busy."
    )
    memory_busy_percent: float = Field(
        90.0, ge=0, le=100, description="Others' memory use (% of RAM) that means busy."
    )
    run_on_battery: bool = Field(False, description="Work while the machine runs on battery.")
    battery_floor: float = Field(
        20.0, ge=0, le=100, description="Battery charge (%) below which it is always busy."
    )
    exclusive_programs: CsvTuple = Field(
        DEFAULT_EXCLUSIVE, description="Programs whose presence means busy, comma-separated."
    )
    require_input: bool = Field(
        True, description="Count the owner as present when input idle time is unknown."
    )
    own_uids: CsvTuple = Field(
        ("10001",), description="User IDs whose processes are the worker's (its container's)."
    )
    poll_interval: float = Field(
        0.1, gt=0, le=10,
        description="Seconds between input checks while the owner is away "
                    "(while present: the sample interval).",
    )
    sample_interval: float = Field(
        1.0, gt=0, le=60, description="Seconds between CPU, GPU, memory and lock readings."
    )
    sensor_max_age: float = Field(
        10.0, ge=0, description="A sensor file older than this counts as busy (0: never)."
    )
    schedule: str | None = Field(
        None,
        description="When work may run, by weekday: 'every_day=18:00-08:00;sat=00:00-24:00' "
                    "(mon..sun, every_day; a window ending before it starts runs past "
                    "midnight; default: always). The preferences file's [when.schedule] wins.",
    )
    timezone: str | None = Field(
        None, description="The schedule's time zone, e.g. Europe/Berlin (default: this "
                          "machine's)."
    )
    cpu_while_present: float = Field(
        0.0, ge=0, le=100,
        description="% of the time CPU work may go on while the owner is present (0: none).",
    )
    max_cpus_percent: float = Field(
        100.0, ge=1, le=100,
        description="Share of the cores the pool uses (without --concurrency); it follows "
                    "changes in the preferences file.",
    )
    cpu_limit_percent: float = Field(
        100.0, ge=5, le=100,
        description="CPU throttle: running tasks run at most this % of the time (a duty cycle "
                    "of stop and continue).",
    )
    task_memory_mb: int = Field(
        0, ge=0, description="A task whose processes use more memory (MiB) is ended and "
                             "requeued (0: no cap)."
    )
    total_memory_mb: int = Field(
        0, ge=0, description="All tasks together: over it, the largest is ended and requeued "
                             "(0: no cap)."
    )
    scratch_disk_gb: float = Field(
        0.0, ge=0, description="A task whose scratch folder grows past this (GB) is ended "
                               "(0: no cap)."
    )
    gpu_while_present: bool = Field(
        False, description="GPU work goes on while the owner is present (others' GPU use "
                           "still stops it)."
    )
    keep_gpu_tasks: bool = Field(
        False, description="On the owner's return, stop GPU tasks in place (keeping their GPU "
                           "memory) instead of ending and requeueing them."
    )
    control_port: int = Field(
        7878, ge=0, le=65535,
        description="The volunteer's control page on 127.0.0.1 (0: off).",
    )
    preferences: str | None = Field(
        None,
        description="The volunteer's preferences file (TOML: schedule, pause and snooze, "
                    "share of cores, CPU throttle, memory and disk caps, GPU, power, the "
                    "control page's port), reloaded on change (default: "
                    "~/.config/idle-accel/preferences.toml).",
    )

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str | None) -> str | None:
        if value:
            from worker.preferences import schedule_text

            schedule_text(value)  # ValueError names the problem
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str | None) -> str | None:
        if value:
            from zoneinfo import ZoneInfo

            try:
                ZoneInfo(value)
            except Exception:  # ZoneInfoNotFoundError, or a malformed key
                raise ValueError(f"{value!r} is not a known time zone") from None
        return value

    @field_validator("queues", "include", "exclusive_programs", "own_uids", mode="before")
    @classmethod
    def _csv(cls, value: Any) -> Any:
        return _split_csv(value)

    @field_validator("queues")
    @classmethod
    def _queue_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(q.check_name(name) for name in value)

    @field_validator("region")
    @classmethod
    def _region(cls, value: str | None) -> str | None:
        return q.check_region(value) if value else None

    @field_validator("host_id")
    @classmethod
    def _host_id(cls, value: str | None) -> str | None:
        return value.strip() or None if value else None

    @field_validator("sensor")
    @classmethod
    def _sensor(cls, value: str) -> str:
        if value != "auto" and not (value.startswith("file:") and len(value) > 5):
            raise ValueError(f"must be 'auto' or 'file:PATH'; got {value!r}")
        return value

    @property
    def sensor_file(self) -> str | None:
        """The host sensor file's path, when the sensor is ``file:PATH``."""
        return self.sensor[5:] if self.sensor.startswith("file:") else None

    @field_validator("own_uids")
    @classmethod
    def _uids(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for uid in value:
            if not uid.isdigit():
                raise ValueError(f"user IDs are numbers; got {uid!r}")
        return value

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        level = value.upper()
        if level not in LOG_LEVELS:
            raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}")
        return level

    @field_validator("unacked_restore_interval", "idle_after", "preempt_after",
                     "locked_idle_after", "cpu_window", "sensor_max_age")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("must be a finite number of seconds")
        return value

    @model_validator(mode="before")
    @classmethod
    def _secrets_from_files(cls, data: Any) -> Any:
        """Fill the broker URL (and its password) from the files that hold them."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        url_file = data.get("broker_url_file") or data.get("CELERY_BROKER_URL_FILE")
        if url_file:
            data.pop("CELERY_BROKER_URL", None)
            data["broker_url"] = read_secret(url_file, "CELERY_BROKER_URL_FILE")
        password_file = data.get("broker_password_file")
        if password_file:
            password = read_secret(password_file, "IDLE_ACCEL_BROKER_PASSWORD_FILE")
            for key in ("broker_url", "CELERY_BROKER_URL", "result_backend",
                        "CELERY_RESULT_BACKEND"):
                if isinstance(data.get(key), str):
                    data[key] = _with_password(data[key], password)
        return data

    @field_validator("broker_url")
    @classmethod
    def _broker_scheme(cls, value: str) -> str:
        _check_scheme(value, BROKER_SCHEMES)
        return value

    @field_validator("result_backend")
    @classmethod
    def _backend_scheme(cls, value: str | None) -> str | None:
        if value:
            _check_scheme(value, BACKEND_SCHEMES)
        return value or None

    @model_validator(mode="after")
    def _replicas_need_redis(self) -> Settings:
        if self.send_replicas and not self.broker_is_redis:
            raise ValueError("IDLE_ACCEL_SEND_REPLICAS is for a Redis broker; on RabbitMQ "
                             "use IDLE_ACCEL_QUEUE_TYPE=quorum (publisher confirms)")
        return self

    @model_validator(mode="after")
    def _quorum_needs_rabbitmq(self) -> Settings:
        if self.queue_type == "quorum" and self.broker_is_redis:
            raise ValueError("IDLE_ACCEL_QUEUE_TYPE=quorum needs a RabbitMQ broker (amqp:// "
                             "or amqps://): Redis lists have no queue types")
        return self

    @model_validator(mode="after")
    def _one_namespace(self) -> Settings:
        broker, backend = namespace.of_url(self.broker_url), namespace.of_url(self.backend_url)
        if broker != backend:
            raise ValueError("CELERY_RESULT_BACKEND must log in as the same volunteer as "
                             "CELERY_BROKER_URL (an enrolled volunteer's keys live in its "
                             "own namespace)")
        return self

    @model_validator(mode="after")
    def _backend_needed(self) -> Settings:
        if self.result_backend is None and not self.broker_is_redis:
            raise ValueError(
                "CELERY_RESULT_BACKEND must be set to a redis:// or rediss:// URL "
                "when the broker is not Redis (results and checkpoints live in Redis)"
            )
        return self

    @property
    def host(self) -> str:
        """The machine's identity: ``host_id``, else derived from the OS (compute/hostid.py)."""
        return self.host_id or machine_host_id()

    @property
    def namespace(self) -> str:
        """The key prefix of an enrolled volunteer's worker ('' for the team and dedicated)."""
        return namespace.of_url(self.broker_url)

    @property
    def broker_is_redis(self) -> bool:
        return redis_clients.scheme(self.broker_url) in BACKEND_SCHEMES

    @property
    def sentinel_options(self) -> dict[str, Any]:
        """Celery's transport options for a ``sentinel://`` URL (the same for every client)."""
        options: dict[str, Any] = {"master_name": self.sentinel_master}
        sentinel_kwargs: dict[str, Any] = dict(self.sentinel_tls)
        if self.sentinel_password:
            sentinel_kwargs["password"] = self.sentinel_password
        if sentinel_kwargs:
            options["sentinel_kwargs"] = sentinel_kwargs
        return options

    @property
    def sentinel_tls(self) -> dict[str, Any]:
        """redis-py's TLS options for the sentinels and the data nodes behind them, or {}."""
        if not self.sentinel_tls_ca:
            return {}
        return {"ssl": True, "ssl_cert_reqs": "required", "ssl_ca_certs": self.sentinel_tls_ca}

    def redis_options(self, url: str) -> dict[str, Any]:
        """What a Redis client of ``url`` needs beyond the URL: Sentinel's options, or none."""
        return self.sentinel_options if redis_clients.is_sentinel(url) else {}

    @property
    def backend_url(self) -> str:
        """The result backend in effect: the explicit one, else the Redis broker."""
        return self.result_backend or self.broker_url

    @classmethod
    def load(cls, **overrides: Any) -> Settings:
        """Read the environment, apply ``overrides`` (None means "not given").

        Raises :class:`ConfigError` whose message names each bad variable and
        what it allows, with passwords removed.
        """
        given = {key: value for key, value in overrides.items() if value is not None}
        try:
            return cls(**given)
        except ValidationError as exc:
            raise ConfigError(_explain(exc)) from None

    def security_warnings(self) -> list[str]:
        """Plain-language warnings about a broker or backend open to others."""
        warnings = []
        for var, url in (("CELERY_BROKER_URL", self.broker_url),
                         ("CELERY_RESULT_BACKEND", self.backend_url)):
            parts = urlsplit(redis_clients.parts(url)[0])  # a Sentinel URL: its first part
            local = (parts.hostname or "localhost") in ("localhost", "127.0.0.1", "::1")
            if not parts.password and not local:
                warnings.append(f"{var} has no password: anyone who reaches "
                                f"{parts.hostname} can read and inject tasks")
            if parts.scheme in ("redis", "amqp") and not local:
                warnings.append(f"{var} is not encrypted ({parts.scheme}://): "
                                f"use {parts.scheme}s:// across a network")
            elif parts.scheme == redis_clients.SENTINEL and not local:
                warnings.append(f"{var} is not encrypted (sentinel://): keep the sentinels "
                                f"and Redis on a private network")
        return list(dict.fromkeys(warnings))

    def describe(self) -> list[tuple[str, str, str, str]]:
        """(setting, environment variable, value, meaning) rows, secrets removed."""
        rows = []
        for key, field in type(self).model_fields.items():
            value = getattr(self, key)
            if key in ("broker_url", "result_backend", "region_redis_url") and value:
                value = redact(value)
            elif key == "sentinel_password" and value:
                value = "**"
            if isinstance(value, tuple):
                value = ",".join(value)
            rows.append((key, env_name(key), "" if value is None else str(value),
                         field.description or ""))
        return rows


def read_secret(path: str, variable: str) -> str:
    """The text of a secret's file (``variable`` names it in errors); ValueError if unreadable
    or empty."""
    try:
        text = Path(path).read_text().strip()
    except OSError as exc:
        raise ValueError(f"{variable}: cannot read {path} ({exc.strerror})") from None
    if not text:
        raise ValueError(f"{variable}: {path} is empty")
    return text


def _with_password(url: str, password: str) -> str:
    """``url`` with ``password`` for its user, when it names a user and no password
    (in each part of a ``;``-joined Sentinel URL)."""
    if ";" in url:
        return ";".join(_with_password(part, password) for part in redis_clients.parts(url))
    split = urlsplit(url)
    if not split.username or split.password is not None:
        return url
    host = split.netloc.rsplit("@", 1)[1]
    netloc = f"{split.username}:{quote(password, safe='')}@{host}"
    return split._replace(netloc=netloc).geturl()


def env_name(key: str) -> str:
    """The environment variable that sets field ``key``."""
    field = Settings.model_fields[key]
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    return f"IDLE_ACCEL_{key.upper()}"


def _check_scheme(url: str, allowed: tuple[str, ...]) -> None:
    scheme = redis_clients.scheme(url)
    if any(urlsplit(part).scheme != scheme for part in redis_clients.parts(url)):
        raise ValueError(f"every ';'-separated part must have the same scheme; "
                         f"got {redact(url)!r}")
    if scheme not in allowed:
        wanted = ", ".join(f"{s}://" for s in allowed)
        raise ValueError(f"must start with one of {wanted}; got {redact(url)!r}")


def _explain(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors(include_url=False, include_input=False):
        loc = str(error["loc"][0]) if error["loc"] else ""
        if loc in Settings.model_fields:
            where = env_name(loc)
        elif loc.isupper():  # read from the environment under an alias
            where = loc
        else:
            where = f"unknown setting {loc!r}" if loc else "settings"
        message = error["msg"].removeprefix("Value error, ")
        lines.append(f"{where}: {message}")
    return "invalid configuration:\n  " + "\n  ".join(lines)
