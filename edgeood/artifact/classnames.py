"""Class names of a detector: read from a names file, from the ONNX model's metadata_props or
from the class sub-folders of the ID data, checked against the number of classes, and kept in
the metadata as `class_names` (index i = the name of logit i).

A names value may be a JSON list or dict ({"0": "cat", ...}), a Python literal (Ultralytics
writes `{0: 'cat', 1: 'dog'}`), one name per line, or comma-separated.
"""
from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

from edgeood.errors import EdgeoodError

MODEL_KEYS = ("names", "classes", "labels")  # metadata_props keys read, in this order
KEY = "class_names"                            # the metadata key


def parse_names(text: str, where: str) -> list[str]:
    """A list of names from text in any of the accepted forms; one line naming `where` when
    it is none of them."""
    text = text.strip()
    value: Any = None
    if text[:1] in "[{":
        for parse in (json.loads, ast.literal_eval):
            try:
                value = parse(text)
                break
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                continue
        if value is None:
            raise EdgeoodError(f"{where} starts like a JSON list or dict but does not parse; "
                               "write a JSON list of names, or one name per line")
    elif "\n" in text:
        value = [line.strip() for line in text.splitlines() if line.strip()]
    else:
        value = [part.strip() for part in text.split(",")]
    return as_names(value, where)


def as_names(value: Any, where: str) -> list[str]:
    if isinstance(value, dict):
        try:
            index = {int(k): v for k, v in value.items()}
        except (TypeError, ValueError):
            raise EdgeoodError(f"{where}: a names dict needs class indices as keys "
                               "(0, 1, ...)") from None
        if sorted(index) != list(range(len(index))):
            raise EdgeoodError(f"{where}: the class indices of its names dict are not 0..."
                               f"{len(index) - 1}; give one name per class index")
        value = [index[i] for i in range(len(index))]
    if not isinstance(value, (list, tuple)) or not value:
        raise EdgeoodError(f"{where} holds no list of class names; write a JSON list, or one "
                           "name per line")
    names = [str(v).strip() for v in value]
    if any(not n for n in names):
        raise EdgeoodError(f"{where}: class {names.index('')} has an empty name; give every "
                           "class a name")
    return names


def read_names_file(path, where: str) -> list[str]:
    """The names in a file: JSON (list or dict) or one name per line."""
    p = Path(path)
    if not p.is_file():
        raise EdgeoodError(f"{where} {p}: no such file; pass a text file with one class name "
                           "per line, or a JSON list")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise EdgeoodError(f"{where} {p}: cannot read it ({type(exc).__name__}); pass a UTF-8 "
                           "text file") from None
    if not text.strip():
        raise EdgeoodError(f"{where} {p} is empty; write one class name per line")
    return parse_names(text, f"{where} {p}")


def model_names(props: dict[str, str]) -> tuple[str, list[str]] | None:
    """(key, names) from an ONNX model's metadata_props, or None when it has none."""
    lower = {k.lower(): (k, v) for k, v in props.items()}
    for key in MODEL_KEYS:
        if key in lower and lower[key][1].strip():
            k, v = lower[key]
            return k, parse_names(v, f"the model's metadata '{k}'")
    return None


def check_count(names: list[str], num_classes: int, where: str) -> list[str]:
    if len(names) != num_classes:
        raise EdgeoodError(f"{where} gives {len(names)} class names but the model has "
                           f"{num_classes} classes; give exactly one name per class")
    return names
