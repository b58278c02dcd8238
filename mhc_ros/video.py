"""Episode videos: camera frames with the model's predicted motion drawn on them, written as GIF.

Used by ``mhc eval --video DIR`` (frames straight from the simulation) and ``mhc video`` (frames and
``/mhc/predicted_motion`` read back from a bag). Pure numpy + Pillow; the camera model is passed in
as a function from world points ``(..., 3)`` to pixels ``(..., 2)`` (``mhc_sim.project_scene_points``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from mhc_ros.control_logic import MOTION_SLOT_COLOURS

SCALE = 3  # 96-pixel camera frames are drawn 3× larger, nearest neighbour
# one colour per motion slot, as the controller's RViz markers (control_logic.MOTION_SLOT_COLOURS), 0–255
SLOT_COLOURS = tuple(tuple(round(255 * c) for c in rgb) for rgb in MOTION_SLOT_COLOURS)

Projector = Callable[[np.ndarray], np.ndarray]


def draw_frame(image: np.ndarray, project: Projector, motion: np.ndarray | None = None,
               shown: Sequence[bool] | None = None, caption: str = "") -> Image.Image:
    """``image (H, W, 3) uint8`` enlarged ``SCALE`` times, each shown slot's predicted path ``motion (T, 7, 3)``
    (m, world frame) drawn as a line ending in a dot, and ``caption`` written at the top."""
    frame = Image.fromarray(np.asarray(image, dtype=np.uint8)).convert("RGB")
    frame = frame.resize((frame.width * SCALE, frame.height * SCALE), Image.NEAREST)
    draw = ImageDraw.Draw(frame)
    if motion is not None:
        paths = project(np.asarray(motion, dtype=float)) * SCALE  # (T, 7, 2)
        for slot in range(paths.shape[1]):
            if shown is not None and not shown[slot]:
                continue
            points = [tuple(p) for p in paths[:, slot] if np.isfinite(p).all()]
            if len(points) < 2:
                continue
            colour = SLOT_COLOURS[slot % len(SLOT_COLOURS)]
            draw.line(points, fill=colour, width=2)
            x, y = points[-1]
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
    if caption:
        draw.rectangle([0, 0, frame.width, 12], fill=(0, 0, 0))
        draw.text((3, 0), caption, fill=(255, 255, 255))
    return frame


def write_gif(frames: Sequence[Image.Image], path: str | Path, fps: float = 10.0) -> Path:
    """Write ``frames`` as a looping GIF at ``fps`` frames per second; returns the path."""
    if not frames:
        raise ValueError(f"no frames to write to '{path}'")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames[0].save(path, save_all=True, append_images=list(frames[1:]), duration=round(1000.0 / fps),
                   loop=0, optimize=False)
    return path
