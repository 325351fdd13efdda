"""A small kustomize for the tests: just what deploy/kubernetes/ uses, nothing more.

The CI has no kubectl and no network, so the tests render the kustomize layout here:
``resources`` (files and folders), ``namespace``, ``labels`` (metadata labels only),
``patches`` (strategic merge patches given by ``path``, their target named by the patch's
own kind and name) and ``images``. A kustomization that asks for anything else raises
NotImplementedError rather than being rendered wrongly.

The strategic merge is the simple part of Kubernetes' rules: maps merge key by key,
``null`` deletes a key, the lists Kubernetes merges by a key (containers, env, volumes by
``name``; volumeMounts by ``mountPath``) merge item by item, where ``$patch: delete``
drops an item and the patch's items come first (as kustomize 5 orders them); every
other list, and every list of a custom resource (a CRD has no merge keys), is replaced.
``$patch: delete`` on a whole object removes it. When a ``kubectl`` binary is on PATH,
tests/unit/test_kubernetes_manifests.py checks that this renders what ``kubectl
kustomize`` renders.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

SUPPORTED = {"apiVersion", "kind", "namespace", "labels", "resources", "patches", "images"}
#: Lists a built-in kind merges item by item, and the key that matches items.
MERGE_KEYS = {"containers": "name", "initContainers": "name", "env": "name",
              "volumes": "name", "volumeMounts": "mountPath"}
#: Lists Kubernetes merges by a key that this renderer does not implement.
UNSUPPORTED_LISTS = {"ports", "tolerations", "imagePullSecrets", "envFrom",
                     "topologySpreadConstraints"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
                  "PersistentVolume", "StorageClass", "PriorityClass",
                  "ClusterTriggerAuthentication"}


def load_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def render(folder: Path) -> list[dict[str, Any]]:
    """The objects ``kubectl kustomize FOLDER`` would print (in file order)."""
    folder = Path(folder)
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    unknown = set(kustomization) - SUPPORTED
    if unknown:
        raise NotImplementedError(f"{folder}: kustomization fields not implemented here: "
                                  f"{sorted(unknown)}")
    objects: list[dict[str, Any]] = []
    for entry in kustomization.get("resources", []):
        path = folder / entry
        objects += render(path) if path.is_dir() else load_documents(path)
    for patch in kustomization.get("patches", []):
        if set(patch) != {"path"}:
            raise NotImplementedError(f"{folder}: only patches with a path; got {patch}")
        for document in load_documents(folder / patch["path"]):
            objects = _apply_patch(objects, document)
    namespace = kustomization.get("namespace")
    if namespace:
        for obj in objects:
            if obj["kind"] not in CLUSTER_SCOPED:
                obj["metadata"]["namespace"] = namespace
    for entry in kustomization.get("labels", []):
        if set(entry) - {"pairs", "includeSelectors", "includeTemplates"} or \
                entry.get("includeSelectors") or entry.get("includeTemplates"):
            raise NotImplementedError(f"{folder}: labels only on metadata; got {entry}")
        for obj in objects:
            obj["metadata"].setdefault("labels", {}).update(entry["pairs"])
    for image in kustomization.get("images", []):
        if set(image) - {"name", "newName", "newTag"}:
            raise NotImplementedError(f"{folder}: images take name, newName, newTag; got {image}")
        for obj in objects:
            for container in pod_containers(obj):
                container["image"] = _set_image(container["image"], image)
    keys = [(o["apiVersion"], o["kind"], o["metadata"]["name"]) for o in objects]
    duplicates = {key for key in keys if keys.count(key) > 1}
    if duplicates:
        raise ValueError(f"{folder}: objects defined twice: {sorted(duplicates)}")
    return objects


def pod_spec(obj: dict[str, Any]) -> dict[str, Any] | None:
    """The pod template's spec of a workload, else None."""
    if obj["kind"] == "Pod":
        return obj["spec"]
    template = obj.get("spec", {}).get("template")
    if obj["kind"] == "CronJob":
        template = obj["spec"]["jobTemplate"]["spec"]["template"]
    return template["spec"] if template else None


def pod_containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    spec = pod_spec(obj)
    if spec is None:
        return []
    return [*spec.get("initContainers", []), *spec.get("containers", [])]


def _set_image(reference: str, image: dict[str, str]) -> str:
    name, tag = reference, None
    if ":" in reference.rsplit("/", 1)[-1]:
        name, tag = reference.rsplit(":", 1)
    if name != image["name"]:
        return reference
    name = image.get("newName", name)
    tag = image.get("newTag", tag)
    return f"{name}:{tag}" if tag else name


def _apply_patch(objects: list[dict[str, Any]], patch: dict[str, Any]) -> list[dict[str, Any]]:
    def matches(obj: dict[str, Any]) -> bool:
        return (obj["apiVersion"], obj["kind"], obj["metadata"]["name"]) == \
            (patch["apiVersion"], patch["kind"], patch["metadata"]["name"])

    targets = [obj for obj in objects if matches(obj)]
    if len(targets) != 1:
        raise ValueError(f"patch {patch['kind']}/{patch['metadata']['name']} matches "
                         f"{len(targets)} objects")
    if patch.get("$patch") == "delete":
        return [obj for obj in objects if not matches(obj)]
    builtin = "." not in patch["apiVersion"].split("/")[0] or \
        patch["apiVersion"].split("/")[0].endswith(".k8s.io")
    merged = _merge(targets[0], patch, builtin)
    return [merged if matches(obj) else obj for obj in objects]


def _merge(base: Any, patch: Any, builtin: bool) -> Any:
    if not isinstance(base, dict) or not isinstance(patch, dict):
        return copy.deepcopy(patch)
    directive = patch.get("$patch")
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if directive is not None:
        raise NotImplementedError(f"$patch: {directive} on a map")
    result = copy.deepcopy(base)
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, list) and builtin and key in UNSUPPORTED_LISTS:
            raise NotImplementedError(f"strategic merge of the list {key!r}")
        elif isinstance(value, list) and builtin and key in MERGE_KEYS \
                and isinstance(result.get(key), list):
            result[key] = _merge_list(result[key], value, MERGE_KEYS[key], builtin)
        elif isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = _merge(result[key], value, builtin)
        else:
            result[key] = copy.deepcopy(value)
    return result


def _merge_list(base: list[Any], patch: list[Any], key: str, builtin: bool) -> list[Any]:
    """The patch's items first, in its order (merged with their old selves), then the old
    items it does not name, as kustomize 5 orders them."""
    named = {item[key] for item in patch}
    first = []
    for item in patch:
        old = [o for o in base if o.get(key) == item[key]]
        if item.get("$patch") == "delete":
            continue
        if item.get("$patch") is not None:
            raise NotImplementedError(f"$patch: {item['$patch']} in a list")
        first.append(_merge(old[0], item, builtin) if old else copy.deepcopy(item))
    return first + [copy.deepcopy(o) for o in base if o.get(key) not in named]
