"""AI inference end to end: MiniLM embeddings and top-k search split across two real workers."""

from __future__ import annotations

import numpy as np
import pytest

from compute import inference, plans
from compute.errors import InvalidArgument

TIMEOUT = 300
TOPICS = ["the cat sleeps on the warm sofa", "stock markets fell sharply today",
          "a recipe for tomato soup with basil", "the football team won the final",
          "new telescope images of a distant galaxy", "how to repair a flat bicycle tyre"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> str:
    lines = [f"{topic} ({i})" for i in range(10) for topic in TOPICS]
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def test_embeddings_and_search_across_two_workers_equal_a_local_run(
        app, workers, corpus, tmp_path):
    nodes = {workers(name, "--concurrency", "1").node for name in ("ai-a", "ai-b")}
    output = str(tmp_path / "corpus.npy")
    lines = inference.read_lines(corpus, "test")

    embedded = plans.embed(app, corpus, output, rows_per_part=8)
    summary = app.AsyncResult(embedded.assemble).get(timeout=TIMEOUT)
    found = plans.search(app, output, "a cat resting on a couch", k=5, parts=3, corpus=corpus)
    hits = app.AsyncResult(found.assemble).get(timeout=TIMEOUT)["hits"]

    local = inference.encode(lines)  # the same model, in this process
    matrix = np.load(output)
    assert len(embedded.parts) == 8 and set(summary["workers"]) == nodes
    assert matrix.shape == (60, 384) == (summary["rows"], summary["dim"])
    np.testing.assert_allclose(matrix, local, atol=1e-5)
    scores = local @ inference.encode(["a cat resting on a couch"])[0]
    best = sorted(range(len(lines)), key=lambda i: (-scores[i], i))[:5]
    assert [hit["row"] for hit in hits] == best
    np.testing.assert_allclose([hit["score"] for hit in hits], scores[best], atol=1e-5)
    assert all("cat sleeps" in hit["text"] for hit in hits)


def test_bad_inference_inputs_fail_with_clear_messages(app, corpus, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")

    with pytest.raises(InvalidArgument, match="is empty: nothing to embed"):
        plans.embed(app, str(empty), str(tmp_path / "e.npy"))
    with pytest.raises(InvalidArgument, match="does not exist"):
        plans.embed(app, str(tmp_path / "missing.txt"), str(tmp_path / "e.npy"))
    with pytest.raises(InvalidArgument, match="'k' must be an integer from 1 to 1000"):
        plans.search(app, str(tmp_path / "e.npy"), "cats", k=0)
    with pytest.raises(InvalidArgument, match="do not exist"):
        plans.search(app, str(tmp_path / "e.npy"), "cats", k=3)
