"""Run a backend over an image source batch by batch and join the outputs (used by the
Detector and by calibration)."""
from __future__ import annotations

from typing import Callable

import numpy as np

from edgeood.data import ImageSource, Preprocess
from edgeood.progress import track
from edgeood.runtime.backend import Backend


def run_over(backend: Backend, source: ImageSource, pre: Preprocess, batch_size: int,
             names: list[str] | None = None, label: str = "running", progress: bool = False,
             on_batch: Callable[[np.ndarray], None] | None = None) -> dict[str, np.ndarray]:
    """The named outputs (all when None) over every image, concatenated along the batch axis;
    on_batch sees each preprocessed input batch."""
    names = list(names or backend.output_names)
    parts: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for batch in track(source.batches(pre, batch_size), -(-len(source) // batch_size),
                       label, progress):
        if on_batch is not None:
            on_batch(batch.x)
        for n, v in backend.run(batch.x, names).items():
            parts[n].append(v)
    return {n: np.concatenate(v) for n, v in parts.items()}
