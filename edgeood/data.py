"""Image sources (folders, .npy/.npz arrays, in-memory arrays), preprocessing, jigsaw images.

uint8 images are H x W x C in RGB order (PIL's); they are resized (when the preprocessing allows
it), normalised with mean/std in [0, 1] units and transposed to N x C x H x W float32. float32
N x C x H x W arrays are taken as already preprocessed.
"""
from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from edgeood.errors import EdgeoodError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm"}


@dataclass
class Preprocess:
    """How a camera frame becomes the model input."""

    size: tuple[int, int]
    channels: int = 3
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    resize: bool = True
    color: str = "RGB"  # RGB, BGR or GRAY: the channel order the model expects
    resize_rule: str = "pil_bilinear"  # see edgeood/resize.py; the graph's rule with --input uint8

    def __post_init__(self):
        self.size = (int(self.size[0]), int(self.size[1]))
        self.mean = tuple(float(v) for v in np.broadcast_to(self.mean, (self.channels,)))
        self.std = tuple(float(v) for v in np.broadcast_to(self.std, (self.channels,)))
        if self.channels == 1:
            self.color = "GRAY"

    # --- metadata ---------------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = asdict(self)
        d["size"] = list(self.size)
        d["layout"] = "NCHW"
        d["scale"] = "pixel / 255"  # not a method name: the pixel scaling
        if len(set(self.std)) == 1:  # DeepStream nvinfer: y = net-scale-factor * (x - offsets)
            d["deepstream"] = {"net-scale-factor": 1.0 / (255.0 * self.std[0]),
                               "offsets": [255.0 * m for m in self.mean],
                               "model-color-format": {"RGB": 0, "BGR": 1, "GRAY": 2}[self.color]}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocess":
        keys = ("size", "channels", "mean", "std", "resize", "color", "resize_rule")
        return cls(**{k: d[k] for k in keys if k in d})

    # --- transforms -------------------------------------------------------------------------
    def zero_pixel(self) -> np.ndarray:
        """The normalised value of a black pixel, per channel."""
        return (0.0 - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)

    def normalize(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 N x H x W x C -> float32 N x C x H x W."""
        x = pixels.astype(np.float32) / np.float32(255.0)
        if self.color == "BGR":
            x = x[..., ::-1]
        x = (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))

    def fit_image(self, img: np.ndarray, where: str = "image") -> np.ndarray:
        """Check channels and bring one uint8 image to H x W x C at the model size."""
        if img.ndim == 2:
            img = img[:, :, None]
        if img.ndim != 3:
            raise EdgeoodError(f"{where} has shape {img.shape}; pass H x W x C uint8 images")
        if img.shape[2] == 4 and self.channels == 3:
            img = img[:, :, :3]
        if img.shape[2] != self.channels:
            raise EdgeoodError(f"{where} has {img.shape[2]} channels but the model takes "
                               f"{self.channels}; convert the images (e.g. to "
                               f"{'grayscale' if self.channels == 1 else 'RGB'}) first")
        if tuple(img.shape[:2]) != self.size:
            if not self.resize:
                raise EdgeoodError(f"{where} is {img.shape[1]}x{img.shape[0]} but the model takes "
                                   f"{self.size[1]}x{self.size[0]}; resize the images or pass "
                                   "--imgsz to export a model for that size")
            from edgeood.resize import resize
            img = resize(img, self.size, self.channels, self.resize_rule)
        return img

    def check_float(self, x: np.ndarray, where: str = "input") -> np.ndarray:
        """Validate an already-preprocessed N x C x H x W array."""
        want = (self.channels, *self.size)
        if x.ndim != 4 or tuple(x.shape[1:]) != want:
            raise EdgeoodError(f"{where} has shape {tuple(x.shape)}; the model takes float32 "
                               f"N x {want[0]} x {want[1]} x {want[2]} (or uint8 N x H x W x C images)")
        bad = ~np.isfinite(x).reshape(len(x), -1).all(axis=1)
        if bad.any():
            raise EdgeoodError(f"{where} contains NaN or Inf values (image {int(np.argmax(bad))}); "
                               "fix the preprocessing that produced it")
        return np.ascontiguousarray(x, dtype=np.float32)


@dataclass
class Batch:
    x: np.ndarray                 # float32 N x C x H x W, preprocessed
    labels: np.ndarray | None


class ImageSource:
    """A set of images read lazily in batches: files, a uint8 array, or a float array."""

    def __init__(self, name: str, files: list[Path] | None = None, array: np.ndarray | None = None,
                 labels: np.ndarray | None = None, class_names: list[str] | None = None,
                 skipped: list[str] | None = None):
        self.name, self.files, self.array = name, files, array
        self.labels, self.class_names = labels, class_names
        self.skipped = list(skipped or [])  # unreadable files left out (not strict)

    def __len__(self) -> int:
        return len(self.files) if self.files is not None else len(self.array)

    def subset(self, index: np.ndarray, suffix: str) -> "ImageSource":
        """The images at the given positions (in that order), named '<name> (<suffix>)'."""
        index = np.asarray(index, dtype=np.int64)
        pick = lambda seq: None if seq is None else (  # noqa: E731
            [seq[i] for i in index] if isinstance(seq, list) else seq[index])
        return ImageSource(f"{self.name} ({suffix})", files=pick(self.files),
                           array=pick(self.array), labels=pick(self.labels),
                           class_names=self.class_names, skipped=self.skipped)

    def batches(self, pre: Preprocess, batch_size: int) -> Iterator[Batch]:
        for start in range(0, len(self), batch_size):
            stop = min(start + batch_size, len(self))
            labels = None if self.labels is None else self.labels[start:stop]
            yield Batch(self._load(pre, start, stop), labels)

    def _load(self, pre: Preprocess, start: int, stop: int) -> np.ndarray:
        if self.files is not None:
            return pre.normalize(np.stack([pre.fit_image(read_image(f, pre.channels), str(f))
                                           for f in self.files[start:stop]]))
        chunk = self.array[start:stop]
        if isinstance(chunk, list) or chunk.dtype == np.uint8:
            return pre.normalize(np.stack([pre.fit_image(img, f"{self.name}[{start + i}]")
                                           for i, img in enumerate(chunk)]))
        return pre.check_float(chunk, f"{self.name}[{start}:{stop}]")

    def fingerprint(self) -> str:
        """A cheap hash identifying the set (file names and sizes, or array bytes)."""
        h = hashlib.sha256()
        if self.files is not None:
            for f in self.files:
                h.update(f"{f.name}:{f.stat().st_size};".encode())
        else:
            h.update(np.ascontiguousarray(self.array).tobytes())
        return h.hexdigest()[:16]


def unreadable(path: Path) -> str | None:
    """Why an image file cannot be decoded (None when it can): the whole file is decoded, so
    a truncated image is found here and not halfway through an export."""
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as im:
            im.load()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        return exc.__class__.__name__
    return None


def drop_unreadable(files: list[Path], labels: np.ndarray | None, name: str
                    ) -> tuple[list[Path], np.ndarray | None, list[str]]:
    """The files that decode (and their labels), one warning line per file left out and a
    count at the end; every file unreadable is an error (there is nothing left to use)."""
    from edgeood.progress import warn
    bad = {i: why for i, f in enumerate(files) if (why := unreadable(f)) is not None}
    if not bad:
        return files, labels, []
    for i, why in bad.items():
        warn(f"skipping {files[i]}: not a readable image ({why}); --strict stops instead")
    if len(bad) == len(files):
        raise EdgeoodError(f"{name}: none of its {len(files)} images can be read; point it at "
                           "a folder of images")
    keep = [i for i in range(len(files)) if i not in bad]
    warn(f"{name}: {len(bad)} of {len(files)} images skipped (unreadable); "
         f"{len(keep)} used")
    return ([files[i] for i in keep], None if labels is None else labels[keep],
            [str(files[i]) for i in bad])


def read_image(path: Path, channels: int) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("L" if channels == 1 else "RGB"))
    except (UnidentifiedImageError, OSError) as exc:
        raise EdgeoodError(f"cannot read image {path} ({exc.__class__.__name__}); "
                           "remove or replace the file") from None


def _list_images(folder: Path) -> tuple[list[Path], np.ndarray | None, list[str] | None]:
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise EdgeoodError(f"{folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}); "
                           "point it at a folder of images or a .npy/.npz array")
    rel = [p.relative_to(folder) for p in files]
    if all(len(r.parts) == 2 for r in rel):  # class sub-folders give labels
        names = sorted({r.parts[0] for r in rel})
        index = {n: i for i, n in enumerate(names)}
        return files, np.array([index[r.parts[0]] for r in rel]), names
    return files, None, None


def _check_array(arr: np.ndarray, name: str) -> np.ndarray:
    if arr.dtype == np.uint8:
        if arr.ndim == 3:
            arr = arr[..., None]
        if arr.ndim != 4:
            raise EdgeoodError(f"{name}: a uint8 array must be N x H x W x C images, got {arr.shape}")
        return arr
    if arr.dtype.kind == "f":
        if arr.ndim != 4:
            raise EdgeoodError(f"{name}: a float array must be N x C x H x W, got {arr.shape}")
        return arr.astype(np.float32, copy=False)
    raise EdgeoodError(f"{name}: arrays must be uint8 images (N x H x W x C) or float32 "
                       f"N x C x H x W, got {arr.dtype}")


def open_source(src, name: str | None = None, strict: bool = False) -> ImageSource:
    """An ImageSource from a folder, an image file, a .npy/.npz file, an array or a list of
    images. An unreadable image in a folder is skipped with one warning line (its name is kept
    in `skipped`); strict=True keeps every file and stops at the first unreadable one."""
    if isinstance(src, ImageSource):
        return src
    if isinstance(src, (list, tuple, np.ndarray)) and len(src) == 0:
        raise EdgeoodError(f"{name or 'the input'} holds no images; pass at least one image "
                           "(H x W x C uint8), an N x H x W x C array with N >= 1, or a folder")
    if isinstance(src, (list, tuple)) and not all(isinstance(im, np.ndarray) for im in src):
        kinds = sorted({type(im).__name__ for im in src if not isinstance(im, np.ndarray)})
        raise EdgeoodError(f"{name or 'the input'} is a list holding {', '.join(kinds)}; pass a "
                           "list of uint8 H x W x C NumPy images, an array, or a path")
    if isinstance(src, np.ndarray):
        return ImageSource(name or "array", array=_check_array(src, name or "array"))
    if isinstance(src, (list, tuple)) and src and isinstance(src[0], np.ndarray):
        return ImageSource(name or "images", array=_stack_images(src, name or "images"))
    path = Path(src)
    label = name or str(path)
    if not path.exists():
        raise EdgeoodError(f"{path}: no such file or folder; pass a folder of images or a .npy/.npz")
    if path.is_dir():
        files, labels, names = _list_images(path)
        skipped: list[str] = []
        if not strict:
            files, labels, skipped = drop_unreadable(files, labels, label)
        return ImageSource(label, files=files, labels=labels, class_names=names, skipped=skipped)
    if path.suffix.lower() == ".npy":
        return ImageSource(label, array=_check_array(_load_np(path), label))
    if path.suffix.lower() == ".npz":
        data = _load_np(path)
        key = next((k for k in ("images", "x", "arr_0") if k in data.files), data.files[0])
        labels = next((data[k] for k in ("labels", "y") if k in data.files), None)
        return ImageSource(label, array=_check_array(data[key], label), labels=labels)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return ImageSource(label, files=[path])
    raise EdgeoodError(f"{path}: unsupported data file; pass a folder of images, an image, "
                       "or a .npy/.npz array")


def _load_np(path: Path):
    try:
        return np.load(path, allow_pickle=False)
    except Exception as exc:
        raise EdgeoodError(f"cannot read {path} ({exc.__class__.__name__}); pass a valid "
                           ".npy/.npz array") from None


def _stack_images(images: Sequence[np.ndarray], name: str):
    """One uint8 array when all images share a shape, else a list (each one is resized)."""
    if len({im.shape for im in images}) == 1:
        return _check_array(np.stack(images), name)
    for i, im in enumerate(images):
        if im.dtype != np.uint8:
            raise EdgeoodError(f"{name}[{i}] is {im.dtype}; images of different sizes must be uint8")
    return list(images)


def jigsaw(x: np.ndarray, rng: np.random.Generator, fill: np.ndarray) -> np.ndarray:
    """Jigsaw pseudo-OOD images (FeatureNorm): the 3 x 3 grid of tiles of side floor(S/3) is
    shuffled with a uniformly random permutation; the remaining border is a black pixel.

    Works on normalised N x C x H x W arrays with fill = the normalised black pixel, which equals
    jigsawing in pixel space and then normalising (the normalisation is per-channel affine).
    Non-square images use floor(H/3) x floor(W/3) tiles.
    """
    n, c, h, w = x.shape
    th, tw = h // 3, w // 3
    out = np.empty_like(x)
    out[:] = np.asarray(fill, x.dtype).reshape(1, c, 1, 1)
    for i in range(n):
        perm = rng.permutation(9)
        for dst, src in enumerate(perm):
            dr, dc, sr, sc = divmod(dst, 3) + divmod(int(src), 3)
            out[i, :, dr * th:(dr + 1) * th, dc * tw:(dc + 1) * tw] = \
                x[i, :, sr * th:(sr + 1) * th, sc * tw:(sc + 1) * tw]
    return out
