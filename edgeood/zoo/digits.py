"""The digits benchmark: sklearn's 1797 real 8 x 8 handwritten digits.

ID = classes 0-5 (seeded 60/20/20 train/val/test split); near-OOD = classes 6-9; far-OOD =
patches of scikit-image's bundled photographs and textures reduced to the digits' format
(8 x 8, grayscale, 17 grey levels), plus uniform noise. A small CNN (conv + batch norm + ReLU,
residual Adds, a MaxPool, a strided conv, global average pooling, a linear head) was trained
once with `train_cnn(load_data(0), seed=0)` (torch 2.13.0, CPU), exported with `export_module`
and ships with the package (`data/digits_cnn.onnx`, checked against `SHIPPED_SHA256`): seeded
CPU training is not bit-reproducible across machines (kernels differ), so a retrained model
(`model_path(retrain=True)`, `edgeood demo --retrain`) gives numbers other than the README's.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeood.artifact.files import file_sha256
from edgeood.data import Preprocess
from edgeood.errors import EdgeoodError
from edgeood.zoo import cache_dir, save_cached

ID_CLASSES = 6
PREPROCESS = Preprocess(size=(8, 8), channels=1, mean=(0.3,), std=(0.4,), resize=False)
PHOTOS = ["astronaut", "brick", "camera", "chelsea", "coffee", "coins", "grass", "gravel",
          "moon", "page", "text", "rocket", "hubble_deep_field", "retina", "motorcycle_left",
          "horse", "clock_motion", "ihc", "cell"]
TRAIN_VERSION = "digits-cnn-v2"
SHIPPED = Path(__file__).parent / "data" / "digits_cnn.onnx"
# sha256 of SHIPPED: train_cnn(load_data(0), seed=0), torch 2.13.0+cpu, export_module(m, (1, 8, 8))
SHIPPED_SHA256 = "cb379dedf9aaefe14552b44a0455a40e32fcb0eed9b718fb71e825a60fc7f35f"
# the same CNN fine-tuned with the intermediate-layer energy regulariser (edgeood.train):
# samples/train_layer_energy.py's fine_tune(shipped weights, epochs 8, m_in -10, m_out -4,
# weight 0.1, lr 1e-4, seed 0), torch 2.13.0+cpu, export_module(m, (1, 8, 8))
REGULARISED = Path(__file__).parent / "data" / "digits_cnn_layer_energy.onnx"  # not a method name
REGULARISED_SHA256 = "86aa29e6aced24bcedd17ad13f695474290fcb1c6ed60f4943cb065585657d03"


@dataclass
class DigitsData:
    train: tuple[np.ndarray, np.ndarray]
    val: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]
    near: np.ndarray
    far: np.ndarray


def _to_uint8(levels: np.ndarray) -> np.ndarray:
    """0..16 grey levels -> uint8 N x 8 x 8 x 1."""
    return np.round(np.asarray(levels, np.float64) * (255.0 / 16.0)).astype(np.uint8)[..., None]


def _photo_dir() -> Path:
    import skimage
    return Path(skimage.__file__).parent / "data"


def far_ood(n_patches: int = 300, n_noise: int = 100, seed: int = 0) -> np.ndarray:
    """Photo/texture patches (16-64 px crops, box-averaged to 8 x 8, 17 levels) and noise."""
    from PIL import Image
    rng = np.random.default_rng(seed)
    files = {p.stem: p for p in _photo_dir().iterdir() if p.suffix in (".png", ".jpg")}
    photos = [np.asarray(Image.open(files[n]).convert("L"), np.float64)
              for n in PHOTOS if n in files]
    out = []
    for i in range(n_patches):
        img = photos[i % len(photos)]
        side = int(rng.integers(16, 65))
        r = int(rng.integers(0, img.shape[0] - side + 1))
        c = int(rng.integers(0, img.shape[1] - side + 1))
        crop = Image.fromarray(img[r:r + side, c:c + side].astype(np.uint8))
        small = np.asarray(crop.resize((8, 8), Image.BOX), np.float64)
        out.append(np.round(small / 255.0 * 16.0))
    noise = rng.integers(0, 17, size=(n_noise, 8, 8))
    return _to_uint8(np.concatenate([np.stack(out), noise]))


def load_data(seed: int = 0) -> DigitsData:
    from sklearn.datasets import load_digits
    d = load_digits()
    images, labels = _to_uint8(d.images), d.target
    rng = np.random.default_rng(seed)
    parts: tuple[list, list, list] = ([], [], [])
    for c in range(ID_CLASSES):  # stratified: every split has the same class mix
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_tr, n_va = int(round(0.6 * len(idx))), int(round(0.2 * len(idx)))
        for part, chunk in zip(parts, (idx[:n_tr], idx[n_tr:n_tr + n_va], idx[n_tr + n_va:])):
            part.extend(chunk.tolist())
    parts = tuple(np.sort(np.array(p)) for p in parts)
    split = [(images[p], labels[p]) for p in parts]
    return DigitsData(*split, near=images[labels >= ID_CLASSES], far=far_ood(seed=seed))


def build_cnn():
    """The digits CNN as a torch module (torch imported here only)."""
    import torch
    from torch import nn

    def cbr(cin, cout, stride=1):
        return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
                             nn.BatchNorm2d(cout), nn.ReLU())

    class Residual(nn.Module):
        def __init__(self, ch):
            super().__init__()
            self.body = nn.Sequential(cbr(ch, ch), nn.Conv2d(ch, ch, 3, 1, 1, bias=False),
                                      nn.BatchNorm2d(ch))
            self.relu = nn.ReLU()

        def forward(self, x):
            return self.relu(x + self.body(x))

    class DigitsCNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(
                cbr(1, 32), Residual(32),          # 8 x 8
                nn.MaxPool2d(2), cbr(32, 64), Residual(64),  # 4 x 4
                cbr(64, 128, stride=2), Residual(128),       # 2 x 2
            )
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(128, ID_CLASSES)

        def forward(self, x):
            return self.fc(torch.flatten(self.pool(self.features(x)), 1))

    return DigitsCNN()


def train_cnn(data: DigitsData, seed: int = 0, epochs: int = 40):
    """Seeded CPU training (Adam, light shift augmentation); returns the module in eval mode."""
    import torch
    torch.manual_seed(seed)
    model = build_cnn()
    x = torch.from_numpy(PREPROCESS.normalize(data.train[0]))
    y = torch.from_numpy(data.train[1]).long()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), 64):
            b = perm[i:i + 64]
            xb = x[b]
            shift = torch.randint(-1, 2, (2,), generator=gen).tolist()
            xb = torch.roll(xb, shifts=shift, dims=(2, 3))
            loss = torch.nn.functional.cross_entropy(model(xb), y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    return model.eval()


def shipped_model(regularised: bool = False) -> Path:
    """The digits CNN shipped with the package (or its layer-energy-regularised fine-tune),
    after checking its sha256 (no torch needed)."""
    path, sha = (REGULARISED, REGULARISED_SHA256) if regularised else (SHIPPED, SHIPPED_SHA256)
    try:
        digest = file_sha256(path)
    except OSError:
        digest = None
    if digest != sha:
        what = "is missing" if digest is None else "does not match its sha256"
        raise EdgeoodError(f"the edgeood package is damaged: {path} {what}; reinstall edgeood "
                           "(pip install --force-reinstall edgeood)")
    return path


def model_path(seed: int = 0, data: DigitsData | None = None, retrain: bool = False) -> Path:
    """The digits CNN as ONNX: the shipped model (seed 0), or with retrain=True (or another
    seed) one trained here with train_cnn and cached; seed and data are used only for that."""
    if not retrain and seed == 0:
        return shipped_model()
    import torch
    key = hashlib.sha256(f"{TRAIN_VERSION}-{seed}-{torch.__version__}".encode()).hexdigest()[:12]
    path = cache_dir() / f"digits_cnn_{key}.onnx"
    if path.is_file():
        return path
    from edgeood.graph.from_torch import export_module
    model = train_cnn(data or load_data(seed), seed)
    proto, _ = export_module(model, (1, 8, 8))
    return save_cached(proto, path)
