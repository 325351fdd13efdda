"""Where a training job keeps its tensors and metrics: one folder, files by round and replica.

Weights never travel through Redis: tasks name the job's folder (the
``--output`` model folder) and read and write there::

    OUTPUT/
      metrics.jsonl              one row per closed round (and baseline.jsonl)
      training.png               loss and validation accuracy per round
      rounds/
        round-0003/
          global.safetensors     θ of round 3 (written once, by the close of round 2)
          outer.safetensors      the outer momentum after round 2 (written with θ)
          optim-01.safetensors   replica 1's inner AdamW state after round 2 (by replica 1)
          delta-01.safetensors   replica 1's Δ = θ − θ₁
          ckpt-01.safetensors    replica 1's progress inside the round (weights + AdamW)

Tensors are safetensors files, written whole under a temporary name and
renamed (a reader never sees half a file), read without pickle, and refused
(``Unreadable``) when their size is not what the model's tensors take.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

#: A tensor file may exceed the tensors' bytes by this much (its JSON header).
HEADER_SLACK = 1 << 20


class Unreadable(ValueError):
    """A tensor file that is missing, no safetensors file, or not the expected size."""


class Store:
    """The files of one training job, under its output folder."""

    def __init__(self, output: str) -> None:
        self.root = Path(output)
        self.rounds = self.root / "rounds"

    def round_dir(self, number: int) -> Path:
        return self.rounds / f"round-{number:04d}"

    def global_weights(self, number: int) -> Path:
        return self.round_dir(number) / "global.safetensors"

    def delta(self, number: int, replica: int) -> Path:
        return self.round_dir(number) / f"delta-{replica:02d}.safetensors"

    def checkpoint(self, number: int, replica: int) -> Path:
        return self.round_dir(number) / f"ckpt-{replica:02d}.safetensors"

    def inner_state(self, number: int, replica: int) -> Path:
        """Replica ``replica``'s AdamW state at the start of round ``number``."""
        return self.round_dir(number) / f"optim-{replica:02d}.safetensors"

    def outer_state(self, number: int) -> Path:
        """The outer momentum the close of round ``number`` starts from."""
        return self.round_dir(number) / "outer.safetensors"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def baseline(self) -> Path:
        return self.root / "baseline.jsonl"

    @property
    def plot(self) -> Path:
        return self.root / "training.png"

    def closed(self, number: int) -> bool:
        """Round ``number`` is over: the next round's θ exists, or the job finished."""
        return (os.path.exists(self.global_weights(number + 1))  # False on any OSError
                or os.path.exists(self.root / "done.json"))

    def drop_round(self, number: int) -> None:
        shutil.rmtree(self.round_dir(number), ignore_errors=True)

    def drop_rounds(self) -> None:
        shutil.rmtree(self.rounds, ignore_errors=True)


def save(path: Path, tensors: dict[str, Any]) -> int:
    """Write ``tensors`` to ``path`` atomically (temporary name, then rename); bytes written."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    try:
        save_file({name: t.detach().contiguous().cpu() for name, t in tensors.items()},
                  str(partial))
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path.stat().st_size


def load(path: Path, expected_bytes: int | None = None) -> dict[str, Any]:
    """The tensors in ``path`` (safetensors: no code runs on reading), or Unreadable.

    ``expected_bytes``: the tensors' total size; a file much larger is refused
    before it is read (a volunteer's file is a stranger's).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise Unreadable(f"{path.name} does not exist") from None
    except OSError as exc:
        raise Unreadable(f"{path.name}: {exc}") from None
    if expected_bytes is not None and size > expected_bytes + HEADER_SLACK:
        raise Unreadable(f"{path.name} is {size} bytes; the model's tensors take "
                         f"{expected_bytes}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise Unreadable(f"{path.name} is no safetensors file: {str(exc)[:200]}") from None


def append_row(path: Path, row: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(row, separators=(",", ":")) + "\n")


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The JSON rows of ``path`` (none when it does not exist; a torn last line is skipped)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    rows = []
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows
