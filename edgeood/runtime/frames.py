"""Camera frames straight into a detector with in-graph preprocessing (`--input uint8`).

A backend that declares `image_input` takes uint8 N x H x W x C frames as they are: no host
resize or normalisation. Frames go in batches of consecutive frames of one shape (a list of
frames of mixed sizes still works, in several batches)."""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from edgeood.data import ImageSource, Preprocess, read_image
from edgeood.errors import EdgeoodError
from edgeood.progress import track
from edgeood.runtime.backend import Backend


def takes_frames(backend: Backend, source: ImageSource) -> bool:
    """Whether the backend has a uint8 image input and the source holds uint8 images."""
    if backend.image_input is None:
        return False
    if source.files is not None or isinstance(source.array, list):
        return True
    return source.array is not None and source.array.dtype == np.uint8


def as_frame(img: np.ndarray, pre: Preprocess, where: str) -> np.ndarray:
    """Check one uint8 frame like the host path does (channels; size when the graph does not
    resize) and return it H x W x C, without resizing."""
    if img.ndim == 2:
        img = img[:, :, None]
    if img.ndim == 3 and img.shape[2] == 4 and pre.channels == 3:
        img = img[:, :, :3]
    if img.ndim != 3 or img.shape[2] != pre.channels or \
            (not pre.resize and tuple(img.shape[:2]) != pre.size):
        return pre.fit_image(img, where)  # raises the host path's one-line error
    if img.dtype != np.uint8:
        raise EdgeoodError(f"{where} is {img.dtype}; camera frames must be uint8")
    return np.ascontiguousarray(img)


def frame_batches(source: ImageSource, pre: Preprocess, batch_size: int) -> Iterator[np.ndarray]:
    """uint8 N x H x W x C batches: at most batch_size consecutive frames of one shape."""
    if source.array is not None and not isinstance(source.array, list):
        for start in range(0, len(source), batch_size):
            chunk = source.array[start:start + batch_size]
            yield np.stack([as_frame(f, pre, f"{source.name}[{start + i}]")
                            for i, f in enumerate(chunk)])
        return
    pending: list[np.ndarray] = []
    for i in range(len(source)):
        if source.files is not None:
            frame = as_frame(read_image(source.files[i], pre.channels), pre, str(source.files[i]))
        else:
            frame = as_frame(source.array[i], pre, f"{source.name}[{i}]")
        if pending and (frame.shape != pending[0].shape or len(pending) == batch_size):
            yield np.stack(pending)
            pending = []
        pending.append(frame)
    if pending:
        yield np.stack(pending)


def run_frames(backend: Backend, source: ImageSource, pre: Preprocess, batch_size: int,
               names: list[str], label: str = "running",
               progress: bool = False) -> dict[str, np.ndarray]:
    """The named outputs over every frame of source, fed to the backend's image input."""
    parts: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for frames in track(frame_batches(source, pre, batch_size), -(-len(source) // batch_size),
                        label, progress):
        for n, v in backend.run(frames, names).items():
            parts[n].append(v)
    return {n: np.concatenate(v) for n, v in parts.items()}
