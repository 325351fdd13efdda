"""The training plot: loss and validation accuracy per round, the baseline's beside them."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _series(rows: list[dict[str, Any]], field: str) -> tuple[list[int], list[float]]:
    points = [(int(r["round"]) + 1, float(r[field])) for r in rows
              if isinstance(r.get("round"), int) and isinstance(r.get(field), int | float)]
    return [x for x, _ in points], [y for _, y in points]


def draw(rows: list[dict[str, Any]], baseline: list[dict[str, Any]], path: Path) -> None:
    """Write a PNG of the rounds' metrics (and the single-process baseline's, if any)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (loss_axes, accuracy_axes) = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    try:
        for data, name, style in ((rows, "DiLoCo", "-o"), (baseline, "one process", "--s")):
            if not data:
                continue
            for field, label in (("train_loss", "train"), ("val_loss", "validation")):
                x, y = _series(data, field)
                if x:
                    loss_axes.plot(x, y, style, label=f"{name}, {label}", markersize=3)
            x, y = _series(data, "val_accuracy")
            if x:
                accuracy_axes.plot(x, [100 * v for v in y], style, label=name, markersize=3)
        loss_axes.set(title="Loss", xlabel="round", ylabel="cross-entropy")
        accuracy_axes.set(title="Validation accuracy", xlabel="round", ylabel="%")
        for axes in (loss_axes, accuracy_axes):
            axes.grid(alpha=0.3)
            if axes.lines:
                axes.legend(fontsize=8)
        figure.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.part")
        figure.savefig(partial, format="png")
        partial.replace(path)
    finally:
        plt.close(figure)
