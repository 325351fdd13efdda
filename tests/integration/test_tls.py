"""Redis over TLS (``rediss://``) on loopback, with a CA made at test time.

The server listens with TLS only (no plain-text port). A worker and a team
client that verify the server against the CA (``ssl_cert_reqs=required``,
``ssl_ca_certs=...``) complete tasks and run the CLI; a client that trusts
another CA, or speaks plain TCP, gets nothing.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import pytest
import redis
from celery import Celery
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from compute.app import create_app
from compute.settings import Settings
from worker.local.redis_server import RedisServer, TlsFiles
from worker.local.worker_process import WorkerProcess, cli_command

from .conftest import STARTED_WORKERS
from .gating import Owner

TIMEOUT = 45


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_pem(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    path.chmod(0o600)
    return path


CaFiles = tuple[Path, x509.Certificate, ec.EllipticCurvePrivateKey]


def make_ca(directory: Path, name: str) -> CaFiles:
    """A self-signed CA certificate (PEM file), with its certificate and key objects."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name(name)).issuer_name(_name(name))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    path = _write_pem(directory / f"{name}.pem", cert.public_bytes(serialization.Encoding.PEM))
    return path, cert, key


def make_server_cert(directory: Path, ca: x509.Certificate,
                     ca_key: ec.EllipticCurvePrivateKey) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost signed by ``ca``: (cert file, key file)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    names = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
    cert = (x509.CertificateBuilder().subject_name(_name("redis on loopback"))
            .issuer_name(ca.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    cert_path = _write_pem(directory / "server.pem", cert.public_bytes(serialization.Encoding.PEM))
    key_path = _write_pem(directory / "server.key", key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return cert_path, key_path


def require_tls(binary: str) -> None:
    """Fail under CI, else skip, when ``binary`` was built without TLS (no ``tls-port``)."""
    probe = subprocess.run([binary, "-"], input="port 0\ntls-port 0\n", capture_output=True,
                           text=True, timeout=10)
    if "Bad directive" not in probe.stdout + probe.stderr:
        return
    message = f"{binary} was built without TLS (BUILD_TLS=yes); the system redis-server has it"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@dataclass
class TlsBroker:
    server: RedisServer
    rogue_ca: Path
    directory: Path
    app: Celery | None = None

    def env(self, url: str | None = None) -> dict[str, str]:
        url = url or self.server.url(0)
        return {"CELERY_BROKER_URL": url, "CELERY_RESULT_BACKEND": url}

    def url_trusting(self, ca: Path) -> str:
        """The server's ``rediss://`` URL, but verifying it against ``ca``."""
        base = self.server.url(0).split("?")[0]
        return f"{base}?{urlencode({'ssl_cert_reqs': 'required', 'ssl_ca_certs': str(ca)})}"


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsBroker]:
    directory = tmp_path_factory.mktemp("tls")
    ca_path, ca, ca_key = make_ca(directory, "test-ca")
    rogue_ca, _, _ = make_ca(directory, "rogue-ca")
    cert, key = make_server_cert(directory, ca, ca_key)
    server = RedisServer(directory / "redis", tls=TlsFiles(cert=cert, key=key, ca=ca_path))
    require_tls(server.binary)
    server.start()
    broker = TlsBroker(server, rogue_ca, directory)
    broker.app = create_app(Settings.load(broker_url=server.url(0)))
    try:
        yield broker
    finally:
        broker.app.close()
        server.stop()


@pytest.fixture
def tls_worker(tls: TlsBroker, request: pytest.FixtureRequest) -> Iterator[WorkerProcess]:
    """One ``idle-accel worker`` on the ``rediss://`` URL, its owner away."""
    owner = Owner.away(tls.directory / "owner")
    process = WorkerProcess("tls-1", env=tls.env(), log_path=tls.directory / "tls-1.log",
                            args=("--concurrency", "1", "--sensor", owner.flag,
                                  "--sensor-max-age", "0", "--idle-after", "0"))
    request.node.stash[STARTED_WORKERS] = [process]
    process.start()
    try:
        process.wait_ready(tls.app)
        yield process
    finally:
        process.stop(timeout=20)


def test_a_worker_and_a_client_complete_tasks_over_tls(tls, tls_worker):
    url = tls.server.url(0)
    assert url.startswith("rediss://") and "ssl_cert_reqs=required" in url
    assert tls.app.send_task("compute.diag.noop").get(timeout=TIMEOUT) == {
        "hostname": tls_worker.node}
    burn = tls.app.send_task("compute.diag.burn", [0.5]).get(timeout=TIMEOUT)
    assert burn["hostname"] == tls_worker.node and burn["cpu_seconds"] >= 0.5
    # Held across a lease period (5 s): the worker's own Redis client renews it over TLS.
    assert tls.app.send_task("compute.diag.sleep", [5.5]).get(timeout=TIMEOUT)["seconds"] == 5.5
    stats = tls.app.control.inspect(destination=[tls_worker.node], timeout=5).stats()
    assert stats[tls_worker.node]["leases"]["renewed"] >= 1

    status = subprocess.run([*cli_command(), "fleet", "status", "--json"],
                            env={**os.environ, **tls.env()}, capture_output=True, text=True,
                            timeout=60)
    assert status.returncode == 0, status.stderr
    assert tls_worker.node in {w["node"] for w in json.loads(status.stdout)["workers"]}


def test_a_client_that_does_not_trust_the_ca_is_refused(tls):
    untrusting = redis.Redis.from_url(tls.url_trusting(tls.rogue_ca), socket_timeout=5,
                                      socket_connect_timeout=5)
    with untrusting, pytest.raises(redis.exceptions.ConnectionError,
                                   match="certificate verify failed"):
        untrusting.ping()

    refused = subprocess.run([*cli_command(), "fleet", "status"],
                             env={**os.environ, **tls.env(tls.url_trusting(tls.rogue_ca))},
                             capture_output=True, text=True, timeout=90)
    assert refused.returncode != 0
    assert "certificate verify failed" in refused.stdout + refused.stderr


def test_plain_text_gets_nothing_from_the_tls_port(tls):
    plain = redis.Redis(host="127.0.0.1", port=tls.server.port, password=tls.server.password,
                        socket_timeout=3, socket_connect_timeout=3)
    with plain, pytest.raises(redis.exceptions.ConnectionError):
        plain.ping()
