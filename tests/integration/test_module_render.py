"""Rendering end to end: Blender Cycles tiles across two real workers equal a single render."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from compute import plans, render
from compute.errors import InvalidArgument

TIMEOUT = 300
SETTINGS = {"samples": 4, "seed": 11, "resolution": [96, 64]}


def pixels(path: str) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGBA")).astype(int)


def test_tiles_rendered_on_two_workers_assemble_into_the_single_machine_frame(
        app, workers, tmp_path):
    nodes = {workers(name, "--concurrency", "1").node for name in ("gfx-a", "gfx-b")}
    output = str(tmp_path / "tiled.png")

    tiled = plans.render_tiles(app, str(render.DEMO_SCENE), 2, output, grid=(3, 2),
                               settings=SETTINGS)
    summary = app.AsyncResult(tiled.assemble).get(timeout=TIMEOUT)
    single = render.frame.apply_async(args=[str(render.DEMO_SCENE), 2, str(tmp_path / "one"),
                                            SETTINGS]).get(timeout=TIMEOUT)

    assert summary["tiles"] == 6 and set(summary["workers"]) == nodes
    assembled, whole = pixels(output), pixels(single["path"])
    assert assembled.shape == whole.shape == (64, 96, 4)
    assert np.array_equal(assembled, whole)  # pixel for pixel: PSNR is infinite
    assert assembled[..., :3].std() > 5  # a real image, not a blank one


def test_a_frame_range_renders_one_png_per_frame(app, workers, tmp_path):
    workers("gfx-a", "--concurrency", "1")

    job = plans.render_frames(app, str(render.DEMO_SCENE), 1, 3, str(tmp_path / "frames"),
                              settings=SETTINGS)
    frames = app.AsyncResult(job.assemble).get(timeout=TIMEOUT)["frames"]

    assert [Path(path).name for path in frames] == [
        "frame-0001.png", "frame-0002.png", "frame-0003.png"]
    first, last = pixels(frames[0]), pixels(frames[2])
    assert not np.array_equal(first, last)  # the sphere moved


def test_scripts_inside_a_submitted_blend_never_run(app, workers, tmp_path):
    marker = tmp_path / "script-ran"
    evil = tmp_path / "evil.blend"
    subprocess.run([sys.executable, "-c", textwrap.dedent(f'''
        import bpy
        bpy.ops.wm.open_mainfile(filepath={str(render.DEMO_SCENE)!r})
        text = bpy.data.texts.new("evil.py")
        text.write("open({str(marker)!r}, 'w').write('ran')")
        text.use_module = True  # registered: runs when the file is opened trusted
        bpy.ops.wm.save_as_mainfile(filepath={str(evil)!r})
    ''')], check=True, capture_output=True, timeout=120)
    workers("gfx-a", "--concurrency", "1")

    job = plans.render_frames(app, str(evil), 1, 1, str(tmp_path / "out"), settings=SETTINGS)
    app.AsyncResult(job.assemble).get(timeout=TIMEOUT)

    assert not marker.exists()
    subprocess.run([sys.executable, "-c", textwrap.dedent(f'''
        import bpy
        bpy.context.preferences.filepaths.use_scripts_auto_execute = True
        bpy.ops.wm.open_mainfile(filepath={str(evil)!r}, use_scripts=True)
    ''')], check=True, capture_output=True, timeout=120)
    assert marker.exists()  # the trap is real: a trusting open runs it


def test_a_corrupt_blend_fails_with_a_clear_message_and_the_worker_keeps_serving(
        app, workers, tmp_path):
    worker = workers("gfx-a", "--concurrency", "1")
    corrupt = tmp_path / "broken.blend"
    corrupt.write_bytes(b"BLENDER-v500" + b"\x00garbage" * 100)

    job = plans.render_frames(app, str(corrupt), 1, 1, str(tmp_path / "out"))
    part = app.AsyncResult(job.parts[0])
    part.get(timeout=TIMEOUT, propagate=False)

    assert part.state == "FAILURE"
    assert "is not a readable .blend file" in str(part.result)
    assert app.signature("compute.diag.noop").delay().get(timeout=60) == {
        "hostname": worker.node}
    with pytest.raises(InvalidArgument, match="does not exist"):
        plans.render_tiles(app, str(tmp_path / "none.blend"), 1, "x.png", grid=(2, 2))
    with pytest.raises(InvalidArgument, match="'samples' must be an integer"):
        plans.render_tiles(app, str(render.DEMO_SCENE), 1, "x.png", grid=(2, 2),
                           settings={"samples": 0})
