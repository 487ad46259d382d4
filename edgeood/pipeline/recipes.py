"""Export recipes: one TOML per backbone (input size, mean/std, taps, default methods and
hyperparameters). Looked up by name in export_recipes/ or given as a path."""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeood.errors import EdgeoodError, did_you_mean

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10 (JetPack 6)
    import tomli as tomllib

# The keys a recipe may hold, section by section (method sections: the method's parameters).
SECTIONS: dict[str, dict[str, str]] = {
    "input": {"size": "S or [H, W]", "channels": "an integer >= 1",
              "mean": "one number per channel", "std": "one number per channel",
              "color": '"RGB", "BGR" or "GRAY"', "resize": "true or false"},
    "taps": {"logits": "a tensor name", "penultimate": "a tensor name",
             "blocks": "a list of tensor names"},
}
TOP_LEVEL = ("name", "input", "taps", "methods")


@dataclass
class Recipe:
    name: str
    path: Path | None = None
    input: dict[str, Any] = field(default_factory=dict)
    taps: dict[str, Any] = field(default_factory=dict)
    methods: list[str] = field(default_factory=list)
    params: dict[str, dict[str, Any]] = field(default_factory=dict)


def recipe_dirs() -> list[Path]:
    """Where named recipes live: the installed package data, then the source tree."""
    dirs = []
    try:
        from importlib.resources import files
        dirs.append(Path(str(files("edgeood.export_recipes"))))
    except (ModuleNotFoundError, TypeError):
        pass
    dirs.append(Path(__file__).resolve().parents[2] / "export_recipes")  # the source tree
    return [d for d in dirs if d.is_dir()]


def available() -> list[str]:
    return sorted({p.stem for d in recipe_dirs() for p in d.glob("*.toml")})


def load_recipe(spec: str | Path | Recipe | None) -> Recipe | None:
    if spec is None or isinstance(spec, Recipe):
        return spec
    path = Path(spec)
    if not path.suffix:
        found = [d / f"{spec}.toml" for d in recipe_dirs() if (d / f"{spec}.toml").is_file()]
        if not found:
            raise EdgeoodError(f"unknown recipe '{spec}'{did_you_mean(str(spec), available())}; "
                               f"available: {', '.join(available())}, or pass a .toml path")
        path = found[0]
    if not path.is_file():
        raise EdgeoodError(f"recipe {path} does not exist; pass a recipe name or a .toml path")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise EdgeoodError(f"recipe {path} is not valid TOML ({exc})") from None
    return check_recipe(data, path)


def _number_list(value) -> bool:
    return isinstance(value, list) and bool(value) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)


def check_recipe(data: dict, path: Path) -> Recipe:
    """The parsed TOML checked key by key: an unknown key or a wrong shape is one line naming
    the file and the key (with a did-you-mean), not a silent default or a numpy error."""
    def bad(key: str, problem: str):
        return EdgeoodError(f"recipe {path}: {key} {problem}")

    for key in data:
        if key not in TOP_LEVEL:
            raise bad(key, f"is not a recipe key{did_you_mean(key, TOP_LEVEL)}; a recipe holds "
                      f"{', '.join(TOP_LEVEL)}")
    for section, keys in SECTIONS.items():
        table = data.get(section, {})
        if not isinstance(table, dict):
            raise bad(section, "must be a [section]")
        for key in table:
            if key not in keys:
                raise bad(f"[{section}] {key}", f"is not a key of [{section}]"
                          f"{did_you_mean(key, keys)}; it takes {', '.join(keys)}")
    rin = data.get("input", {})
    channels = rin.get("channels")
    if channels is not None and (not isinstance(channels, int) or isinstance(channels, bool)
                                 or channels < 1):
        raise bad("[input] channels", f"= {channels!r} must be {SECTIONS['input']['channels']}")
    size = rin.get("size")
    if size is not None:
        vals = [size] if isinstance(size, int) else size
        if not (isinstance(vals, list) and len(vals) in (1, 2) and
                all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in vals)):
            raise bad("[input] size", f"= {size!r} must be {SECTIONS['input']['size']} "
                      "(positive integers)")
        rin["size"] = [vals[0], vals[-1]]
    for key in ("mean", "std"):
        if key in rin:
            if not _number_list(rin[key]):
                raise bad(f"[input] {key}", f"= {rin[key]!r} must be a list of numbers, "
                          f"{SECTIONS['input'][key]}")
            if channels is not None:
                check_channels(rin[key], channels, f"recipe {path}: [input] {key}")
    if "resize" in rin and not isinstance(rin["resize"], bool):
        raise bad("[input] resize", f"= {rin['resize']!r} must be true or false")
    methods = dict(data.get("methods", {}))
    default = methods.pop("default", [])
    if not isinstance(default, list) or not all(isinstance(m, str) for m in default):
        raise bad("[methods] default", "must be a list of method names")
    from edgeood.methods.registry import method_class

    def method(name: str, key: str):
        try:
            return method_class(name)
        except EdgeoodError as exc:  # its text: unknown method, did-you-mean, available
            raise bad(key, f"names no method: {exc}") from None

    for name in default:
        method(name, "[methods] default")
    for name, params in methods.items():
        cls = method(name, f"[methods.{name}]")
        if not isinstance(params, dict):
            raise bad(f"[methods] {name}", "must be a [methods.NAME] section of parameters")
        accepted = cls.accepted_params()
        for key in params:
            if key not in accepted:
                raise bad(f"[methods.{name}] {key}", f"is not a parameter of {name}"
                          f"{did_you_mean(key, accepted)}; its parameters: "
                          f"{', '.join(accepted) or 'none'}")
    return Recipe(name=data.get("name", path.stem), path=path, input=rin,
                  taps=data.get("taps", {}), methods=list(default), params=methods)


def check_channels(values, channels: int, what: str) -> None:
    """mean/std: one value per channel (or one for all); one line instead of numpy's
    broadcast error."""
    n = len(values) if isinstance(values, (list, tuple)) else 1
    if n not in (1, channels):
        raise EdgeoodError(f"{what} has {n} values but the model takes {channels} channel"
                           f"{'s' if channels != 1 else ''}; give {channels} (one per channel) "
                           "or one for all")
