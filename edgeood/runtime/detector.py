"""The Detector facade: preprocess, batch, run a backend, split the outputs by name.

It knows no method formulas: it reads output names (logits, score_<m>, pvalue_<m>, is_ood) and
the metadata.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeood.artifact.metadata import DetectorMetadata
from edgeood.data import ImageSource, Preprocess, open_source
from edgeood.progress import warn
from edgeood.runtime.backend import Backend, target_mismatch
from edgeood.runtime.batches import run_over
from edgeood.runtime.frames import run_frames, takes_frames


@dataclass
class Detection:
    """Per-image results; scores and pvalues are dicts by method name."""

    logits: np.ndarray
    scores: dict[str, np.ndarray]
    pvalues: dict[str, np.ndarray] = field(default_factory=dict)
    is_ood: np.ndarray | None = None
    class_names: list[str] | None = None  # the detector's, index i = class i (None: unnamed)

    @property
    def labels(self) -> np.ndarray:
        return self.logits.argmax(axis=1)

    @property
    def names(self) -> list[str] | None:
        """The predicted class's name per image (None when the detector has no class names)."""
        if not self.class_names:
            return None
        return [self.class_names[int(i)] for i in self.labels]

    def __len__(self) -> int:
        return len(self.logits)

    def rows(self, names: list[str] | None = None) -> list[dict[str, Any]]:
        """One JSON-ready dict per image."""
        out = []
        for i in range(len(self)):
            row: dict[str, Any] = {"label": int(self.labels[i])}
            if self.class_names:
                row["name"] = self.class_names[row["label"]]
            if names is not None:
                row["source"] = names[i]
            row["scores"] = {m: float(s[i]) for m, s in self.scores.items()}
            if self.pvalues:
                row["pvalues"] = {m: float(p[i]) for m, p in self.pvalues.items()}
            if self.is_ood is not None:
                row["is_ood"] = bool(self.is_ood[i])
            out.append(row)
        return out


class Detector:
    """detector(images) -> Detection. images: uint8 H x W x C images (a list or an N x H x W x C
    array), a float32 N x C x H x W preprocessed array, or a folder / image / .npy / .npz path.
    close() (or leaving a `with` block) releases the backend's session or GPU memory."""

    def __init__(self, backend: Backend, metadata: dict[str, Any], path: Path | None = None):
        self.backend, self.metadata, self.path = backend, metadata, path
        self.meta = DetectorMetadata.from_dict(metadata)  # the typed view of metadata
        self.preprocess = Preprocess.from_dict(self.meta.preprocessing or {})
        self.target_note = target_mismatch(metadata, backend.target)
        if self.target_note:  # said once, when the detector is loaded
            warn(self.target_note)

    def close(self) -> None:
        """Release the backend; running afterwards is refused in one line."""
        self.backend.close()

    def __enter__(self) -> Detector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def methods(self) -> list[str]:
        return list(self.meta.methods)

    @property
    def primary(self) -> str:
        return self.meta.primary

    @property
    def class_names(self) -> list[str] | None:
        """Index i: the name of class i, as stored at export (None when it stored none)."""
        names = self.metadata.get("class_names")
        return list(names) if names else None

    @property
    def thresholds(self) -> dict[str, float]:
        return self.meta.thresholds

    def __call__(self, images, batch_size: int = 32, progress: bool = False,
                 strict: bool = False) -> Detection:
        """strict: stop at the first unreadable image of a folder instead of skipping it."""
        if isinstance(images, np.ndarray) and images.dtype == np.uint8 and images.ndim == 3 \
                and images.shape[-1] in (1, 3, 4) and images.shape[-1] != images.shape[0]:
            images = images[None]  # one H x W x C image
        return self.run_source(open_source(images, strict=strict), batch_size, progress)

    def run_source(self, source: ImageSource, batch_size: int = 32,
                   progress: bool = False, strict: bool = False) -> Detection:
        """source: an ImageSource, or anything open_source takes (opened with strict)."""
        source = open_source(source, strict=strict)
        names = self.backend.output_names
        if takes_frames(self.backend, source):  # --input uint8: frames as they are
            out = run_frames(self.backend, source, self.preprocess, batch_size, names,
                             "running", progress)
        else:
            out = run_over(self.backend, source, self.preprocess, batch_size, names, "running",
                           progress)
        return Detection(
            logits=out["logits"],
            scores={n[6:]: out[n] for n in names if n.startswith("score_")},
            pvalues={n[7:]: out[n] for n in names if n.startswith("pvalue_")},
            is_ood=out.get("is_ood"),
            class_names=self.class_names,
        )
