"""Export recipes: one TOML per backbone (input size, mean/std, taps, default methods and
hyperparameters). Looked up by name in export_recipes/ or given as a path."""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeood.errors import EdgeoodError, did_you_mean


@dataclass
class Recipe:
    name: str
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
    dirs.append(Path(__file__).resolve().parent.parent / "export_recipes")
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
    methods = dict(data.get("methods", {}))
    default = methods.pop("default", [])
    return Recipe(name=data.get("name", path.stem), input=data.get("input", {}),
                  taps=data.get("taps", {}), methods=list(default), params=methods)
