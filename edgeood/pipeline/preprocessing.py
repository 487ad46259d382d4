"""Where an export's preprocessing comes from, and the classifier's sanity check.

mean / std are resolved per key, first found wins:

1. the caller's options (`mean`/`std`/`scale`, `--mean`/`--std`/`--scale`);
2. the recipe's [input];
3. the model: a normalisation layer at the graph input (then the host only scales the pixels),
   else mean/std in the ONNX metadata_props, else a torch module's own attributes;
4. the default: ImageNet's for 3 channels, 0.5 otherwise (printed with a hint).

Values are kept in Preprocess's units (after pixel / 255). `scale` 255 says the option values
(and the model) use raw 0-255 pixels: they are divided by 255. Values read from a model are
taken as 0-255 units when one of them is above 1.

The sanity check (`classifier_check`) reuses the logits calibration already computed on the ID
images: the mean max-softmax, the accuracy when labels exist, and a warning when they look like
chance, which is the usual sign of a wrong mean/std.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgeood.errors import EdgeoodError
from edgeood.pipeline.recipes import check_channels

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
SCALES = (1.0, 255.0)
SANITY_CONFIDENCE = 0.999  # one-sided: a warning when chance is not ruled out at this level


@dataclass
class Found:
    """mean/std (either may be None) from one place, with the words that say where."""

    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    source: str = ""
    notes: dict[str, Any] = field(default_factory=dict)


def parse_values(value, what: str, example: str) -> tuple[float, ...] | None:
    """Floats from a number, a sequence (or tensor), JSON, or comma/space-separated text."""
    if value is None:
        return None
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    try:
        if isinstance(value, (bytes, str)):
            text = value.decode() if isinstance(value, bytes) else value
            text = text.strip().strip("[]()")
            vals = [float(v) for v in re.split(r"[,\s]+", text) if v]
        else:
            vals = [float(v) for v in np.asarray(value, dtype=np.float64).reshape(-1)]
    except (TypeError, ValueError):
        vals = []
    if not vals or not all(math.isfinite(v) for v in vals):
        raise EdgeoodError(f"{what} {value!r} must be numbers, one per channel or one for all "
                           f"(e.g. {example})")
    return tuple(vals)


def _fit_channels(vals: tuple[float, ...], channels: int) -> tuple[float, ...] | None:
    if len(vals) == 1:
        return vals * channels
    return vals if len(vals) == channels else None


def _model_units(mean, std) -> tuple:
    """Model-supplied values in 0-255 units (any above 1) brought to Preprocess's 0-1 units."""
    vals = [abs(v) for v in (mean or ()) + (std or ())]
    if vals and max(vals) > 1.0:
        return (tuple(v / 255.0 for v in mean) if mean else None,
                tuple(v / 255.0 for v in std) if std else None, 255)
    return mean, std, 1


# --- ONNX metadata_props ----------------------------------------------------------------------
def _key_kind(key: str) -> str | None:
    k = re.sub(r"[^a-z0-9]+", "_", key.lower()).strip("_")
    if k == "mean" or k.endswith("_mean"):
        return "mean"
    if k in ("std", "stddev") or k.endswith(("_std", "_stddev")):
        return "std"
    return None


def from_metadata_props(props: dict[str, str], channels: int) -> Found | None:
    """mean/std written by an exporter into the model's metadata_props: keys such as mean/std,
    norm_mean/norm_std, image_mean/image_std, pixel_mean/pixel_std (any case), or a JSON
    object holding mean and std; JSON or comma/space-separated values."""
    got: dict[str, tuple[float, ...]] = {}
    keys: dict[str, str] = {}
    for key, value in props.items():
        kind = _key_kind(key)
        candidates = []
        if kind:
            candidates.append((kind, value, key))
        else:
            try:
                obj = json.loads(value)
            except (TypeError, ValueError):
                obj = None
            if isinstance(obj, dict):
                for k2, v2 in obj.items():
                    kind2 = _key_kind(str(k2))
                    if kind2:
                        candidates.append((kind2, json.dumps(v2), f"{key}.{k2}"))
        for kind, raw, where in candidates:
            if kind in got:
                continue
            try:
                vals = parse_values(raw, where, "0.5,0.5,0.5")
            except EdgeoodError:
                continue
            fitted = _fit_channels(vals, channels)
            if fitted is not None:
                got[kind], keys[kind] = fitted, where
    if not got:
        return None
    mean, std, units = _model_units(got.get("mean"), got.get("std"))
    names = ", ".join(keys[k] for k in ("mean", "std") if k in keys)
    return Found(mean, std, f"model metadata ({names})",
                 {"keys": [keys[k] for k in ("mean", "std") if k in keys], "units": units})


# --- a normalisation layer at the graph input -------------------------------------------------
def from_graph(graph, channels: int) -> Found | None:
    """The model normalises itself when its input is consumed first by Sub and/or Div/Mul with
    per-channel (or scalar) constants: then the host only scales the pixels (mean 0, std 1).
    The layer expects raw 0-255 pixels when a Sub constant is above 1 in magnitude, or, with no
    Sub, a Div constant is above 1 or a Mul constant below 1 (x / 255, x * 0.0039)."""
    import onnx_graphsurgeon as gs
    tensor, chain = graph.inputs[0], []
    while len(chain) < 4:
        users = [n for n in graph.nodes if any(t is tensor for t in n.inputs)]
        if len(users) != 1 or users[0].op not in ("Sub", "Div", "Mul"):
            break
        node = users[0]
        if len(node.inputs) != 2 or node.inputs[0] is not tensor and node.op != "Mul":
            break
        const = next((t for t in node.inputs if t is not tensor), None)
        if not isinstance(const, gs.Constant):
            break
        values = np.asarray(const.values, np.float64)
        shape = tuple(values.shape)
        per_channel = values.size == 1 or (  # a 1-D [C] would broadcast over W, not C
            values.size == channels and shape in ((1, channels, 1, 1), (channels, 1, 1)))
        if not per_channel:
            break
        chain.append((node.op, values.reshape(-1)))
        tensor = node.outputs[0]
    if not chain:
        return None
    ops = [op for op, _ in chain]
    subs = [v for op, v in chain if op == "Sub"]
    if subs:
        raw = any(np.abs(v).max() > 1.0 for v in subs)
    else:
        raw = any((op == "Div" and v.min() > 1.0) or (op == "Mul" and v.max() < 1.0)
                  for op, v in chain)
    units = 255 if raw else 1
    std = (1.0 / 255.0,) * channels if raw else (1.0,) * channels
    scaling = "raw 0-255 pixels" if raw else "pixel / 255"
    return Found((0.0,) * channels, std,
                 f"model graph: it normalises its input itself ({', '.join(ops)} at the input), "
                 f"so the host feeds {scaling}",
                 {"layer": ops, "units": units})


# --- a torch module's attributes --------------------------------------------------------------
_PAIRS = (("mean", "std"), ("image_mean", "image_std"), ("pixel_mean", "pixel_std"),
          ("norm_mean", "norm_std"))
_CFGS = ("pretrained_cfg", "default_cfg", "config", "data_config")


def _lookup(obj, name):
    if isinstance(obj, dict):
        return obj.get(name)
    try:
        return getattr(obj, name, None)
    except Exception:  # noqa: BLE001 - a property that raises: nothing there
        return None


def from_module(module, channels: int) -> Found | None:
    """mean/std a module carries: its own attributes (mean/std, image_mean/image_std,
    pixel_mean/pixel_std; buffers or tuples), or a timm pretrained_cfg/default_cfg or a
    Hugging Face config (image_mean/image_std) attached to it. Nothing is downloaded."""
    places = [("", module)] + [(f"{c}.", _lookup(module, c)) for c in _CFGS]
    for prefix, obj in places:
        if obj is None:
            continue
        for m_name, s_name in _PAIRS:
            m_raw, s_raw = _lookup(obj, m_name), _lookup(obj, s_name)
            if m_raw is None or s_raw is None or callable(m_raw) or callable(s_raw):
                continue
            try:
                mean = _fit_channels(parse_values(m_raw, m_name, "0.5"), channels)
                std = _fit_channels(parse_values(s_raw, s_name, "0.5"), channels)
            except EdgeoodError:
                continue
            if mean is None or std is None:
                continue
            mean, std, units = _model_units(mean, std)
            return Found(mean, std, f"module attributes ({prefix}{m_name}, {prefix}{s_name})",
                         {"attributes": [prefix + m_name, prefix + s_name], "units": units})
    return None


# --- resolving --------------------------------------------------------------------------------
def resolve(channels: int, *, mean=None, std=None, scale=None, recipe=None,
            model: list[Found] | None = None, spell=lambda n: n) -> tuple[tuple, tuple, dict]:
    """(mean, std, entry): mean/std in 0-1 units and the metadata's account of where they came
    from ({"source": ..., ...}), by the precedence of the module docstring."""
    rec_in = recipe.input if recipe else {}
    rec_name = f"recipe {recipe.name}" if recipe else "recipe"
    if scale is not None and float(scale) not in SCALES:
        option = spell("scale")  # not a method name: the pixel scale
        raise EdgeoodError(f"{option} {scale} must be 1 (the model takes pixel / 255) "
                           f"or 255 (raw 0-255 pixels); {spell('mean')}/{spell('std')} are in "
                           "the same units")
    units = float(scale) if scale is not None else 1.0
    given: dict[str, tuple[float, ...] | None] = {}
    for key, value, example in (("mean", mean, "0.485,0.456,0.406"),
                                ("std", std, "0.229,0.224,0.225")):
        vals = parse_values(value, spell(key), f"{spell(key)} {example}"
                            if spell(key).startswith("--") else f"{key}=({example})")
        if vals is not None:
            check_channels(list(vals), channels, f"{spell(key)} {list(vals)}")
            vals = tuple(v / units for v in _fit_channels(vals, channels))
        elif scale is not None:  # --scale alone: no normalisation beyond the pixel scaling
            vals = ((0.0,) if key == "mean" else (1.0 / units,)) * channels
        given[key] = vals
    if given["std"] is not None and min(given["std"]) <= 0:
        raise EdgeoodError(f"{spell('std')} must be > 0 (it divides the pixels)")
    options = Found(given["mean"], given["std"], _option_words(mean, std, scale, spell))
    from_recipe = Found(*(tuple(rec_in[k]) if k in rec_in else None for k in ("mean", "std")),
                        source=rec_name)
    if channels == 3:
        default = Found(IMAGENET_MEAN, IMAGENET_STD,
                        f"default ImageNet: pass {spell('mean')}/{spell('std')} if your model "
                        "was trained otherwise")
    else:
        default = Found((0.5,) * channels, (0.5,) * channels,
                        f"default 0.5: pass {spell('mean')}/{spell('std')} if your model was "
                        "trained otherwise")
    levels = [options, from_recipe, *(model or []), default]
    picked: dict[str, tuple[tuple[float, ...], Found]] = {}
    for key in ("mean", "std"):
        for level in levels:
            vals = getattr(level, key)
            if vals is not None:
                picked[key] = (_fit_channels(tuple(float(v) for v in vals), channels) or vals,
                               level)
                break
    m_level, s_level = picked["mean"][1], picked["std"][1]
    if m_level is s_level:
        words = m_level.source
    else:
        words = f"mean from {m_level.source}; std from {s_level.source}"
    entry: dict[str, Any] = {"source": words}
    for level in (m_level, s_level):
        for k, v in level.notes.items():
            entry.setdefault(k, v)
    if scale is not None and (m_level is options or s_level is options):
        entry["units"] = int(units)  # the options' units (the stored mean/std are 0-1 units)
    return picked["mean"][0], picked["std"][0], entry


def _option_words(mean, std, scale, spell) -> str:
    given = (("mean", mean), ("std", std),
             ("scale", scale))  # not a method name: the pixel scale
    names = [spell(n) for n, v in given if v is not None]
    return "/".join(names) if names else ""


def summary(pre: dict) -> str:
    """The export summary's line: the preprocessing used and where it came from."""
    fmt = lambda vals: ",".join(f"{v:.6g}" for v in vals)  # noqa: E731
    h, w = pre["size"]
    size = f"resize {w}x{h}" if pre.get("resize", True) else f"{w}x{h} images (no resize)"
    source = pre.get("source") or "not recorded"
    return (f"preprocessing: mean {fmt(pre['mean'])} std {fmt(pre['std'])} (after pixel / 255) "
            f"{size} {pre.get('color', 'RGB')} (from: {source})")


# --- the classifier's sanity check ------------------------------------------------------------
def _binomial_sf(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p), summed in log space (exact)."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    if p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    i = np.arange(k, n + 1, dtype=np.float64)
    logc = (math.lgamma(n + 1) - np.array([math.lgamma(v + 1) for v in i])
            - np.array([math.lgamma(n - v + 1) for v in i]))
    terms = logc + i * math.log(p) + (n - i) * math.log1p(-p)
    top = terms.max()
    return float(min(1.0, math.exp(top) * np.exp(terms - top).sum()))


def classifier_check(logits: np.ndarray, labels: np.ndarray | None,
                     labels_from: str = "labels") -> dict[str, Any]:
    """The classifier on the calibration images: mean max-softmax, accuracy with labels, and
    whether that looks like chance.

    With n labels: chance is the accuracy of always answering the commonest label (at least
    1/C). The check fails when the accuracy is not above chance at 99.9% confidence: the exact
    one-sided binomial test P(X >= correct | n, chance) > 0.001, so the margin shrinks with n.
    Without labels the max-softmax stands in for them: a calibrated classifier's expected
    accuracy is its mean max-softmax, so the same test runs on round(sum of max-softmax) expected
    hits against 1/C (it fires on a near-uniform softmax, what a classifier that sees no signal
    tends to give); and it fails when every image gets the same class.
    """
    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=1, keepdims=True)
    prob = np.exp(z)
    prob /= prob.sum(axis=1, keepdims=True)
    msp = prob.max(axis=1)
    n, classes = prob.shape
    pred = prob.argmax(axis=1)
    out: dict[str, Any] = {"count": int(n), "classes": int(classes),
                           "mean_max_softmax": float(msp.mean())}
    reasons = []
    if classes < 2 or n < 1:  # one output: no softmax to judge
        out["suspicious"] = False
        return out
    y = _class_indices(labels, n, classes)
    if labels is not None and y is None:
        out["labels_ignored"] = (f"the labels of {labels_from} are not class indices "
                                 f"0-{classes - 1}")
    if y is not None:
        correct = int((pred == y).sum())
        share = np.bincount(y, minlength=classes).max() / n
        chance = max(1.0 / classes, float(share))
        p_value = _binomial_sf(correct, n, chance)
        out.update(accuracy=correct / n, labels=labels_from, chance_accuracy=chance,
                   chance_p_value=p_value)
        if p_value > 1.0 - SANITY_CONFIDENCE:
            reasons.append(f"accuracy {100 * correct / n:.1f}% on {n} labelled images is not "
                           f"above chance ({100 * chance:.1f}%) at "
                           f"{100 * SANITY_CONFIDENCE:.1f}% confidence")
    else:
        expected = round(float(msp.sum()))  # a calibrated classifier's expected hits
        p_value = _binomial_sf(expected, n, 1.0 / classes)
        out.update(chance_accuracy=1.0 / classes, chance_p_value=p_value)
        if p_value > 1.0 - SANITY_CONFIDENCE:
            reasons.append(f"the mean max-softmax {msp.mean():.3f} on {n} unlabelled images "
                           f"is not above chance (1/{classes}) at "
                           f"{100 * SANITY_CONFIDENCE:.1f}% confidence")
        if classes > 1 and n > 1 and len(np.unique(pred)) == 1:
            reasons.append(f"every one of the {n} images is classified as class {int(pred[0])} "
                           "(expected only if the ID images are all of that class)")
    out["suspicious"] = bool(reasons)
    if reasons:
        out["reasons"] = reasons
    return out


def _class_indices(labels, n: int, classes: int) -> np.ndarray | None:
    """The labels as the model's class indices, or None where they cannot be (not integers,
    out of range, not one per image)."""
    if labels is None or len(labels) != n:
        return None
    y = np.asarray(labels)
    if y.dtype.kind not in "iu" or y.ndim != 1 or y.min() < 0 or y.max() >= classes:
        return None
    return y.astype(np.int64)


def classifier_line(check: dict) -> str:
    """'classifier on the calibration images: mean max-softmax 0.91, accuracy 97.2% (labels
    from class folders)'."""
    text = f"classifier on the calibration images: mean max-softmax " \
           f"{check['mean_max_softmax']:.3f}"
    if "accuracy" in check:
        text += f", accuracy {100 * check['accuracy']:.1f}% (labels from {check['labels']})"
    elif check.get("labels_ignored"):
        text += f" (labels not used: {check['labels_ignored']}; accuracy unknown)"
    else:
        text += " (no labels: accuracy unknown)"
    return text


def classifier_warning(check: dict, spell=lambda n: n) -> str:
    options = ("mean", "std", "scale", "recipe")  # not a method name: the pixel scale
    names = "/".join(spell(n) for n in options)
    return (f"the classifier looks like chance on the calibration images ("
            f"{'; '.join(check.get('reasons', []))}): the preprocessing is probably wrong "
            f"(or the labels do not follow the model's class order); pass the model's own "
            f"{names} (the thresholds were fitted on what it saw)")
