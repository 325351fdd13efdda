"""How each shipped job is split: the parts, the assemble step, and the checks done first.

Everything here runs on the submitter. Inputs are checked before anything is
sent (a missing file, a bad spec or an empty corpus fails at once, with a
message naming it), and every argument that travels is a path or a small
JSON value: volunteers read and write the data where it lives.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

from celery import Celery

from compute import data, inference, jobs, render, sql_inputs, sql_plan, train, train_spec
from compute.errors import InvalidArgument
from compute.sdk import Needs


def _queue(gpu: bool, region: str | None) -> str:
    return Needs(gpu=gpu, region=region).queue()


def _absolute(path: str) -> str:
    return path if "://" in path else str(Path(path).resolve())


def sql(app: Celery, query: str, output: str, *,
        part_bytes: int = sql_inputs.DEFAULT_PART_BYTES,
        small_bytes: int = sql_inputs.DEFAULT_SMALL_BYTES, region: str | None = None,
        map_name: str | None = None) -> jobs.Job:
    """One SELECT over Parquet/CSV files, split across volunteers (see ``compute.data``)."""
    output = _absolute(output)
    planned = sql_plan.plan(query, part_bytes=part_bytes, small_bytes=small_bytes,
                            map_name=map_name)
    folder = sql_plan.output_folder(output, uuid.uuid4().hex[:12])
    queue = _queue(False, region)
    shared = {"sql": planned.part_sql, "format": planned.format, "dialect": planned.dialect,
              "small_files": planned.small_files, "inline_limit": planned.inline_limit}
    if map_name:
        shared["map"] = map_name
    parts = [data.sql_part.s(shared, pieces, f"{folder}/part-{index:05d}.parquet")
             .set(queue=queue) for index, pieces in enumerate(planned.parts)]
    merge = {"sql": planned.merge_sql, "schema": planned.partial_schema, "folder": folder}
    return jobs.submit(app, "sql", parts, data.sql_merge.s(merge, output).set(queue=queue),
                       {"query": query, "output": output, "parts": len(parts)},
                       max_parts=sql_plan.MAX_PARTS)


def aggregate(app: Celery, source: str, spec: dict[str, Any], output: str, *,
              chunk_bytes: int = sql_inputs.DEFAULT_PART_BYTES, region: str | None = None
              ) -> jobs.Job:
    """The JSON spec of earlier versions: translated to SQL (``compute.data.spec_to_sql``)."""
    query = data.spec_to_sql(_absolute(source), spec)
    return sql(app, query, output, part_bytes=chunk_bytes, region=region,
               map_name=spec.get("map"))


def embed(app: Celery, corpus: str, output: str, *, rows_per_part: int = 256,
          gpu: bool = False, region: str | None = None) -> jobs.Job:
    corpus, output = _absolute(corpus), _absolute(output)
    count = len(inference.read_lines(corpus, "embed"))
    if count == 0:
        raise InvalidArgument(f"embed: corpus {corpus!r} is empty: nothing to embed")
    if rows_per_part < 1:
        raise InvalidArgument("embed: rows per part must be at least 1")
    queue = _queue(gpu, region)
    parts_dir = str(Path(output).with_suffix("")) + ".parts"
    parts = [inference.embed_part.s(corpus, start, min(count, start + rows_per_part),
                                    parts_dir).set(queue=queue)
             for start in range(0, count, rows_per_part)]
    return jobs.submit(app, "embed", parts,
                       inference.assemble_embeddings.s(output).set(queue=queue),
                       {"corpus": corpus, "output": output, "documents": count})


def search(app: Celery, embeddings: str, query: str, *, k: int = 5, parts: int = 4,
           corpus: str | None = None, gpu: bool = False, region: str | None = None
           ) -> jobs.Job:
    import numpy as np

    embeddings = _absolute(embeddings)
    inference.check_k(k)
    if not query.strip():
        raise InvalidArgument("search: the query is empty")
    try:
        rows = int(np.load(embeddings, mmap_mode="r").shape[0])
    except FileNotFoundError:
        raise InvalidArgument(f"search: embeddings {embeddings!r} do not exist") from None
    except ValueError as exc:
        raise InvalidArgument(f"search: {embeddings!r} is not a .npy matrix: {exc}") from None
    if rows == 0:
        raise InvalidArgument(f"search: {embeddings!r} holds no embeddings")
    queue = _queue(gpu, region)
    step = -(-rows // max(1, min(parts, rows)))
    pieces = [inference.search_part.s(embeddings, start, min(rows, start + step), query, k)
              .set(queue=queue) for start in range(0, rows, step)]
    return jobs.submit(app, "search", pieces,
                       inference.merge_hits.s(k, _absolute(corpus) if corpus else None)
                       .set(queue=queue),
                       {"embeddings": embeddings, "query": query, "k": k})


def render_frames(app: Celery, blend: str, first: int, last: int, out_dir: str, *,
                  settings: dict[str, Any] | None = None, gpu: bool = False,
                  region: str | None = None) -> jobs.Job:
    blend, out_dir = _absolute(blend), _absolute(out_dir)
    settings = render.check_settings(settings)
    _exists(blend, "render")
    if not 0 <= first <= last:
        raise InvalidArgument(f"render: frames {first}-{last} are not a range")
    queue = _queue(gpu, region)
    parts = [render.frame.s(blend, number, out_dir, settings).set(queue=queue)
             for number in range(first, last + 1)]
    return jobs.submit(app, "render", parts, render.collect_frames.s().set(queue=queue),
                       {"blend": blend, "frames": [first, last], "output": out_dir})


def render_tiles(app: Celery, blend: str, number: int, output: str, *, grid: tuple[int, int],
                 settings: dict[str, Any] | None = None, gpu: bool = False,
                 region: str | None = None) -> jobs.Job:
    blend, output = _absolute(blend), _absolute(output)
    settings = render.check_settings(settings)
    _exists(blend, "render")
    cols, rows = grid
    if not (1 <= cols <= render.MAX_GRID and 1 <= rows <= render.MAX_GRID):
        raise InvalidArgument(f"render: a grid is 1-{render.MAX_GRID} by 1-{render.MAX_GRID} "
                              f"tiles; got {cols}x{rows}")
    queue = _queue(gpu, region)
    tiles_dir = str(Path(output).with_suffix("")) + ".tiles"
    parts = [render.tile.s(blend, number, [col, row], [cols, rows], tiles_dir, settings)
             .set(queue=queue) for row in range(rows) for col in range(cols)]
    return jobs.submit(app, "render", parts,
                       render.assemble_tiles.s(output).set(queue=queue),
                       {"blend": blend, "frame": number, "grid": [cols, rows],
                        "output": output})


def train_classifier(app: Celery, data_path: str, output: str, **settings: Any) -> jobs.Job:
    """A DiLoCo training job (``compute.train``): its record now, its rounds on the workers.

    ``settings``: any of ``compute.train_spec`` (rounds, replicas, inner_steps, ...).
    The submitter needs no torch: the team queue's ``start`` builds the model.
    """
    job_id = str(uuid.uuid4())
    spec = train_spec.check({"job": job_id, "data": _absolute(data_path),
                             "output": _absolute(output),
                             **{k: v for k, v in settings.items() if v is not None}}, "train")
    _exists(spec["data"], "train")
    _check_dataset(spec)
    parts = [train.replica_id(job_id, number, index) for number in range(spec["rounds"])
             for index in range(spec["replicas"])]
    if len(parts) > jobs.MAX_PARTS * 10:
        raise InvalidArgument(f"train: {spec['rounds']} rounds of {spec['replicas']} replicas "
                              f"is more than {jobs.MAX_PARTS * 10} tasks; take more inner "
                              "steps per round instead")
    job = jobs.Job(id=job_id, kind="train", parts=parts, assemble=job_id, created=time.time(),
                   details={"output": spec["output"], "data": spec["data"],
                            "model": spec["model"], "rounds": spec["rounds"], "round": 0,
                            "replicas": spec["replicas"], "queue": spec["queue"]})
    jobs.record(app, job)
    train.start.apply_async((spec,), queue=spec["queue"])
    return job


def _check_dataset(spec: dict[str, Any]) -> None:
    """The dataset read here first, when this client has it (the built-in CSV always)."""
    from compute import train_models

    try:
        reader = train_models.dataset(spec["dataset"])
    except ValueError:
        return  # a team's own, registered on the workers only
    try:
        reader(spec["data"], spec["options"], spec["seed"])
    except ValueError as exc:
        raise InvalidArgument(f"train: {exc}") from None


def _exists(path: str, kind: str) -> None:
    if "://" not in path and not Path(path).is_file():
        raise InvalidArgument(f"{kind}: {path!r} does not exist")
