"""Bad input gets a clear error and loses nothing: Hypothesis fuzzes every public task.

Every task registered by ``compute.app.BUILTIN_TASK_MODULES`` is called, in
this process through ``task.apply()`` of an app built by ``create_app`` (a
real Redis for checkpoints and progress), with JSON-like garbage (None,
booleans, huge, negative and NaN numbers, strings, nested lists and objects)
and with near-valid arguments (the right shapes, real input files, files of
the wrong kind, out-of-range numbers), in every call shape: positional,
keywords, optional ones left out, one missing, one too many, an unknown or a
repeated keyword. The property: each call either succeeds with a result a
worker can store (JSON), or fails with the project's validation error
(``InvalidArgument`` / ``PayloadTooLarge``) whose message starts with the
task's name and names the argument. Never ``TypeError``, ``KeyError``,
numpy, Arrow, PIL or torch errors; no input file changes, and the pickled .npy
among the inputs is never loaded. A call that does not fit the task's signature
may today still end in Python's ``TypeError`` (see
``test_a_call_that_does_not_fit_the_signature_is_an_invalid_argument``).

What is faked, and why (validation is what is fuzzed; engines would make
thousands of cases take hours):

- ``compute.diag``'s clock: ``sleep`` does not wait and ``burn``'s CPU clock
  jumps, so a valid ``sleep(600)`` or ``burn(600)`` is instant (their
  checkpoints still go to Redis);
- MiniLM (``compute.inference.encode``, ``device``): deterministic unit
  vectors, called only after every argument was checked;
- Cycles' render call (``compute.render._render``): opening the .blend,
  the frame range and the camera check are real Blender;
- the training plot (``compute.train_plot.draw``): matplotlib takes a quarter
  of a second a plot, ten times what the training of a valid case takes.

``compute.data.sql_part`` and ``sql_merge`` run DuckDB for real (the table has 24
rows). Their valid arguments are what ``compute.plans.sql`` sends for a few queries
(``SQL_QUERIES``) over the CSV and Parquet inputs, planned at fixture time, drawn
together where they must agree (``TaskCase.together``: a query and slices of its
format, a merge and its own parts' results, inline or as files). Near misses: slices
that are no slices or of the wrong files, part files the plan did not name, corrupt
inline rows, other columns, SQL that DuckDB rejects, and SQL that reaches for files
the part does not name (``SQL_ESCAPES``), which the locked DuckDB refuses.

``compute.train`` trains for real: the bag-of-words classifier on a 40-row CSV, specs of
1-2 rounds of 1-2 replicas of 1-3 steps of at most 8 rows (``baseline`` trains them all).
``replica`` and ``close_round`` work on two job folders at round 0 (θ written at fixture
time, as ``start`` leaves it), their spec, round and replica drawn together; ``start`` and
``close_round`` send the next tasks to the test Redis, where nothing runs them. Near
misses: specs with one setting wrong (unknown or missing, out of range, of the wrong type,
a relative or unusable path, data that is no UTF-8 ``text,label`` CSV), specs that do not
fit the job's weights (other labels or buckets), replicas' results that are garbage, and
model folders that no job saved.

``checksum``'s ``rounds`` and ``assemble_tiles``' canvas size are valid but
capped (``tame``) so that one case stays cheap. At least ``TOTAL_CASES``
cases run in all (``CASES_PER_TASK`` per task; each test asserts its count).

``test_a_real_worker_refuses_fuzzed_arguments_and_keeps_serving`` sends a
smaller sample through a real ``idle-accel worker`` (no fakes there: inputs
that would start Blender or MiniLM are left out, sleeps and burns are short).
"""

from __future__ import annotations

import base64
import contextlib
import inspect
import itertools
import math
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest import mock

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from celery import Celery
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from kombu.utils.json import dumps as kombu_dumps
from PIL import Image

from compute import data, diag, inference, jobs, plans, render, train_loop, train_plot, train_spec
from compute.app import BUILTIN_TASK_MODULES, create_app
from compute.errors import InvalidArgument
from compute.settings import Settings
from compute.train_store import Store, save

from .waiting import wait_for

#: Cases across all tasks in one run (the default profile), at the least.
TOTAL_CASES = 10_000
#: The message limit of the fuzzed app and worker: small, so PayloadTooLarge is reachable.
MESSAGE_LIMIT = 8192
#: Cases per task sent through a real worker.
WORKER_CASES_PER_TASK = 24
DIM = 384  # MiniLM's embedding size

Call = tuple[list[Any], dict[str, Any]]

# Celery's Redis backend stores task progress (``self.progress``) with redis-py's setex.
pytestmark = pytest.mark.filterwarnings("ignore:Call to deprecated setex:DeprecationWarning")


def public_tasks(app: Celery) -> dict[str, Any]:
    """Every task the built-in task modules register on ``app``, by name."""
    app.loader.import_default_modules()
    return {name: task for name, task in sorted(app.tasks.items())
            if task.__module__ in BUILTIN_TASK_MODULES}


def _registry_names() -> list[str]:
    return list(public_tasks(create_app(Settings.load(broker_url="redis://127.0.0.1:9/0"))))


PUBLIC_TASKS = _registry_names()
CASES_PER_TASK = -(-TOTAL_CASES // len(PUBLIC_TASKS))


# ---- garbage ----------------------------------------------------------------------------

HUGE_NUMBERS = [2**63, -(2**63) - 1, 10**400, -(10**400), 1e308, -1e308, 5e-324,
                math.nan, math.inf, -math.inf, -0.0]
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(HUGE_NUMBERS), st.text(max_size=24),
    st.sampled_from(["", " ", "\0", "null", "NaN", "-1", "../", "*", "sum", "count"]),
)
#: Any JSON value a message can carry (nested lists and objects, small).
JSON = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=12,
)


def outside(low: int, high: int) -> st.SearchStrategy[Any]:
    """Whole numbers just and far outside ``[low, high]``, and numbers that are not whole."""
    return st.sampled_from([low - 1, high + 1, 10**400, -(2**63), float(low), True, str(low)])


@dataclass
class Arg:
    """One argument: values the task must accept (``valid``; the data may still refuse
    them, a sum over a text column say) and near misses (``bad``: one detail wrong)."""

    valid: st.SearchStrategy[Any]
    bad: st.SearchStrategy[Any] = field(default_factory=st.nothing)


def whole(low: int, high: int) -> Arg:
    return Arg(st.integers(low, high), outside(low, high))


# ---- input files ------------------------------------------------------------------------

class Unpickled:
    """In an object .npy: loading it with pickle would create ``marker`` (it must never)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (str(self.marker),))


@dataclass
class Files:
    """Real input files of each kind, files of the wrong kind, and places to write."""

    root: Path
    worker_safe: bool = False  # no input that would start Blender or MiniLM on a real worker
    paths: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        made = self.root / "in"
        for folder in ("in", "out", "parts", "scratch"):
            (self.root / folder).mkdir(parents=True, exist_ok=True)
        (self.root / "folder").mkdir(exist_ok=True)
        p = self.paths
        p["pickle_marker"] = str(self.root / "unpickled")
        rows = 24
        table = pa.table({
            "id": list(range(rows)),
            "country": [["fr", "de", None, "it"][i % 4] for i in range(rows)],
            "amount": [i * 1.5 - 3 for i in range(rows)],
            "qty": [i % 5 for i in range(rows)],
        })
        p["csv"] = str(made / "table.csv")
        pacsv.write_csv(table, p["csv"])
        self.csv_size = Path(p["csv"]).stat().st_size
        p["parquet"] = str(made / "table.parquet")
        pq.write_table(table, p["parquet"], row_group_size=10)  # 3 row groups
        p["binary"] = str(made / "binary.csv")
        Path(p["binary"]).write_bytes(bytes(range(256)) * 4)
        p["empty"] = str(made / "empty.csv")
        Path(p["empty"]).write_bytes(b"")
        p["corpus"] = str(made / "corpus.txt")
        Path(p["corpus"]).write_text("\n".join(f"document {i} about cats" for i in range(12)))
        p["latin1"] = str(made / "latin1.txt")
        Path(p["latin1"]).write_bytes("caf\xe9\n".encode("latin-1") * 3)
        vectors = np.random.default_rng(7).normal(size=(12, DIM)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        for name, array in {"emb": vectors, "emb_1d": vectors[0],
                            "emb_3d": vectors.reshape(12, 2, DIM // 2),
                            "emb_dim": vectors[:, :8], "emb_str": np.array(["a", "b"]),
                            "emb_empty": np.zeros((0, DIM), np.float32)}.items():
            p[name] = str(made / f"{name}.npy")
            np.save(p[name], array)
        p["emb_obj"] = str(made / "emb_obj.npy")
        np.save(p["emb_obj"], np.array([Unpickled(Path(p["pickle_marker"]))], dtype=object),
                allow_pickle=True)
        p["emb_npz"] = str(made / "emb.npz")
        np.savez(p["emb_npz"], a=vectors)
        p["tile"] = str(made / "tile.png")
        Image.new("RGBA", (4, 3), (200, 10, 10, 255)).save(p["tile"])
        p["not_image"] = str(made / "not-image.png")
        Path(p["not_image"]).write_text("not a png")
        p["fake_blend"] = str(made / "fake.blend")
        Path(p["fake_blend"]).write_text("not a blend file")
        p["blend"] = str(render.DEMO_SCENE)
        p["folder"] = str(self.root / "folder")  # a folder where a file is wanted
        p["missing"] = str(self.root / "missing.csv")  # may be written as an output
        p["under_file"] = p["corpus"] + "/x"  # a file as a folder: NotADirectoryError
        p["out"] = str(self.root / "out")
        p["parts"] = str(self.root / "parts")
        p["countries"] = str(made / "countries.csv")  # joined in a query: a small file
        Path(p["countries"]).write_text("code,name\nfr,France\nde,Germany\nit,Italy\n")
        p["sql"] = str(self.root / "sql")
        #: Files that tasks delete (the merge removes its parts' folder), and their content.
        self.kept: dict[str, bytes] = {
            f"{p['sql']}/odd/corrupt/part-00000.parquet": b"PAR1 not Parquet PAR1",
            f"{p['sql']}/odd/other/part-00000.parquet": parquet_bytes(pa.table({"x": [1, 2]})),
        }
        self.jobs = self.plan_sql()
        self.prepare_training()
        self.refresh()

    def prepare_training(self) -> None:
        """A training job's data (CSVs right and wrong), the folders of two jobs at round 0
        (θ written, as ``start`` leaves it: one for ``replica``, one for ``close_round``),
        and model folders for ``predict``: one a job saved, and ones it did not."""
        made, p = self.root / "in", self.paths
        texts = {"sport": "the striker scored a late goal", "cooking": "the chef roasted bread",
                 "weather": "heavy rain flooded the valley"}
        rows = [(f"{texts[label]} on day {i}", label)
                for i, label in enumerate(itertools.islice(itertools.cycle(texts), 40))]
        for name, content in {
            "topics": "text,label\n" + "".join(f"{t},{label}\n" for t, label in rows),
            "topics_two": "text,label\n" + "".join(f"{t},{label}\n" for t, label in rows
                                                   if label != "weather"),  # another shape
            "topics_header": "sentence,topic\n" + "".join(f"{t},{lb}\n" for t, lb in rows),
            "topics_one": "text,label\n" + "".join(f"{t},sport\n" for t, _ in rows),
            "topics_short": "text,label\na goal,sport\nrain,weather\n",  # none to validate
            "topics_blank": "text,label\na goal,sport\nrain,\n",  # a row without its label
        }.items():
            p[name] = str(made / f"{name}.csv")
            Path(p[name]).write_text(content)
        p["topics_latin1"] = str(made / "topics_latin1.csv")  # the header right, not UTF-8
        Path(p["topics_latin1"]).write_bytes(
            ("text,label\n" + "caf\xe9 cr\xe8me,cooking\nthe goal,sport\n" * 10).encode("latin-1"))
        spec = train_spec.check({"job": TRAIN_JOBS[0], "output": str(self.root / "unused"),
                                 "data": p["topics"], "model": "bow-classifier"})
        run = train_loop.build(spec, train_loop.load_data(spec), "cpu")
        models = made / "models"
        p["model"] = str(models / "bow")
        run.model.save(Path(p["model"]))
        saved = {name: (Path(p["model"]) / name).read_bytes()
                 for name in ("classifier.json", "labels.json", "classifier.safetensors")}
        odd = {  # model folders with one file missing or wrong
            "model_half": {**saved, "classifier.safetensors": None},
            "model_kind": {**saved, "classifier.json": b'{"kind": "nope"}'},
            "model_config": {**saved, "classifier.json": b"[1, 2]"},
            "model_buckets": {**saved, "classifier.json": b'{"kind": "bow", "buckets": 64}'},
            "model_labels": {**saved, "labels.json": b'{"sport": 0}'},
            "model_latin1": {**saved, "labels.json": '["caf\xe9"]'.encode("latin-1")},
            "model_weights": {**saved, "classifier.safetensors": b"not safetensors"},
            "model_minilm": {**saved, "classifier.json": b'{"kind": "minilm"}'},  # no encoder
        }
        for name, content in odd.items():
            p[name] = str(models / name)
            Path(p[name]).mkdir(parents=True)
            for file, value in content.items():
                if value is not None:
                    (Path(p[name]) / file).write_bytes(value)
        for name in ("train_replica", "train_close"):
            p[name] = str(self.root / "train" / name)
            theta = Store(p[name]).global_weights(0)
            save(theta, run.weights())
            self.kept[str(theta)] = theta.read_bytes()  # the last round's close drops it

    def plan_sql(self) -> list[SqlJob]:
        """Each of ``SQL_QUERIES`` over the CSV and the Parquet table, as ``plans.sql`` sends
        it (its ``jobs.submit`` caught), with each part's rows run here once."""
        sent: list[tuple[list[Any], Any]] = []
        texts = [query.format(t=self[table], c=self["countries"])
                 for query, table in itertools.product(SQL_QUERIES, ("csv", "parquet"))]
        with mock.patch.object(jobs, "submit", lambda app, kind, parts, merge, *_, **__:
                               sent.append((parts, merge))):
            for number, text in enumerate(texts):
                output = self.root / "sql" / f"answer-{number}.parquet"
                plans.sql(None, text, str(output), part_bytes=SQL_PART_BYTES)
        made = []
        for text, (parts, merge) in zip(texts, sent, strict=True):
            inline, by_file = [], []
            for part in parts:
                shared, pieces, destination = part.args
                table = data.run_part(shared, pieces)
                inline.append({"hostname": "a@vm", "rows": table.num_rows,
                               "inline": ipc_base64(table), "file": None})
                by_file.append({"hostname": "b@vm", "rows": table.num_rows, "inline": None,
                                "file": destination})
                self.kept[destination] = parquet_bytes(table)
            made.append(SqlJob(text=text, query=parts[0].args[0], parts=[p.args[1] for p in parts],
                               merge=merge.args[0], inline=inline, by_file=by_file))
        return made

    @property
    def csv_job(self) -> SqlJob:
        return next(job for job in self.jobs if job.format == "csv")

    @property
    def parquet_job(self) -> SqlJob:
        return next(job for job in self.jobs if job.format == "parquet")

    def refresh(self) -> None:
        """Re-create the embedding parts (``assemble_embeddings`` deletes what it joined)
        and the SQL parts' files (``sql_merge`` deletes their folder)."""
        for name, content in self.kept.items():
            path = Path(name)
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(content)
        for name, rows, value in (("part-0", 5, 1), ("part-5", 5, 6), ("part-none", 0, 0)):
            path = Path(self.paths["parts"]) / f"{name}.npy"
            if not path.exists():
                np.save(path, np.full((rows, DIM), value, np.float32))

    def __getitem__(self, name: str) -> str:
        return self.paths[name]

    def bad_paths(self, *wrong_kind: str) -> st.SearchStrategy[str]:
        """Strings that are no usable path, or name files of the wrong kind."""
        scratch = self.root / "scratch"
        words = st.text(max_size=16).filter(lambda s: ".." not in s and "://" not in s)
        return st.one_of(
            st.sampled_from(["", " ", "\0", "x\0y", self["missing"], self["folder"],
                             self["under_file"], "nope://bucket/x.csv", "a" * 5000,
                             *(self[name] for name in wrong_kind)]),
            words.map(lambda s: f"{scratch}/{s}"),
        )

    def inputs(self, *names: str, heavy: tuple[str, ...] = (), wrong: tuple[str, ...] = ()
               ) -> Arg:
        """The named input files (``heavy`` ones not on a real worker), or bad paths."""
        good = [self[n] for n in names] + ([] if self.worker_safe else [self[n] for n in heavy])
        bad = self.bad_paths(*wrong)
        return Arg(st.sampled_from(good) if good else bad, bad)

    def outputs(self, *suffixes: str) -> Arg:
        """A fresh file (maybe in a folder to create), or a place that cannot be written."""
        out = Path(self["out"]) / "files"
        good = st.builds(lambda name, suffix, sub: str(out / sub / f"{name}{suffix}"),
                         st.sampled_from(["a", "b", "c"]), st.sampled_from(suffixes),
                         st.sampled_from(["", "new", "new/deeper"]))
        return Arg(good, self.bad_paths())

    def folders(self) -> Arg:
        """A folder to write into (existing or not), or a place that cannot be one."""
        out = Path(self["out"]) / "folders"
        good = st.sampled_from([str(out), str(out / "new"), str(out / "new" / "deeper")])
        return Arg(good, self.bad_paths("corpus"))

    def fingerprint(self) -> dict[str, bytes]:
        """The content of every input file: no task call may change one."""
        return {str(path): path.read_bytes()
                for path in sorted((self.root / "in").rglob("*")) if path.is_file()}


# ---- per-task argument strategies -------------------------------------------------------

#: Queries planned at fixture time over the test table (``{t}``, as CSV and as Parquet)
#: and a small joined CSV (``{c}``): what ``compute.plans.sql`` sends for them are the
#: valid arguments of ``compute.data.sql_part`` and ``sql_merge``.
SQL_QUERIES = [
    "SELECT country, sum(amount) AS total, count(*) AS n FROM '{t}' GROUP BY country "
    "ORDER BY country NULLS LAST",
    "SELECT c.name, sum(t.qty) AS q, max(t.amount) AS top FROM '{t}' t JOIN '{c}' c "
    "ON t.country = c.code GROUP BY c.name",
    "SELECT count(DISTINCT country) AS k, avg(qty) AS m FROM '{t}' WHERE amount > 0",
    "SELECT id, country FROM '{t}' WHERE qty > 1 ORDER BY id DESC LIMIT 5",
]
#: Bytes per part: 3 parts of the 24-row table (CSV byte ranges, or its 3 row groups).
SQL_PART_BYTES = 120
#: SQL that reaches outside the files a part or merge names: the locked DuckDB refuses it.
SQL_ESCAPES = {  # SELECTs meet the locked DuckDB; anything else is refused before it
    "SELECT * FROM read_csv('/etc/passwd')": "Permission Error",
    "SELECT * FROM read_text('/etc/passwd')": "Permission Error",
    "SELECT * FROM '/etc/passwd'": "Catalog Error",  # not a file to DuckDB: a table name
    "SELECT * FROM glob('/*')": "Permission Error",
    "SELECT * FROM read_csv('https://example.com/x.csv')": "Permission Error",
    "COPY (SELECT 1 AS x) TO '/tmp/idle-accel-fuzz.csv'": "exactly one SELECT",
    "ATTACH '/tmp/idle-accel-fuzz.db'": "exactly one SELECT",
    "SET enable_external_access = true": "exactly one SELECT",
    "SET lock_configuration = false": "exactly one SELECT",
    "INSTALL httpfs": "exactly one SELECT",
    "LOAD httpfs": "exactly one SELECT",
}
#: SQL DuckDB cannot run (syntax, unknown columns or tables, a type error).
SQL_REJECTED = ["SELEC 1", "SELECT nope FROM __scan", "SELECT * FROM __nope",
                "SELECT sum(country) FROM __scan", "SELECT 1 +", "SELECT 1 FROM",
                "SELECT * FROM __partials, __partials"]


def ipc_base64(table: pa.Table) -> str:
    """``table`` as a part sends it inline: an Arrow IPC stream, base64."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return base64.b64encode(sink.getvalue().to_pybytes()).decode()


def parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


@dataclass
class SqlJob:
    """One planned query: the arguments ``compute.plans.sql`` gives its parts and its
    merge, and each part's result, inline and as the file the plan names for it."""

    text: str  # the query as submitted
    query: dict[str, Any]
    parts: list[list[dict[str, Any]]]
    merge: dict[str, Any]
    inline: list[dict[str, Any]]
    by_file: list[dict[str, Any]]

    @property
    def format(self) -> str:
        return self.query["format"]


def sql_pieces(f: Files, job: SqlJob) -> st.SearchStrategy[list[dict[str, Any]]]:
    """Slices of ``job``'s input: a part of its plan, neighbouring parts run as one, or any
    byte range (CSV) or row range (Parquet, with the row groups holding it), past the end
    too."""
    parts = job.parts
    last = len(parts) - 1
    joined = st.builds(lambda a, b: [p for part in parts[min(a, b):max(a, b) + 1] for p in part],
                       st.integers(0, last), st.integers(0, last))
    span = st.lists(st.integers(0, f.csv_size + 8), min_size=2, max_size=2).map(sorted)
    if job.format == "csv":
        piece = span.map(lambda s: {"path": f["csv"], "bytes": s})
    else:
        rows = st.lists(st.integers(0, 30), min_size=2, max_size=2).map(sorted)
        piece = rows.map(lambda r: {"path": f["parquet"], "rows": r,
                                    "groups": [min(r[0] // 10, 3), min(-(-r[1] // 10), 3)]})
    return st.one_of(st.sampled_from(parts), joined, st.lists(piece, min_size=1, max_size=3))


def part_destinations(f: Files) -> Arg:
    """Where a part's file goes (``part-NNNNN.parquet``), or a name or place that is not."""
    out = Path(f["out"]) / "sql-parts"
    good = st.builds(lambda sub, index: str(out / sub / f"part-{index:05d}.parquet"),
                     st.sampled_from(["", "new", "new/deeper"]), st.integers(0, 3))
    bad = st.one_of(f.bad_paths(), st.sampled_from([
        str(out / "part-1.parquet"), str(out / "part-00001.csv"), str(out / "answer.parquet"),
        str(out / "part-000001.parquet"), str(out / "part-00001.parquet") + "/",
        f["corpus"] + "/part-00000.parquet",  # under a file: cannot be written
        f["parquet"], "nope://bucket/part-00000.parquet"]))
    return Arg(good, bad)


def query_misses(f: Files) -> st.SearchStrategy[Any]:
    """A part's query with one detail wrong, for a CSV and a Parquet job alike."""
    dialect = f.csv_job.query["dialect"]
    changes: list[dict[str, Any]] = [
        {"sql": ""}, {"sql": 1}, {"sql": None}, {"format": "json"}, {"format": "CSV"},
        {"format": "csv", "dialect": None}, {"format": "parquet", "dialect": dialect},
        {"dialect": {}}, {"dialect": "csv"}, {"dialect": {**dialect, "columns": {}}},
        {"dialect": {**dialect, "columns": {"id": 1}}}, {"dialect": {**dialect, "header": 1}},
        {"dialect": {**dialect, "delim": 1}}, {"small_files": "x.csv"},
        {"small_files": ["nope://bucket/x.csv"]}, {"small_files": [""]}, {"small_files": [None]},
        {"inline_limit": -1}, {"inline_limit": (1 << 20) + 1}, {"inline_limit": True},
        {"inline_limit": 1.0}, {"map": 1}, {"map": "team.not_registered"},
        *({"sql": sql} for sql in [*SQL_ESCAPES, *SQL_REJECTED]),
        {"sql": f"SELECT * FROM read_csv('{f['corpus']}')"},  # an input the part does not name
    ]
    csv_only = [{"dialect": {**dialect, "columns": {"id": "BIGINT"}}},  # the file has 4
                {"dialect": {**dialect, "columns": {**dialect["columns"], "id": "NOPE"}}},
                {"dialect": {**dialect, "columns": {**dialect["columns"], "id": "DATE"}}},
                {"dialect": {**dialect, "delim": "ab"}}, {"dialect": {**dialect, "quote": "'"}},
                {"sql": f"SELECT * FROM read_parquet('{f['parquet']}')"}]
    missing = [{k: v for k, v in job.query.items() if k != gone}
               for job in (f.csv_job, f.parquet_job) for gone in job.query]
    return st.sampled_from([
        {}, [], "SELECT 1", [f.csv_job.query], *missing,
        *({**job.query, **change} for job in (f.csv_job, f.parquet_job) for change in changes),
        *({**f.csv_job.query, **change} for change in csv_only)])


def piece_misses(f: Files) -> st.SearchStrategy[Any]:
    """Slices that are no slices, or slices of files that are not the input's."""
    csv, parquet = f["csv"], f["parquet"]
    return st.sampled_from([
        [], {}, [None], [[0, 5]], [{"path": csv}], [{"path": csv, "bytes": [5, 2]}],
        [{"path": csv, "bytes": [-1, 3]}], [{"path": csv, "bytes": [0, 2**53 + 1]}],
        [{"path": csv, "bytes": [0, 1.5]}], [{"path": csv, "bytes": [True, 3]}],
        [{"path": csv, "bytes": [0]}], [{"path": csv, "bytes": "0-9"}],
        [{"path": csv, "bytes": [0, 9], "rows": [0, 1]}],
        [{"path": parquet, "groups": [0, 1], "rows": [5, 2]}],
        [{"path": parquet, "groups": [0, 1]}],
        [{"path": parquet, "groups": [1, 0], "rows": [0, 9]}],
        [{"path": parquet, "groups": [0, 1], "rows": [0, 10**400]}],
        [{"path": "", "bytes": [0, 9]}], [{"path": 1, "bytes": [0, 9]}],
        [{"path": "x\0y", "groups": [0, 1], "rows": [0, 9]}],
        *([{"path": path, "bytes": [0, 400]}] for path in (
            f["missing"], f["folder"], f["binary"], f["under_file"], f["parquet"], f["emb"],
            f["latin1"], "nope://bucket/x.csv", "memory://nothing.csv")),
        *([{"path": path, "groups": [0, 1], "rows": [0, 10]}] for path in (
            csv, f["missing"], f["folder"], f["binary"], f["empty"], f["emb"],
            "nope://bucket/x.parquet", "memory://nothing.parquet")),
    ])


def flipped(payload: str, where: int, value: int) -> str:
    """A part's inline rows with one byte changed: Arrow must refuse it, never crash."""
    raw = bytearray(base64.b64decode(payload))
    raw[where % len(raw)] ^= value
    return base64.b64encode(bytes(raw)).decode()


def result_misses(f: Files) -> st.SearchStrategy[Any]:
    """Parts' results that are not, or whose rows are unreadable or of other columns."""
    job, other = f.csv_job, f.jobs[-1]  # other: a job whose parts have other columns
    inline, by_file = job.inline[0]["inline"], job.by_file
    folder = job.merge["folder"]
    result = {"hostname": "a@vm", "rows": 1, "inline": None, "file": None}
    fixed = [
        {}, [], [None], [{}], [result], [{**result, "inline": inline, "file": by_file[0]["file"]}],
        [{**result, "hostname": 1, "inline": inline}], [{**result, "inline": 5}],
        [{**result, "inline": "!!! not base64"}], [{**result, "inline": "aGVsbG8="}],
        [{**result, "inline": inline[:40]}], [{**result, "inline": ""}],
        [{**result, "inline": other.inline[0]["inline"]}],
        [{**result, "inline": ipc_base64(pa.table({"x": pa.array([], pa.int8())}))}],
        [{**result, "file": f["parquet"]}], [{**result, "file": by_file[1]["file"]}],
        [{**result, "file": f"{folder}/../part-00000.parquet"}],
        [{**result, "file": f"{folder}/part-00000.parquet/"}],
        [{**result, "file": f"{folder}/part-0.parquet"}], [{**result, "file": 7}],
        [job.inline[0], by_file[0]],  # item 1's file must be part-00001
        [job.inline[0], other.inline[1]],
    ]
    payloads = [part["inline"] for j in f.jobs[:2] for part in j.inline]
    mutated = st.builds(lambda p, w, v: [{**result, "inline": flipped(p, w, v)}],
                        st.sampled_from(payloads), st.integers(0, 4096), st.integers(1, 255))
    return st.one_of(st.sampled_from(fixed), mutated)


def merge_misses(f: Files) -> st.SearchStrategy[Any]:
    """The merge's query with one detail wrong."""
    merge = f.csv_job.merge
    changes: list[dict[str, Any]] = [
        {"sql": ""}, {"sql": 1}, {"schema": "int64"}, {"schema": [["a"]]},
        {"schema": [[1, "int64"]]}, {"schema": [["a", "int64", "x"]]}, {"schema": {"a": "b"}},
        {"schema": [["x", "int64"]]}, {"schema": f.jobs[-1].merge["schema"]},
        {"folder": ""}, {"folder": "x\0y"}, {"folder": 5}, {"folder": f["sql"] + "/elsewhere"},
        {"folder": f.jobs[-1].merge["folder"]},
        *({"sql": sql.replace("__scan", "__partials")} for sql in [*SQL_ESCAPES, *SQL_REJECTED]),
        {"sql": f"SELECT * FROM read_csv('{f['csv']}')"},
    ]
    missing = [{k: v for k, v in merge.items() if k != gone} for gone in merge]
    return st.sampled_from([{}, [], "SELECT 1", [merge], *missing,
                            *({**merge, **change} for change in changes)])


@st.composite
def sql_part_calls(draw: st.DrawFn, f: Files) -> dict[str, Any]:
    """A part of one planned job: its query (its inline limit maybe lower, so that the
    rows go to the file), slices of its input, and a part file to write."""
    job = draw(st.sampled_from(f.jobs))
    limit = draw(st.sampled_from([job.query["inline_limit"], 0, 256]))
    return {"query": {**job.query, "inline_limit": limit}, "pieces": draw(sql_pieces(f, job)),
            "destination": draw(part_destinations(f).valid)}


@st.composite
def sql_results(draw: st.DrawFn, job: SqlJob) -> list[dict[str, Any]]:
    """The first parts' results of ``job``, each inline or as its file."""
    count = draw(st.integers(1, len(job.inline)))
    return [draw(st.sampled_from([job.inline[i], job.by_file[i]])) for i in range(count)]


@st.composite
def sql_merge_calls(draw: st.DrawFn, f: Files) -> dict[str, Any]:
    """The merge of one planned job: its parts' results, its merge, an output to write."""
    job = draw(st.sampled_from(f.jobs))
    return {"parts": draw(sql_results(job)), "merge": job.merge,
            "output": draw(f.outputs(".csv", ".parquet", ".json", ".txt").valid)}


def sql_examples(f: Files) -> dict[str, list[Call]]:
    """Calls whose arguments must agree to reach a check (a query and its slices of the
    same format, a merge and its parts' files), replayed on every run."""
    csv, parquet = f.csv_job, f.parquet_job
    target = f["out"] + "/sql-parts/part-00000.parquet"
    answer = f["out"] + "/sql-answer.parquet"
    odd = Path(f["sql"]) / "odd"
    corrupt, other = str(odd / "corrupt"), str(odd / "other")
    part_calls = [
        ([csv.query, parquet.parts[0], target], {}),  # Parquet slices for a CSV query
        ([parquet.query, csv.parts[0], target], {}),
        ([{**csv.query, "dialect": {**csv.query["dialect"], "columns": {"line": "VARCHAR"},
                                    "delim": "\x01"}, "sql": "SELECT * FROM __scan"},
          [{"path": f["binary"], "bytes": [0, 1024]}], target], {}),
        ([{**csv.query, "map": "team.not_registered"}, csv.parts[0], target], {}),
        *(([{**job.query, "sql": sql}, job.parts[0], target], {})
          for job in (csv, parquet) for sql in SQL_ESCAPES),
    ]
    first = [csv.inline[0]]
    merge_calls = [
        ([[{"hostname": "a", "inline": None, "file": corrupt + "/part-00000.parquet"}],
          {**csv.merge, "folder": corrupt}, answer], {}),  # not Parquet
        ([[{"hostname": "a", "inline": None, "file": other + "/part-00000.parquet"}],
          {**csv.merge, "folder": other}, answer], {}),  # other columns
        ([[csv.inline[0], f.jobs[-1].inline[0]], {**csv.merge, "schema": []}, answer], {}),
        ([[csv.by_file[0]], {**csv.merge, "folder": csv.merge["folder"] + "/"}, answer], {}),
        *(([first, {**csv.merge, "sql": sql}, answer], {}) for sql in SQL_ESCAPES),
    ]
    return {"compute.data.sql_part": part_calls, "compute.data.sql_merge": merge_calls}


#: Training jobs' ids: a few that recur (so a round's arrivals meet in Redis and close it
#: once), and fresh ones.
TRAIN_JOBS = [str(uuid.UUID(int=n, version=4)) for n in (1, 2, 3, 4)]


@st.composite
def train_specs(draw: st.DrawFn, f: Files, outputs: list[str], *, data: tuple[str, ...] =
                ("topics",), options: tuple[dict[str, Any], ...] = ({},)) -> dict[str, Any]:
    """A bag-of-words training spec, small (1-2 rounds of 1-2 replicas of 1-3 steps of at
    most 8 rows: ``baseline`` trains them all), writing to one of ``outputs``; the other
    settings valid or left to their defaults."""
    replicas = draw(st.integers(1, 2))
    spec = {
        "job": draw(st.one_of(st.sampled_from(TRAIN_JOBS), st.uuids(version=4).map(str))),
        "output": draw(st.sampled_from(outputs)), "data": f[draw(st.sampled_from(data))],
        "model": "bow-classifier", "rounds": draw(st.integers(1, 2)), "replicas": replicas,
        "inner_steps": draw(st.integers(1, 3)), "batch_size": draw(st.integers(1, 8)),
    }
    return {**spec, **draw(st.fixed_dictionaries({}, optional={
        "lr": st.floats(1e-9, 1.0), "weight_decay": st.sampled_from([0, 0.01, 0.5]),
        "outer_lr": st.floats(1e-6, 10.0), "outer_momentum": st.floats(0, 0.999),
        "nesterov": st.booleans(), "deadline": st.one_of(st.integers(1, 7 * 86_400),
                                                         st.floats(1, 7 * 86_400)),
        "checkpoint_every": st.integers(1, 3), "seed": st.integers(0, 2**31 - 1),
        "gpu": st.booleans(), "baseline": st.booleans(), "quorum": st.integers(1, replicas),
        "region": st.sampled_from([None, "eu-west"]),
        "queue": st.sampled_from([train_spec.TEAM_QUEUE, "team-b"]),
        "options": st.sampled_from(options), "dataset": st.just("csv")}))}


def spec_misses(f: Files, base: dict[str, Any], *more: dict[str, Any]
                ) -> st.SearchStrategy[Any]:
    """A training spec (``base``, valid and cheap) with one detail wrong; ``more``: changes
    wrong for the task at hand only (a spec that does not fit the job's files)."""
    changes: list[dict[str, Any]] = [
        {"epochs": 3}, {"Model": "bow-classifier"},
        {"job": ""}, {"job": 5}, {"job": None}, {"job": "not-a-job"}, {"job": "0" * 65},
        {"job": base["job"].upper()}, {"job": "deadbeef"}, {"job": "0123-4567-89ab"},
        {"output": "model"}, {"output": ""}, {"output": "/x\0y"}, {"output": 5},
        {"output": "nope://bucket/model"}, {"output": "/" + "a" * 5000},
        {"output": "/" + "a" * 300},  # a name longer than a file system takes
        {"output": f["corpus"]}, {"output": f["under_file"]},
        {"data": "topics.csv"}, {"data": ""}, {"data": 5}, {"data": "nope://bucket/x.csv"},
        *({"data": f[name]} for name in (
            "missing", "folder", "under_file", "binary", "empty", "corpus", "latin1",
            "parquet", "topics_header", "topics_latin1", "topics_one", "topics_short",
            "topics_blank")),
        *({name: value} for name, (_, low, high) in train_spec.NUMBERS.items()
          for value in (low - 1, high + 1, 10**400, -(2**63), math.nan, math.inf, True,
                        str(low), None, *([low + 0.5] if name in train_spec.WHOLE else []))),
        {"lr": 1.0, "weight_decay": 1.0},
        {"nesterov": "yes"}, {"gpu": 1}, {"baseline": None},
        {"model": "nope"}, {"model": ""}, {"model": 5}, {"model": "../bow-classifier"},
        {"dataset": "json"}, {"dataset": None},
        {"quorum": 0}, {"quorum": base["replicas"] + 1}, {"quorum": True}, {"quorum": 1.0},
        {"region": "EU"}, {"region": ""}, {"region": 5}, {"region": "a" * 41},
        {"queue": ""}, {"queue": "Team"}, {"queue": "a b"}, {"queue": 5}, {"queue": None},
        {"options": []}, {"options": "x"}, {"options": None}, {"options": {"note": "a" * 5000}},
        *({"options": {"buckets": value}} for value in (0, 1 << 21, True, "64", 1.5)),
        *({"options": {"validation": value}} for value in (0.9, 0.01, math.nan, "x")),
        *more,
    ]
    missing = [{k: v for k, v in base.items() if k != gone} for gone in train_spec.REQUIRED]
    return st.sampled_from([[], "spec", [base], *missing,
                            *({**base, **change} for change in changes)])


def train_base(f: Files, output: str) -> dict[str, Any]:
    """A valid spec the near misses start from: one round of one replica's single step."""
    return {"job": TRAIN_JOBS[-1], "output": output, "data": f["topics"],
            "model": "bow-classifier", "rounds": 1, "replicas": 1, "inner_steps": 1,
            "batch_size": 4}


def misfits(f: Files) -> list[dict[str, Any]]:
    """Specs valid on their own that do not fit a job's files: its weights have 3 labels
    and 4096 buckets, or there are none."""
    return [{"data": f["topics_two"]}, {"options": {"buckets": 64}},
            {"output": f["out"] + "/train-none"}]


@st.composite
def train_round_calls(draw: st.DrawFn, f: Files, output: str,
                      arrival: Arg | None = None) -> dict[str, Any]:
    """A replica of a job at ``output`` (or its arrival, or the deadline, when ``arrival``):
    its spec, a round and a replica of that spec."""
    spec = draw(train_specs(f, [output], options=({}, {"validation": 0.25})))
    call = {"spec": spec, "number": draw(st.integers(0, spec["rounds"] - 1))}
    if arrival is None:
        return {**call, "replica": draw(st.integers(0, spec["replicas"] - 1))}
    return {**call, "replica": draw(st.integers(-1, spec["replicas"] - 1)),
            "arrival": draw(arrival.valid)}


def tame_rounds(call: Call) -> Call:
    """``checksum`` with a valid but slow ``rounds`` (up to 10 million) gets at most 1000."""
    args, kwargs = call

    def cap(value: Any) -> Any:
        ok = isinstance(value, int) and not isinstance(value, bool)
        return min(value, 1000) if ok and 1000 < value <= diag.MAX_ROUNDS else value

    if len(args) >= 2:
        args = [args[0], cap(args[1]), *args[2:]]
    return args, {k: cap(v) if k == "rounds" else v for k, v in kwargs.items()}


def tame_seconds(call: Call) -> Call:
    """For a real worker: a valid ``sleep``/``burn`` takes at most 0.05 s."""
    def cap(value: Any) -> Any:
        number = isinstance(value, int | float) and not isinstance(value, bool)
        return min(value, 0.05) if number and 0.05 < value <= diag.MAX_SECONDS else value

    args, kwargs = call
    return [cap(v) for v in args], {k: cap(v) for k, v in kwargs.items()}


def tame_canvas(call: Call) -> Call:
    """``assemble_tiles`` draws a canvas of the parts' ``size``: valid ones capped at 64 px."""
    def cap(part: Any) -> Any:
        size = part.get("size") if isinstance(part, dict) else None
        if isinstance(size, list) and all(isinstance(v, int) and not isinstance(v, bool)
                                          and 64 < v <= render.MAX_PIXELS for v in size):
            return {**part, "size": [64] * len(size)}
        return part

    def parts(value: Any) -> Any:
        return [cap(p) for p in value] if isinstance(value, list) else value

    args, kwargs = call
    if args:
        args = [parts(args[0]), *args[1:]]
    return args, {k: parts(v) if k == "parts" else v for k, v in kwargs.items()}


@dataclass
class TaskCase:
    """Strategies for each argument of one task, and how to keep its valid cases cheap."""

    args: dict[str, Arg]
    tame: Callable[[Call], Call] | None = None
    worker_tame: Callable[[Call], Call] | None = None
    #: Valid values of all the arguments at once, where they must agree (a part's query
    #: and its slices); else each argument's ``valid`` is drawn on its own.
    together: st.SearchStrategy[dict[str, Any]] | None = None


def task_cases(f: Files) -> dict[str, TaskCase]:
    """The argument strategies of every public task (a new task must be added here)."""
    seconds = Arg(st.one_of(st.floats(0, diag.MAX_SECONDS), st.integers(0, 600)),
                  st.sampled_from([600.000001, -1e-300, 601, -1, "1", True, *HUGE_NUMBERS]))
    k = whole(1, 1000)
    query = Arg(st.text(min_size=1, max_size=20).filter(str.strip), st.sampled_from(["", " "]))
    name = Arg(st.sampled_from(["a@vm", "b@vm"]), st.sampled_from([1, None, ["a"]]))
    hits = st.lists(st.tuples(st.integers(0, 11), st.floats(-1, 1)).map(list), max_size=4)
    settings_ = Arg(
        st.one_of(st.none(), st.fixed_dictionaries({}, optional={
            "samples": st.integers(1, 2), "seed": st.integers(0, 2**31 - 1),
            "resolution": st.lists(st.integers(4, 16), min_size=2, max_size=2)})),
        st.sampled_from([[], "fast", {"samples": 0}, {"samples": 4097}, {"samples": 1.5},
                         {"seed": -1}, {"seed": 2**31}, {"resolution": [3, 4]},
                         {"resolution": [4]}, {"resolution": [4, True]}, {"denoise": True}]))
    blend = f.inputs(heavy=("blend",), wrong=("fake_blend", "corpus"))
    tile_part = st.fixed_dictionaries({
        "path": st.just(f["tile"]), "box": st.sampled_from([[0, 0, 4, 3], [4, 0, 8, 3]]),
        "size": st.just([8, 3]), "hostname": name.valid})
    tile_misses = st.sampled_from([
        [], {}, [{"path": f["not_image"], "box": [0, 0, 4, 3], "size": [8, 3], "hostname": ""}],
        [{"path": f["missing"], "box": [0, 0, 4, 3], "size": [8, 3], "hostname": ""}],
        [{"path": f["folder"], "box": [0, 0, 4, 3], "size": [8, 3], "hostname": ""}],
        [{"path": f["tile"], "box": [0, 0, 4, 4], "size": [8, 3], "hostname": ""}],
        [{"path": f["tile"], "box": [0, 0, 4], "size": [8, 3], "hostname": ""}],
        [{"path": f["tile"], "box": [6, 0, 10, 3], "size": [8, 3], "hostname": ""}],
        [{"path": f["tile"], "box": [0, 0, 4, 3], "size": [0, 3], "hostname": ""}],
        [{"path": f["tile"], "box": [0, 0, 4, 3], "size": [10**6, 10**6], "hostname": ""}],
        [{"path": f["tile"], "box": [0, 0, 4, 3], "size": [8, 3], "hostname": ""},
         {"path": f["tile"], "box": [4, 0, 8, 3], "size": [9, 3], "hostname": ""}],
    ])
    embedding_part = st.fixed_dictionaries({
        "start": st.sampled_from([0, 5]), "hostname": name.valid,
        "path": st.sampled_from([f["parts"] + "/part-0.npy", f["parts"] + "/part-5.npy"])})
    embedding_misses = st.one_of(st.sampled_from([[], {}, [{"start": 0}]]), st.builds(
        lambda path: [{"start": 0, "hostname": "a", "path": path}],
        st.sampled_from([f["emb_1d"], f["emb_str"], f["emb_obj"], f["emb_npz"], f["binary"],
                         f["missing"], f["folder"], f["parts"] + "/part-none.npy", ""])),
        st.just([{"start": 0, "hostname": "a", "path": f["emb"]},
                 {"start": 5, "hostname": "a", "path": f["emb_dim"]}]))
    frames = st.fixed_dictionaries({"frame": st.integers(0, 9), "path": st.text(max_size=8),
                                    "hostname": name.valid})
    out = Path(f["out"])
    starts = [str(out / "train-start"), str(out / "train-start" / "new" / "deeper")]
    baselines = [str(out / "train-baseline"), str(out / "train-baseline" / "new")]
    any_data = {"data": ("topics", "topics_two"),
                "options": ({}, {"buckets": 64}, {"validation": 0.25})}
    arrival = Arg(  # a replica's result (or None: the deadline's call), or garbage
        st.one_of(st.none(), st.fixed_dictionaries({
            "hostname": name.valid, "round": st.integers(0, 1), "replica": st.integers(0, 1),
            "loss": st.floats(0, 10), "steps": st.integers(1, 3)}),
            st.fixed_dictionaries({"hostname": name.valid, "late": st.just(True)})),
        st.sampled_from([[], "late", 5, {"late": "yes"}, {"hostname": 5, "loss": "0.5"},
                         {"hostname": "<b>" * 100}, {"hostname": "a\0b\nc", "loss": None},
                         *({"hostname": "a@vm", "loss": value} for value in (
                             10**400, -(10**400), math.nan, math.inf, True, [1.0]))]))
    round_number = Arg(st.integers(0, 1), outside(0, 1))
    not_models = [name for name in f.paths if name.startswith("model_")
                  and not (f.worker_safe and name == "model_minilm")]  # that starts MiniLM
    return {
        "compute.diag.noop": TaskCase({}),
        "compute.diag.sleep": TaskCase({"seconds": seconds}, worker_tame=tame_seconds),
        "compute.diag.burn": TaskCase({"seconds": seconds}, worker_tame=tame_seconds),
        "compute.diag.checksum": TaskCase({
            "text": Arg(st.one_of(st.text(max_size=40), st.sampled_from(
                ["a" * diag.MAX_TEXT, "\u00e9" * 2000])), st.just("a" * (diag.MAX_TEXT + 1))),
            "rounds": Arg(st.one_of(st.integers(1, 1000), st.just(diag.MAX_ROUNDS)),
                          outside(1, diag.MAX_ROUNDS)),
        }, tame=tame_rounds),
        "compute.data.sql_part": TaskCase({
            "query": Arg(st.sampled_from([job.query for job in f.jobs]), query_misses(f)),
            "pieces": Arg(st.one_of(sql_pieces(f, f.csv_job), sql_pieces(f, f.parquet_job)),
                          piece_misses(f)),
            "destination": part_destinations(f),
        }, together=sql_part_calls(f)),
        "compute.data.sql_merge": TaskCase({
            "parts": Arg(st.sampled_from(f.jobs).flatmap(sql_results), result_misses(f)),
            "merge": Arg(st.sampled_from([job.merge for job in f.jobs]), merge_misses(f)),
            "output": f.outputs(".csv", ".parquet", ".json", ".txt"),
        }, together=sql_merge_calls(f)),
        "compute.inference.embed_part": TaskCase({
            "corpus": f.inputs(heavy=("corpus",), wrong=("latin1", "binary")),
            "start": whole(0, 6), "end": whole(7, 12),
            "out_dir": f.folders(),
        }),
        "compute.inference.assemble_embeddings": TaskCase({
            "parts": Arg(st.lists(embedding_part, min_size=1, max_size=2), embedding_misses),
            "output": f.outputs(".npy", ""),
        }),
        "compute.inference.search_part": TaskCase({
            "embeddings": f.inputs(heavy=("emb", "emb", "emb_dim"), wrong=(
                "emb_1d", "emb_3d", "emb_str", "emb_obj", "emb_npz", "binary", "emb_empty")),
            "start": whole(0, 6), "end": whole(7, 12), "query": query, "k": k,
        }),
        "compute.inference.merge_hits": TaskCase({
            "parts": Arg(st.lists(st.fixed_dictionaries({"hits": hits, "hostname": name.valid}),
                                  max_size=3),
                         st.sampled_from([{}, [{"hits": [[-1, 0.5]], "hostname": "a"}],
                                          [{"hits": [[1]], "hostname": "a"}],
                                          [{"hits": [["a", 0.5]], "hostname": "a"}],
                                          [{"hits": [[1, "x"]], "hostname": "a"}],
                                          [{"hits": [[True, 0.5]], "hostname": "a"}],
                                          [{"hits": [[99, 0.5]], "hostname": "a"}]])),
            "k": k,
            "corpus": Arg(st.one_of(st.none(), st.just(f["corpus"])),
                          f.bad_paths("latin1", "binary")),
        }),
        "compute.render.frame": TaskCase({
            "blend": blend, "number": whole(1, 4), "out_dir": f.folders(),
            "settings": settings_,
        }),
        "compute.render.tile": TaskCase({
            "blend": blend, "number": whole(1, 4),
            "cell": Arg(st.lists(st.integers(0, 1), min_size=2, max_size=2),
                        st.sampled_from([[0], [0, 0, 0], [-1, 0], [0, 4], [0.0, 0], "0,0"])),
            "grid": Arg(st.lists(st.integers(2, 4), min_size=2, max_size=2),
                        st.sampled_from([[0, 1], [17, 1], [1], [1, True], {"x": 1}])),
            "out_dir": f.folders(), "settings": settings_,
        }),
        "compute.render.assemble_tiles": TaskCase({
            "parts": Arg(st.lists(tile_part, min_size=1, max_size=2), tile_misses),
            "output": Arg(f.outputs(".png", ".tif", ".bmp").valid,
                          st.one_of(f.outputs(".jpg", "", ".nope").valid, f.bad_paths())),
        }, tame=tame_canvas),
        "compute.render.collect_frames": TaskCase({
            "parts": Arg(st.lists(frames, max_size=4), st.sampled_from(
                [{}, [1], [{"frame": "1", "path": "", "hostname": ""}],
                 [{"frame": 1, "hostname": ""}], [{"frame": 1, "path": None, "hostname": ""}]])),
        }),
        "compute.train.start": TaskCase({
            "spec": Arg(train_specs(f, starts, **any_data),
                        spec_misses(f, train_base(f, starts[0]))),
        }),
        "compute.train.replica": TaskCase({
            "spec": Arg(train_specs(f, [f["train_replica"]]),
                        spec_misses(f, train_base(f, f["train_replica"]), *misfits(f))),
            "number": round_number, "replica": whole(0, 1),
        }, together=train_round_calls(f, f["train_replica"])),
        "compute.train.close_round": TaskCase({
            "arrival": arrival,
            "spec": Arg(train_specs(f, [f["train_close"]]),
                        spec_misses(f, train_base(f, f["train_close"]), *misfits(f))),
            "number": round_number, "replica": whole(-1, 1),
        }, together=train_round_calls(f, f["train_close"], arrival)),
        "compute.train.baseline": TaskCase({
            "spec": Arg(train_specs(f, baselines, **any_data),
                        spec_misses(f, train_base(f, baselines[0]))),
        }),
        "compute.train.predict": TaskCase({
            "model": Arg(st.just(f["model"]), f.bad_paths("topics", "train_replica", *not_models)),
            "texts": Arg(st.lists(st.text(max_size=40), min_size=1, max_size=5), st.sampled_from(
                [[], "a goal", [1], [None], ["a" * 10_001], ["a goal", 2], [["a goal"]],
                 {"0": "a goal"}, ["a"] * 1001])),
        }),
    }


def parameters(task: Any) -> list[inspect.Parameter]:
    """The task's own parameters (``self`` of a bound task excluded)."""
    return list(inspect.signature(task.run).parameters.values())


FITTING = ["positional", "keywords", "mixed", "optional_left_out"]
MISFITTING = ["one_missing", "one_too_many", "unknown_keyword", "repeated", "anything"]


@st.composite
def calls(draw: st.DrawFn, task: Any, case: TaskCase) -> Call:
    """Arguments for ``task``: all valid, one of them wrong, or anything at all; passed in
    one of the ways a caller can get a call right (mostly) or wrong."""
    params = parameters(task)
    names = [p.name for p in params]
    if set(names) != set(case.args):
        raise AssertionError(f"{task.name}: strategies for {sorted(case.args)}, "
                             f"but the task takes {names}")
    values = (draw(case.together) if case.together is not None
              else {n: draw(case.args[n].valid) for n in names})
    which = draw(st.sampled_from(["all_valid", "one_wrong", "one_wrong", "anything"]))
    if which == "one_wrong" and names:
        wrong = draw(st.sampled_from(names))
        values[wrong] = draw(st.one_of(case.args[wrong].bad, case.args[wrong].bad, JSON))
    elif which == "anything":
        values = {n: draw(st.one_of(case.args[n].valid, case.args[n].bad, JSON))
                  for n in names}
    required = [p.name for p in params if p.default is inspect.Parameter.empty]
    shape = draw(st.sampled_from(FITTING * 2 + MISFITTING))
    args: list[Any] = [values[n] for n in names]
    kwargs: dict[str, Any] = {}
    if shape == "keywords":
        args, kwargs = [], values
    elif shape == "mixed":
        cut = draw(st.integers(0, len(names)))
        args, kwargs = args[:cut], {n: values[n] for n in names[cut:]}
    elif shape == "optional_left_out":
        args = args[:len(required)]
    elif shape == "one_missing" and required:
        gone = draw(st.sampled_from(required))
        args, kwargs = [], {n: v for n, v in values.items() if n != gone}
    elif shape == "one_too_many":
        args.append(draw(JSON))
    elif shape == "unknown_keyword":
        kwargs[draw(st.text(max_size=8).filter(lambda s: s not in names))] = draw(JSON)
    elif shape == "repeated" and names:
        repeated = draw(st.sampled_from(names))
        kwargs[repeated] = values[repeated]
    elif shape == "anything":
        args = draw(st.lists(JSON, max_size=len(names) + 2))
        kwargs = draw(st.dictionaries(st.sampled_from([*names, "x", "self"]), JSON, max_size=3))
    return case.tame((args, kwargs)) if case.tame else (args, kwargs)


def check_failure(task: Any, args: list[Any], kwargs: dict[str, Any], error: BaseException,
                  traceback: str | None = None) -> None:
    """``error`` is the validation error, naming the task and an argument."""
    call = f"{task.name}(*{args!r:.300}, **{kwargs!r:.300})"
    assert isinstance(error, InvalidArgument), (
        f"{call} raised {type(error).__name__}: {error}\n{traceback or ''}")
    message = str(error)
    assert message.startswith(f"{task.name}: "), f"{call}: names no task: {message}"
    named = [f"'{p.name}{end}" for p in parameters(task) for end in ("'", ".")] + [
        "arguments", "the result"]  # 'merge.folder': a field of argument 'merge'
    assert any(word in message for word in named), (
        f"{call}: message names none of {named}: {message}")


def check_outcome(task: Any, args: list[Any], kwargs: dict[str, Any], outcome: Any) -> None:
    if outcome.state == "SUCCESS":
        assert isinstance(outcome.result, dict), outcome.result
        kombu_dumps(outcome.result)  # a worker can store it
        return
    assert outcome.state == "FAILURE", outcome.state
    check_failure(task, args, kwargs, outcome.result, outcome.traceback)


# ---- fixtures ---------------------------------------------------------------------------

class FakeClock(SimpleNamespace):
    """``compute.diag``'s ``time``: sleeping is instant, the CPU clock jumps 1000 s per read."""

    def __init__(self) -> None:
        import time

        self.cpu = 0.0
        super().__init__(monotonic=time.monotonic, sleep=lambda seconds: None)

    def process_time(self) -> float:
        self.cpu += 1000.0
        return self.cpu


def fake_encode(texts: list[str], batch_size: int = 64) -> np.ndarray:
    rows = np.array([[hash((text, i)) % 997 + 1 for i in range(DIM)] for text in texts],
                    np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    return Files(tmp_path_factory.mktemp("fuzz-files"))


@pytest.fixture
def fuzz_app(broker: Any, monkeypatch: pytest.MonkeyPatch, files: Files,
             tmp_path: Path) -> Iterator[Celery]:
    """An app on the test Redis, with a small message limit and the engines faked."""
    monkeypatch.chdir(tmp_path)  # a relative output path lands here
    monkeypatch.setattr(diag, "time", FakeClock())
    monkeypatch.setattr(inference, "encode", fake_encode)
    monkeypatch.setattr(inference, "device", lambda: "cpu")
    monkeypatch.setattr(render, "_render", lambda scene, out: None)
    monkeypatch.setattr(train_plot, "draw", lambda rows, baseline, path: None)
    fuzz = create_app(Settings.load(broker_url=broker.url(0), max_message_bytes=MESSAGE_LIMIT))
    public_tasks(fuzz)
    yield fuzz
    fuzz.close()


# ---- the tests --------------------------------------------------------------------------

def test_every_public_task_has_a_strategy(tmp_path):
    cases = task_cases(Files(tmp_path))

    assert len(PUBLIC_TASKS) >= 14
    assert all(name.startswith(BUILTIN_TASK_MODULES) for name in PUBLIC_TASKS)
    assert sorted(cases) == PUBLIC_TASKS, "a task without a strategy, or a strategy too many"


def regressions(f: Files) -> dict[str, list[Call]]:
    """Calls that once raised something else than InvalidArgument, replayed on every run."""
    tile = {"path": f["tile"], "box": [0, 0, 4, 3], "hostname": "a"}
    out = f["out"] + "/regression"
    replica, close = train_base(f, f["train_replica"]), train_base(f, f["train_close"])
    jobs_ = [str(uuid.UUID(int=n, version=4)) for n in (101, 102, 103)]
    return {
        "compute.diag.sleep": [([10**400], {})],  # OverflowError in math.isfinite
        "compute.diag.burn": [([-(10**400)], {})],
        "compute.inference.embed_part": [([None, 0, 1, out], {})],  # TypeError from Path()
        "compute.inference.assemble_embeddings": [
            ([[], out], {}),  # ValueError: need at least one array to concatenate
            ([[{"start": 0, "path": f["emb_obj"], "hostname": "a"}], out], {}),  # pickled
        ],
        "compute.inference.search_part": [
            ([f["emb_1d"], 0, 1, "cats", 1], {}),  # ValueError from matmul
            ([f["emb_npz"], 0, 1, "cats", 1], {}),  # AttributeError: NpzFile has no shape
            ([f["emb"], 0, 1, "cats", "3"], {}),  # TypeError: k was not checked
        ],
        "compute.inference.merge_hits": [
            ([[], [], None], {}),  # TypeError: k was not checked
            ([[{"hits": [[99, 0.5]], "hostname": "a"}], 1, f["corpus"]], {}),  # IndexError
        ],
        "compute.render.frame": [([f["blend"], 1, None, None], {})],  # TypeError from Path()
        "compute.render.tile": [([f["blend"], "1", [0, 0], [1, 1], out, None], {})],  # TypeError
        "compute.render.assemble_tiles": [
            ([[], out + ".png"], {}),  # IndexError
            ([[{**tile, "size": [10**6, 10**6]}], out + ".png"], {}),  # a 4 TB canvas
            ([[{**tile, "size": [8, 3], "path": f["not_image"]}], out + ".png"], {}),  # PIL
            ([[{**tile, "size": [8, 3]}], out + ".jpg"], {}),  # OSError: RGBA as JPEG
        ],
        "compute.render.collect_frames": [([[{"frame": "1"}, {"frame": 2}]], {})],  # TypeError
        "compute.train.start": [
            ([{**train_base(f, out), "job": "deadbeef"}], {}),  # ValueError: no UUID
        ],
        "compute.train.baseline": [
            ([{**train_base(f, out), "data": f["missing"]}], {}),  # ValueError: data unchecked
            ([{**train_base(f, out), "output": f["under_file"]}], {}),  # NotADirectoryError
        ],
        "compute.train.replica": [
            ([{**replica, "output": "/" + "a" * 300}, 0, 0], {}),  # OSError: name too long
            ([{**replica, "data": f["topics_two"]}, 0, 0], {}),  # RuntimeError: θ's shape
        ],
        "compute.train.close_round": [  # each its own job: each closes its round
            ([{"hostname": "a", "loss": 10**400}, {**close, "job": jobs_[0]}, 0, 0],
             {}),  # OverflowError: the loss's float
            ([{"hostname": "a"}, {**close, "job": jobs_[1], "output": f["out"] + "/train-none"},
              0, 0], {}),  # Unreadable: no θ to close
            ([{"hostname": "a"}, {**close, "job": jobs_[2], "data": f["topics_two"]}, 0, 0],
             {}),  # RuntimeError: θ's shape
        ],
    }


@pytest.mark.parametrize("name", PUBLIC_TASKS)
def test_any_arguments_succeed_or_fail_with_the_validation_error(name, fuzz_app, files):
    task = fuzz_app.tasks[name]
    inputs = files.fingerprint()
    case = task_cases(files).get(name)
    if case is None:
        pytest.fail(f"{name} has no argument strategy in task_cases(): add one")
    ran = []

    @settings(max_examples=CASES_PER_TASK, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(call=calls(task, case))
    def one_call(call: Call) -> None:
        files.refresh()
        args, kwargs = call
        check_outcome(task, args, kwargs, task.apply(args=args, kwargs=kwargs))
        ran.append(1)

    for call in regressions(files).get(name, []) + sql_examples(files).get(name, []):
        one_call = example(call=call)(one_call)
    one_call()

    assert len(ran) >= CASES_PER_TASK
    assert not Path(files["pickle_marker"]).exists(), "a pickled .npy was loaded"
    assert files.fingerprint() == inputs, "a task call changed an input file"


SIGNATURE_MISFITS = [
    ("compute.diag.noop", [1], {}),
    ("compute.diag.sleep", [], {}),
    ("compute.diag.sleep", [1, 2], {}),
    ("compute.diag.sleep", [], {"second": 1}),
    ("compute.diag.checksum", ["a"], {"text": "a"}),
    ("compute.render.collect_frames", [], {"parts": [], "self": 1}),
]


@pytest.mark.parametrize(("name", "args", "kwargs"), SIGNATURE_MISFITS)
def test_a_call_that_does_not_fit_the_signature_is_an_invalid_argument(
        name, args, kwargs, fuzz_app):
    task = fuzz_app.tasks[name]

    outcome = task.apply(args=args, kwargs=kwargs)

    assert outcome.state == "FAILURE"
    assert isinstance(outcome.result, InvalidArgument), repr(outcome.result)
    assert isinstance(outcome.result, TypeError)  # as Celery promises for a wrong call
    assert str(outcome.result).startswith(f"{name}: ")
    params = [p.name for p in parameters(task)]
    assert all(f"'{p}'" in str(outcome.result) for p in params)  # says what it takes


def draw_calls(task: Any, case: TaskCase, count: int) -> list[Call]:
    """``count`` calls of ``task`` drawn by Hypothesis, made short for a real worker."""
    drawn: list[Call] = []

    @settings(max_examples=count, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(call=calls(task, case))
    def collect(call: Call) -> None:
        drawn.append(case.worker_tame(call) if case.worker_tame else call)

    collect()
    return drawn


def run_on_worker(app: Celery, worker: Any, sample: list[tuple[Any, Call]]
                  ) -> list[tuple[str, Any, str | None]]:
    """(state, result or error, traceback) of each call sent to ``worker``; plain values
    only, so no AsyncResult outlives this (one torn down after Redis stopped would hang)."""
    sent = [app.send_task(task.name, args=args, kwargs=kwargs) for task, (args, kwargs) in sample]
    with contextlib.suppress(AssertionError):  # judged by the caller, from the states
        wait_for(lambda: all(result.ready() for result in sent) or not worker.alive,
                 timeout=120, every=0.25, what=f"{len(sent)} fuzzed tasks done")
    return [(r.state, r.result, r.traceback) if r.ready() else (r.state, None, None)
            for r in sent]


def test_a_real_worker_refuses_fuzzed_arguments_and_keeps_serving(app, workers, tmp_path,
                                                                 monkeypatch):
    monkeypatch.chdir(tmp_path)  # the worker's folder: where a relative output path lands
    worker = workers("fuzz-a", "--concurrency", "2",
                     env={"IDLE_ACCEL_MAX_MESSAGE_BYTES": str(MESSAGE_LIMIT)})
    safe = Files(tmp_path / "files", worker_safe=True)
    inputs = safe.fingerprint()
    cases = task_cases(safe)
    tasks = public_tasks(app)
    sample = [(tasks[name], call) for name in PUBLIC_TASKS
              for call in draw_calls(tasks[name], cases[name], WORKER_CASES_PER_TASK)]
    sample += [(tasks[name], call) for name, calls_ in sql_examples(safe).items()
               for call in calls_]

    outcomes = run_on_worker(app, worker, sample)
    after = app.signature("compute.diag.noop").delay().get(timeout=30)

    assert worker.alive
    assert after == {"hostname": worker.node}
    assert len(outcomes) >= WORKER_CASES_PER_TASK * len(PUBLIC_TASKS)
    states = [state for state, _, _ in outcomes]
    assert set(states) <= {"SUCCESS", "FAILURE"}, "some tasks never ended"
    assert "SUCCESS" in states and "FAILURE" in states
    for (task, (args, kwargs)), (state, result, traceback) in zip(sample, outcomes, strict=True):
        if state == "FAILURE":
            check_failure(task, args, kwargs, result, traceback)
    assert not Path(safe["pickle_marker"]).exists()
    assert safe.fingerprint() == inputs


def test_a_tile_grid_finer_than_the_frame_is_refused(fuzz_app, files):
    tile = fuzz_app.tasks["compute.render.tile"]

    outcome = tile.apply(args=[files["blend"], 1, [0, 0], [5, 2], files["out"] + "/tiles",
                               {"resolution": [4, 8]}])

    assert outcome.state == "FAILURE"
    assert str(outcome.result) == (
        "compute.render.tile: argument 'grid': 5x2 tiles do not fit the frame's 4x8 pixels")


def test_joined_embeddings_are_written_at_the_output_named(fuzz_app, files):
    assemble = fuzz_app.tasks["compute.inference.assemble_embeddings"]
    output = Path(files["out"]) / "joined" / "corpus.vectors"  # no .npy: np.save would add one
    parts = [{"start": start, "path": f"{files['parts']}/part-{start}.npy", "hostname": "a"}
             for start in (5, 0)]

    result = assemble.apply(args=[parts, str(output)]).get()
    files.refresh()

    assert result["output"] == str(output)
    assert output.is_file()
    joined = np.load(output)
    assert joined.shape == (10, DIM)
    assert (joined[:5] == 1).all() and (joined[5:] == 6).all()  # part-0 first: corpus order


def test_the_planned_sql_jobs_run_on_the_tasks_and_answer_as_duckdb_does(fuzz_app, tmp_path):
    """The fuzz's valid SQL arguments are valid: each job's parts and merge succeed (rows
    inline, or in files when the inline limit is 0), and answer as DuckDB run whole."""
    f = Files(tmp_path / "files")
    part, merge = fuzz_app.tasks["compute.data.sql_part"], fuzz_app.tasks["compute.data.sql_merge"]
    for number, job in enumerate(f.jobs):
        query = {**job.query, "inline_limit": 0} if number % 2 else job.query
        results = [part.apply(args=[query, pieces, result["file"]]).get()
                   for pieces, result in zip(job.parts, job.by_file, strict=True)]
        output = tmp_path / f"answer-{number}.parquet"

        done = merge.apply(args=[results, job.merge, str(output)]).get()

        whole = duckdb.sql(job.text).fetchall()
        got = [tuple(row.values()) for row in pq.read_table(output).to_pylist()]
        ordered = "ORDER BY" in job.text
        assert (got if ordered else sorted(got, key=repr)) == (
            whole if ordered else sorted(whole, key=repr)), job.text
        assert done["parts"] == len(job.parts) and done["rows"] == len(whole)
        assert done["by_file"] == (len(job.parts) if number % 2 else 0)
        assert not Path(job.merge["folder"]).exists() or not number % 2  # tidied


@pytest.mark.parametrize("sql", list(SQL_ESCAPES))
def test_sql_reads_and_writes_only_the_files_its_arguments_name(sql, fuzz_app, files):
    """A part's or a merge's SQL cannot read, write, attach or load anything else, nor
    unlock DuckDB: a one-line refusal naming the task."""
    job = files.csv_job
    part = fuzz_app.tasks["compute.data.sql_part"].apply(
        args=[{**job.query, "sql": sql}, job.parts[0], files["out"] + "/esc/part-00000.parquet"])
    merge = fuzz_app.tasks["compute.data.sql_merge"].apply(
        args=[[job.inline[0]], {**job.merge, "sql": sql}, files["out"] + "/esc.parquet"])

    for task, outcome in (("compute.data.sql_part", part), ("compute.data.sql_merge", merge)):
        assert outcome.state == "FAILURE"
        assert isinstance(outcome.result, InvalidArgument), repr(outcome.result)
        message = str(outcome.result)
        assert message.startswith(f"{task}: ") and "\n" not in message
        assert SQL_ESCAPES[sql] in message, message
        assert "root:" not in message  # nothing of /etc/passwd
    assert not Path("/tmp/idle-accel-fuzz.csv").exists()
    assert not Path("/tmp/idle-accel-fuzz.db").exists()


#: SQL that is not one SELECT: no statement (DuckDB would run nothing and return no
#: result), or statements a plan never writes.
NO_STATEMENT = [";", " ", "-- only a comment", "/* only a comment */", "SET threads = 1",
                "SELECT 1; SELECT 2", "CREATE TABLE t (a INT)"]


@pytest.mark.parametrize("sql", NO_STATEMENT)
def test_sql_without_a_statement_is_refused_naming_the_argument(sql, fuzz_app, files):
    job = files.csv_job
    part = fuzz_app.tasks["compute.data.sql_part"].apply(
        args=[{**job.query, "sql": sql}, job.parts[0], files["out"] + "/none/part-00000.parquet"])
    merge = fuzz_app.tasks["compute.data.sql_merge"].apply(
        args=[[job.inline[0]], {**job.merge, "sql": sql}, files["out"] + "/none.parquet"])

    for outcome in (part, merge):
        assert outcome.state == "FAILURE"
        assert isinstance(outcome.result, InvalidArgument)
        assert "NoneType" not in str(outcome.result), str(outcome.result)
        assert "'query'" in str(outcome.result) or "'merge'" in str(outcome.result)
