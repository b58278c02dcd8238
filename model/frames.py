"""Which camera frames the model sees at a tick, in training and at run time alike.

A config with ``image_history`` n, ``image_stride`` s and ``instruction_frame`` feeds, stacked on the
channel axis (oldest first): the frame of the instruction's first tick (when ``instruction_frame``),
then the frames of ticks t − s·(n−1), …, t − s, t. Ticks before the first one repeat the first frame,
as training clips its indices at the episode's start. With the defaults (1, 1, False) it is the
current frame alone.
"""

from __future__ import annotations

from collections import deque

import numpy as np
from mhc_model.config import MHCConfig


def frame_ticks(cfg: MHCConfig, t: np.ndarray) -> np.ndarray:
    """``t (T,)`` ticks since the instruction → ``(T, n_frames)`` ticks of the frames fed at each."""
    t = np.asarray(t)[:, None]
    lags = cfg.image_stride * np.arange(cfg.image_history - 1, -1, -1)  # oldest first
    ticks = np.maximum(t - lags, 0)
    if cfg.instruction_frame:
        ticks = np.concatenate([np.zeros_like(t), ticks], axis=1)
    return ticks


class FrameStack:
    """A run-time task's preprocessed frames: ``push`` each tick's ``(3, S, S)`` frame, get the
    ``(3·n_frames, S, S)`` model input. ``clear`` when a new instruction starts a task."""

    def __init__(self, cfg: MHCConfig):
        self.cfg = cfg
        self._recent: deque[np.ndarray] = deque(maxlen=cfg.frame_lag + 1)
        self._first: np.ndarray | None = None
        self.ticks = 0  # frames pushed since the last clear

    def clear(self) -> None:
        self._recent.clear()
        self._first = None
        self.ticks = 0

    def push(self, frame: np.ndarray) -> np.ndarray:
        """Add the current frame; return the stacked input for this tick."""
        if self._first is None:
            self._first = frame
        self._recent.append(frame)
        t = self.ticks
        self.ticks += 1
        oldest_kept = t - (len(self._recent) - 1)
        picks = []
        for tick in frame_ticks(self.cfg, np.array([t]))[0]:
            picks.append(self._first if tick == 0 else self._recent[tick - oldest_kept])
        return picks[0] if len(picks) == 1 else np.concatenate(picks, axis=0)
