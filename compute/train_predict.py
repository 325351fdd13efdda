"""Labels from a model folder a training job saved (``classifier.json`` says which kind).

The folder is read with safetensors and JSON only: no pickle. A model is
loaded once per process (per folder and its files' times).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from compute import train_models

_LOADED: dict[tuple, Any] = {}


def _read(folder: Path) -> tuple[dict[str, Any], list[str], dict[str, Any]]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        config = json.loads((folder / "classifier.json").read_text())
        labels = json.loads((folder / "labels.json").read_text())
        weights = load_file(str(folder / "classifier.safetensors"))
    except FileNotFoundError as exc:
        raise ValueError(f"{str(folder)!r} is no model folder of a training job "
                         f"({Path(exc.filename or '').name} is missing)") from None
    except (OSError, ValueError, SafetensorError) as exc:
        raise ValueError(f"{str(folder)!r}: unreadable model files: {str(exc)[:200]}") from None
    if (not isinstance(config, dict) or config.get("kind") not in ("bow", "minilm")
            or not isinstance(labels, list) or not labels
            or not all(isinstance(label, str) for label in labels)):
        raise ValueError(f"{str(folder)!r}: classifier.json or labels.json is not one a "
                         "training job wrote")
    return config, labels, weights


def _load(folder: Path, device: str) -> tuple[Any, list[str]]:
    import torch

    config, labels, weights = _read(folder)
    if config["kind"] == "bow":
        buckets = config.get("buckets")
        weight = weights.get("weight")
        if (not isinstance(buckets, int) or weight is None
                or tuple(weight.shape) != (buckets, len(labels))):
            raise ValueError(f"{str(folder)!r}: the classifier's weights do not fit its config")
        module = torch.nn.EmbeddingBag(buckets, len(labels), mode="mean")
        module.weight.data.copy_(weight)

        return (lambda texts: train_models.bag_logits(module, texts, buckets, "cpu")), labels
    encoder = train_models.load_encoder(str(folder), device)
    classifier = train_models.MiniLMClassifier(encoder, len(labels))
    try:
        classifier.head.load_state_dict(weights)
    except RuntimeError as exc:
        raise ValueError(f"{str(folder)!r}: the classifier's weights do not fit: "
                         f"{str(exc)[:200]}") from None
    classifier.module.to(device).eval()
    return classifier.logits, labels


def classify(folder: str, texts: list[str], device: str) -> tuple[list[str], list[float]]:
    """The most likely label of each text and its probability."""
    import torch

    path = Path(folder)
    try:
        stamp = tuple(p.stat().st_mtime_ns for p in sorted(path.glob("*.json")))
    except OSError:
        stamp = ()
    key = (str(path.resolve()), stamp, device)
    if key not in _LOADED:
        _LOADED.clear()
        _LOADED[key] = _load(path, device)
    logits, labels = _LOADED[key]
    with torch.no_grad():
        probabilities = torch.softmax(logits(texts), dim=1)
    best = probabilities.max(dim=1)
    return ([labels[int(i)] for i in best.indices],
            [round(float(p), 6) for p in best.values])
