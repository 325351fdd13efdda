"""Rendering: Blender Cycles through ``bpy``, frames and tiles split across volunteers.

Extra ``render`` (``bpy`` 5.0). Two jobs:

- a frame range: one task per frame, each writes ``frame-0001.png``;
- one frame in tiles: each task renders one cell of a grid (Blender's border
  render, cropped), and ``assemble_tiles`` pastes them into the final PNG.

Renders are made reproducible so that the assembled frame equals a
single-machine render pixel for pixel: a fixed sampling seed, a fixed sample
count, no adaptive sampling, no denoising (a denoiser sees only its tile) and
no dithering. Cycles uses an NVIDIA GPU (OptiX, else CUDA) when the volunteer
has one, else the CPU.

Submitted .blend files are untrusted: they are opened with scripts disabled
(``use_scripts=False``; auto-run of embedded Python off), so a driver or a
startup script inside the file never runs on a volunteer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from compute import validate
from compute.errors import InvalidArgument
from compute.sdk import compute_task, task_threads

DEMO_SCENE = Path(__file__).with_name("assets") / "demo.blend"
MAX_SAMPLES = 4096
MAX_GRID = 16
MAX_PIXELS = 8192
MIN_PIXELS = 4  # Blender's smallest: it silently renders 4 pixels for less
MAX_FRAME = 1_000_000


def _bpy() -> Any:
    try:
        import bpy
    except ImportError as exc:
        raise InvalidArgument("rendering needs the 'render' extra on this worker: "
                              f"pip install 'idle-accelerator[render]' ({exc})") from None
    return bpy


def check_settings(settings: Any, task: str = "render") -> dict[str, Any]:
    """``{"samples", "seed", "resolution": [w, h] | None}`` with defaults, or InvalidArgument."""
    if settings is None:
        settings = {}
    where = f"{task}: argument 'settings'"
    if not isinstance(settings, dict):
        raise InvalidArgument(f"{where} must be a JSON object; got {validate.shown(settings)}")
    unknown = set(settings) - {"samples", "seed", "resolution"}
    if unknown:
        raise InvalidArgument(f"{where}: unknown settings {sorted(unknown)}; "
                              "allowed: samples, seed, resolution")
    samples = settings.get("samples", 32)
    seed = settings.get("seed", 0)
    resolution = settings.get("resolution")
    if not isinstance(samples, int) or isinstance(samples, bool) or not 1 <= samples <= MAX_SAMPLES:
        raise InvalidArgument(f"{where}: 'samples' must be an integer from 1 to {MAX_SAMPLES}; "
                              f"got {validate.shown(samples)}")
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**31:
        raise InvalidArgument(f"{where}: 'seed' must be an integer from 0 to 2**31-1; "
                              f"got {validate.shown(seed)}")
    if resolution is not None and (
            not isinstance(resolution, list) or len(resolution) != 2
            or not all(validate.is_a(v, int) and MIN_PIXELS <= v <= MAX_PIXELS
                       for v in resolution)):
        raise InvalidArgument(f"{where}: 'resolution' must be [width, height], each from "
                              f"{MIN_PIXELS} to {MAX_PIXELS}; got {validate.shown(resolution)}")
    return {"samples": samples, "seed": seed, "resolution": resolution}


_DEVICE: str | None = None  # what this process found, once: OPTIX, CUDA or CPU


def _use_gpu(bpy: Any, scene: Any) -> str:
    """Render on an NVIDIA GPU when the process has one (looked for once), else the CPU."""
    global _DEVICE
    if _DEVICE is None:
        _DEVICE = _find_device(bpy)
    scene.cycles.device = "CPU" if _DEVICE == "CPU" else "GPU"
    return _DEVICE


def _find_device(bpy: Any) -> str:
    try:
        prefs = bpy.context.preferences.addons["cycles"].preferences
        for kind in ("OPTIX", "CUDA"):
            prefs.compute_device_type = kind
            prefs.get_devices()
            devices = [d for d in prefs.devices if d.type == kind]
            if devices:
                for dev in prefs.devices:
                    dev.use = dev.type == kind
                return kind
    except (KeyError, TypeError, AttributeError, RuntimeError):
        pass
    return "CPU"


def open_scene(blend: str, frame: int, settings: dict[str, Any], task: str
               ) -> tuple[Any, str]:
    """Open ``blend`` without its scripts, set up a reproducible Cycles render; (scene, device)."""
    path = Path(validate.path(task, "blend", blend, local=True))
    if not path.is_file():
        raise InvalidArgument(f"{task}: argument 'blend': scene {blend!r} does not exist")
    bpy = _bpy()
    bpy.context.preferences.filepaths.use_scripts_auto_execute = False
    try:
        bpy.ops.wm.open_mainfile(filepath=str(path), load_ui=False, use_scripts=False)
    except RuntimeError as exc:
        raise InvalidArgument(f"{task}: argument 'blend': {blend!r} is not a readable "
                              f".blend file: {str(exc).strip()[:300]}") from None
    scene = bpy.context.scene
    if scene.camera is None:
        raise InvalidArgument(f"{task}: argument 'blend': scene {blend!r} has no camera")
    if not scene.frame_start <= frame <= scene.frame_end:
        raise InvalidArgument(f"{task}: argument 'number': frame {frame} is outside the "
                              f"scene's frames {scene.frame_start}-{scene.frame_end}")
    scene.frame_set(frame)
    scene.render.engine = "CYCLES"
    scene.cycles.samples = settings["samples"]
    scene.cycles.seed = settings["seed"]
    scene.cycles.use_animated_seed = False
    scene.cycles.use_adaptive_sampling = False
    scene.cycles.use_denoising = False
    scene.render.dither_intensity = 0.0
    scene.render.threads_mode = "FIXED"  # this task's share of the cores
    scene.render.threads = task_threads()
    if settings["resolution"]:
        scene.render.resolution_x, scene.render.resolution_y = settings["resolution"]
        scene.render.resolution_percentage = 100
    scene.render.image_settings.file_format = "PNG"
    scene.render.image_settings.color_mode = "RGBA"
    scene.render.use_border = False
    scene.render.use_crop_to_border = False
    return scene, _use_gpu(bpy, scene)


def size(scene: Any) -> tuple[int, int]:
    pct = scene.render.resolution_percentage / 100
    return int(scene.render.resolution_x * pct), int(scene.render.resolution_y * pct)


def tile_box(width: int, height: int, col: int, row: int, cols: int, rows: int
             ) -> tuple[int, int, int, int]:
    """Pixel box (x0, y0, x1, y1) of a grid cell, rows counted from the top."""
    return (col * width // cols, row * height // rows,
            (col + 1) * width // cols, (row + 1) * height // rows)


def _output(task: str, out_dir: str, name: str) -> Path:
    """``out_dir/name``, its folder created (InvalidArgument naming 'out_dir' if it cannot be)."""
    try:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidArgument(f"{task}: argument 'out_dir': cannot create {out_dir!r}: "
                              f"{exc}") from None
    return Path(out_dir) / name


def _render(scene: Any, out: Path) -> None:
    """Render the scene to ``out`` (its folder exists): the engine call, nothing checked."""
    scene.render.filepath = str(out)
    _bpy().ops.render.render(write_still=True)


def _int(task: str, name: str, value: Any, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise InvalidArgument(f"{task}: argument '{name}' must be an integer from {low} to "
                              f"{high}; got {validate.shown(value)}")
    return value


def _pair(task: str, name: str, value: Any, first: tuple[int, int],
          second: tuple[int, int]) -> tuple[int, int]:
    if not isinstance(value, list) or len(value) != 2:
        raise InvalidArgument(f"{task}: argument '{name}' must be a pair [x, y]; "
                              f"got {validate.shown(value)}")
    for index, (item, (low, high)) in enumerate(zip(value, (first, second), strict=True)):
        if not validate.is_a(item, int) or not low <= item <= high:
            raise InvalidArgument(f"{task}: argument '{name}': item {index} must be an integer "
                                  f"from {low} to {high}; got {validate.shown(item)}")
    return value[0], value[1]


@compute_task("compute.render.frame")
def frame(self, blend: str, number: int, out_dir: str, settings: dict | None = None) -> dict:
    """Render frame ``number`` of ``blend`` to ``out_dir/frame-NNNN.png``."""
    settings = check_settings(settings, self.name)
    number = _int(self.name, "number", number, 0, MAX_FRAME)
    out_dir = validate.path(self.name, "out_dir", out_dir, local=True)
    scene, device = open_scene(blend, number, settings, self.name)
    out = _output(self.name, out_dir, f"frame-{number:04d}.png")
    _render(scene, out)
    return {"hostname": self.request.hostname, "path": str(out), "frame": number,
            "size": list(size(scene)), "device": device}


@compute_task("compute.render.tile")
def tile(self, blend: str, number: int, cell: list, grid: list, out_dir: str,
         settings: dict | None = None) -> dict:
    """Render cell ``[col, row]`` of a ``[cols, rows]`` grid of frame ``number``."""
    settings = check_settings(settings, self.name)
    number = _int(self.name, "number", number, 0, MAX_FRAME)
    cols, rows = _pair(self.name, "grid", grid, (1, MAX_GRID), (1, MAX_GRID))
    col, row = _pair(self.name, "cell", cell, (0, cols - 1), (0, rows - 1))
    out_dir = validate.path(self.name, "out_dir", out_dir, local=True)
    scene, device = open_scene(blend, number, settings, self.name)
    width, height = size(scene)
    if cols > width or rows > height:  # some tiles would be empty
        raise InvalidArgument(f"{self.name}: argument 'grid': {cols}x{rows} tiles do not fit "
                              f"the frame's {width}x{height} pixels")
    x0, y0, x1, y1 = tile_box(width, height, col, row, cols, rows)
    render = scene.render
    render.use_border, render.use_crop_to_border = True, True
    render.border_min_x, render.border_max_x = x0 / width, x1 / width
    render.border_min_y, render.border_max_y = 1 - y1 / height, 1 - y0 / height  # from bottom
    out = _output(self.name, out_dir, f"tile-{number:04d}-{row:02d}-{col:02d}.png")
    _render(scene, out)
    return {"hostname": self.request.hostname, "path": str(out), "box": [x0, y0, x1, y1],
            "size": [width, height], "device": device}


def _check_tiles(task: str, parts: Any) -> tuple[list[dict[str, Any]], int, int]:
    """``tile`` results: one frame ``size`` [w, h] for all, each ``box`` inside it."""
    parts = validate.records(task, "parts", parts, {"path": str, "box": list, "size": list,
                                                    "hostname": str}, minimum=1)
    frame_size = parts[0]["size"]
    if not (len(frame_size) == 2 and all(validate.is_a(v, int) and 1 <= v <= MAX_PIXELS
                                         for v in frame_size)):
        raise InvalidArgument(f"{task}: argument 'parts': item 0: size must be [width, height], "
                              f"each from 1 to {MAX_PIXELS}; got {validate.shown(frame_size)}")
    width, height = frame_size
    for index, part in enumerate(parts):
        box = part["box"]
        if part["size"] != frame_size:
            raise InvalidArgument(f"{task}: argument 'parts': item {index} is a tile of a "
                                  f"{validate.shown(part['size'])} frame, not {frame_size}")
        if not (len(box) == 4 and all(validate.is_a(v, int) for v in box)
                and 0 <= box[0] < box[2] <= width and 0 <= box[1] < box[3] <= height):
            raise InvalidArgument(f"{task}: argument 'parts': item {index}: box must be "
                                  f"[x0, y0, x1, y1] inside {width}x{height}; "
                                  f"got {validate.shown(box)}")
    return parts, width, height


def _image_format(task: str, output: str) -> str:
    from PIL import Image

    Image.init()
    kind = Image.registered_extensions().get(Path(output).suffix.lower())
    if kind not in Image.SAVE:
        raise InvalidArgument(f"{task}: argument 'output' must name an image file "
                              f"(.png, .tif, ...); got {output!r}")
    return kind


@compute_task("compute.render.assemble_tiles")
def assemble_tiles(self, parts: list, output: str) -> dict:
    """Paste every tile at its box into one PNG at ``output``."""
    from PIL import Image

    parts, width, height = _check_tiles(self.name, parts)
    output = validate.path(self.name, "output", output, local=True)
    kind = _image_format(self.name, output)
    canvas = Image.new("RGBA", (width, height))
    for part in parts:
        x0, y0, x1, y1 = part["box"]
        try:
            with Image.open(part["path"]) as piece:
                if piece.size != (x1 - x0, y1 - y0):
                    raise InvalidArgument(f"{self.name}: argument 'parts': tile "
                                          f"{part['path']} is {piece.size}, expected "
                                          f"{(x1 - x0, y1 - y0)}")
                canvas.paste(piece.convert("RGBA"), (x0, y0))
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise InvalidArgument(f"{self.name}: argument 'parts': tile {part['path']!r} is not "
                                  f"a readable image: {exc}") from None
    try:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        canvas.save(output, format=kind)
    except (OSError, ValueError) as exc:  # e.g. RGBA as JPEG
        raise InvalidArgument(f"{self.name}: argument 'output': cannot write {output!r}: "
                              f"{exc}") from None
    return {"hostname": self.request.hostname, "output": output, "tiles": len(parts),
            "size": [width, height], "workers": sorted({p["hostname"] for p in parts})}


@compute_task("compute.render.collect_frames")
def collect_frames(self, parts: list) -> dict:
    """The rendered frames of a range, in order."""
    parts = validate.records(self.name, "parts", parts,
                             {"frame": int, "path": str, "hostname": str})
    ordered = sorted(parts, key=lambda part: part["frame"])
    return {"hostname": self.request.hostname, "frames": [p["path"] for p in ordered],
            "workers": sorted({p["hostname"] for p in parts})}


def make_demo_scene(path: str | Path, frames: int = 4) -> Path:
    """Build the small demo scene (the file shipped as ``compute/assets/demo.blend``)."""
    bpy = _bpy()
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    scene.render.resolution_x, scene.render.resolution_y = 320, 240
    scene.frame_start, scene.frame_end = 1, frames
    bpy.ops.mesh.primitive_plane_add(size=12, location=(0, 0, 0))
    bpy.ops.mesh.primitive_uv_sphere_add(radius=1, location=(0, 0, 1))
    sphere = bpy.context.object
    bpy.ops.mesh.primitive_cube_add(size=1.2, location=(2.2, 0.8, 0.6))
    for frame_no in range(1, frames + 1):  # the sphere rolls: frames differ
        sphere.location = (-1.5 + frame_no * 0.6, -0.5, 1)
        sphere.keyframe_insert("location", frame=frame_no)
    bpy.ops.object.light_add(type="SUN", location=(3, -3, 6))
    bpy.context.object.data.energy = 3.0
    bpy.ops.object.camera_add(location=(7, -7, 5), rotation=(1.1, 0, 0.785))
    scene.camera = bpy.context.object
    scene.world = bpy.data.worlds.new("sky")
    scene.world.color = (0.3, 0.4, 0.6)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    bpy.ops.wm.save_as_mainfile(filepath=str(path), compress=True)
    return path
